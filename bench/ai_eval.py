"""The AI salesperson's evaluation: evals/cases.jsonl through the real pipeline, scored.

Each case is a company with its own small knowledge base and a lead's conversation
(evals/README.md describes the format). For every case this script drives SHVYA's HTTP API
in process (FastAPI's TestClient, so every request passes authentication, validation and the
unit of work like a real one): it creates the company and an admin key, sets the company's
settings (PATCH /company), uploads the knowledge base (POST /kb/documents), creates the lead
and imports its earlier history (POST /leads/{id}/history), then posts each inbound message
(POST /inbound-message, with the message's own received_at) and runs the job worker until
every job is done, exactly as `shvya serve` would. Bump-ups and summaries are requested with
POST /leads/{id}/bumpup and /summary and read back with GET /jobs/{id} and GET /leads/{id}.

The clock is the messages' own: before each message the app's clock is set to its
received_at, so quiet periods, relative dates ("next month") and bump-up pacing behave as
they would have on that day. Quiet periods are set to 0 and a burst (messages seconds apart)
is posted whole before the worker runs, so coalescing is exercised too.

It prints the pass rate of each check beside the target the offline provider must meet, the
cases and checks passed per category and per language, and ai.engage's own overhead (the
job's time minus the provider's) against an anchor measured in the same run: the latency of
POST /inbound-message, the request that enqueues the job. --json writes every figure (and
every failure) to a file, so two runs (before and after a change) can be compared.

    .venv/bin/python bench/ai_eval.py                      # offline provider (the default)
    .venv/bin/python bench/ai_eval.py --provider openai --model gpt-4o-mini
    .venv/bin/python bench/ai_eval.py --only hinglish -v   # some cases, with every failure
    .venv/bin/python bench/ai_eval.py --only tone,summary --json /tmp/after.json
    .venv/bin/python bench/ai_eval.py --compare /tmp/before.json /tmp/after.json

With --provider openai the OpenAI SDK reads OPENAI_API_KEY and OPENAI_BASE_URL, so any
OpenAI-compatible server (llama.cpp, vLLM, Ollama) can be scored; `--provider both` runs the
offline provider and then OpenAI when OPENAI_API_KEY is set (it says so when it is not).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from shvya import onboarding  # noqa: E402
from shvya.ai.figures import ungrounded  # noqa: E402
from shvya.ai.text import NEAR_REPEAT, sentences, similarity, word_count  # noqa: E402
from shvya.ai.understanding import detect_language  # noqa: E402
from shvya.app import create_app  # noqa: E402
from shvya.config import Settings  # noqa: E402
from shvya.db.engine import make_engine  # noqa: E402
from shvya.db.migrate import upgrade_database  # noqa: E402
from shvya.events.models import Event  # noqa: E402
from shvya.handlers import default_handlers  # noqa: E402
from shvya.jobs.engines.embedded import EmbeddedWorker  # noqa: E402
from shvya.tenancy import service as tenancy  # noqa: E402
from shvya.tenancy.models import Role  # noqa: E402

REPLY_PURPOSES = ("reply", "safe_answer", "handoff")
TASKS = ("engage", "extract", "bumpup", "summary")
BURST_SECONDS = 30
CARD_FIELDS = {"sells": "about", "about": "about", "hours": "hours", "contact": "contact"}

# check name -> (target for the offline provider, how it is compared)
TARGETS: dict[str, tuple[float, str]] = {
    "invented numbers (replies with any)": (0.0, "max"),
    "opt-outs honoured": (1.0, "min"),
    "false opt-outs": (0.0, "max"),
    "handoff cases handed off": (0.9, "min"),
    "bump-ups sent: 30-40 words, no near-repeat": (1.0, "min"),
    "summaries of 3-5 sentences": (1.0, "min"),
    "BANT fields right": (0.8, "min"),
    "must-contain facts present": (0.85, "min"),
    "replies in the lead's language": (0.9, "min"),
    # issue 14: a policy question is a question, not a complaint
    "false handoffs": (0.02, "max"),
    # issue 14: an answer addresses the question or says it does not know
    "must-not-contain text absent": (1.0, "min"),
    # issue 14, tone
    "known BANT fields not asked again": (1.0, "min"),
    "closings varied across a conversation": (1.0, "min"),
    "greetings acknowledged": (0.9, "min"),
    "no 'Default' said to a lead": (1.0, "min"),
    # issue 14: a summary reads the whole conversation
    "summaries name what was discussed": (1.0, "min"),
    "summaries don't call stated facts unknown": (1.0, "min"),
}
# Counted, but not a failure of the case: a refusal can be the right answer.
INFORMATIONAL = {"bump-ups refused (reason in -v)"}

# The no_reask check (evals/README.md, "How each expectation is checked"): a question in the
# reply (a sentence with "?") asks for a BANT field when it matches one of these, in any of
# the four languages. Short on purpose: each names the field or the usual way to ask for it.
REASK: dict[str, list[str]] = {
    "budget": [
        r"\bbudget",
        r"\bpresupuesto",
        r"बजट",
        r"how much (?:are|were|would|do|did|can) you\b.{0,25}\b(?:spend|invest|afford)",
        r"cu[aá]nto (?:\w+ )?(?:gastar|invertir)",
        r"kitna (?:kharch|spend|invest)",
        r"कितना खर्च",
    ],
    "authority": [
        r"\bdecision",
        r"\bdecides?\b",
        r"\bsigns? off\b",
        r"\bapprov",
        r"\bdecisi[oó]n",
        r"\bdecid(?:e|en|ir)\b",
        r"\baprueba",
        r"फ़ैसला|फैसला|निर्णय",
        r"\bfaisla\b",
    ],
    "need": [
        r"what (?:are you|you're) looking for",
        r"what do you need",
        r"what (?:problem|challenge)",
        r"\bhoping to (?:solve|buy|get)",
        r"qu[eé] (?:te|le) gustar[ií]a (?:resolver|comprar)",
        r"kis cheez ke liye",
        r"किस चीज़ के लिए|किस चीज के लिए",
        r"qu[eé] (?:est[aá]s?|est[aá]n) buscando",
        r"qu[eé] necesita",
        r"kya chahiye",
        r"kya dhoondh",
        r"क्या चाहिए",
        r"क्या ढूंढ",
    ],
    "timeline": [
        r"\btimeline",
        r"\bby when\b",
        r"\bhow soon\b",
        r"\bwhen (?:do|would|will|are) you\b.{0,20}"
        r"\b(?:want|need|plan|like|hope|expect|start|go live)",
        r"\bstart date\b",
        r"para cu[aá]ndo",
        r"cu[aá]ndo (?:\w+ )?"
        r"(?:quiere|quieres|quieren|necesita|necesitas|necesitan|piensa|planea|empezar|gustar)",
        r"\bkab (?:tak|se|chahiye|start|shuru)",
        r"कब तक|कब से|कब चाहिए|कब शुरू",
    ],
}
# The greet_back check: the reply greets (one of these) or names the lead.
GREETINGS = [
    r"\b(?:hi|hello|hey|welcome|namaste)\b",
    r"\bgood (?:morning|afternoon|evening)\b",
    r"\bnice to (?:meet|hear)",
    r"\bhola\b",
    r"\bbuen[oa]s (?:d[ií]as|tardes|noches)\b",
    r"\bbienvenid",
    r"\bencantad",
    r"\bmucho gusto\b",
    r"नमस्ते|नमस्कार|स्वागत",
]


class MovableClock:
    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = max(self.current, moment)

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@dataclass
class Score:
    """Passes and totals per check, what failed, and each result with its case."""

    passed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[str] = field(default_factory=list)
    # (case id, check, good): for the figures per category and per language
    results: list[tuple[str, str, bool]] = field(default_factory=list)
    counted_bad: set[str] = field(default_factory=set)

    def check(self, name: str, ok: bool, case: str, detail: str = "") -> None:
        self.total[name] += 1
        self.passed[name] += int(ok)
        self.results.append((case, name, ok))
        if not ok:
            self.failures.append(f"{case}: {name}: {detail}")

    def count(self, name: str, hit: bool, case: str, detail: str = "") -> None:
        """A rate of bad things (invented numbers, false opt-outs): hit is the bad one."""
        self.total[name] += 1
        self.passed[name] += int(hit)
        self.counted_bad.add(name)
        self.results.append((case, name, not hit))
        if hit:
            self.failures.append(f"{case}: {name}: {detail}")

    def rate(self, name: str) -> float | None:
        return self.passed[name] / self.total[name] if self.total[name] else None


@dataclass
class Timings:
    engage_overhead_ms: list[float] = field(default_factory=list)
    engage_total_ms: list[float] = field(default_factory=list)
    inbound_ms: list[float] = field(default_factory=list)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def split_sentences(text: str) -> list[str]:
    """Sentences as a reader sees them (the danda ends a Hindi one)."""
    return [s for s in re.split(r"(?<=[.!?।])\s+|\n+", text.strip()) if s.strip()]


def reasked(text: str, fields: list[str]) -> list[str]:
    """The known BANT fields a question in this reply asks for again (REASK)."""
    questions = [s for s in split_sentences(text) if "?" in s or "¿" in s]
    return [
        f"{name}: {question!r}"
        for name in fields
        for question in questions
        if any(re.search(pattern, question, re.IGNORECASE) for pattern in REASK[name])
    ]


def greets(text: str, lead_name: str) -> bool:
    first = lead_name.split()[0] if lead_name.split() else ""
    if first and first.casefold() in text.casefold():
        return True
    return any(re.search(pattern, text, re.IGNORECASE) for pattern in GREETINGS)


def closing(text: str) -> str:
    parts = split_sentences(text)
    return collapse(parts[-1]) if parts else ""


def card_of(raw: dict[str, Any]) -> dict[str, Any]:
    card: dict[str, Any] = {"facts": []}
    for key, value in raw.items():
        if key in CARD_FIELDS:
            card[CARD_FIELDS[key]] = value
        else:
            card["facts"].append(f"{key}: {value}")
    return card


class Runner:
    def __init__(self, args: argparse.Namespace, provider: str, workdir: Path) -> None:
        self.args = args
        self.provider = provider
        url = f"sqlite:///{workdir / f'eval-{provider}.db'}"
        upgrade_database(url)
        self.engine = make_engine(url)
        self.clock = MovableClock(datetime(2026, 10, 1, tzinfo=UTC))
        self.settings = Settings(database_url=url, job_poll_seconds=0.05)
        self.client = TestClient(create_app(self.settings, engine=self.engine, clock=self.clock))
        self.worker = EmbeddedWorker(
            self.engine, handlers=default_handlers(), clock=self.clock, settings=self.settings
        )
        self.score = Score()
        self.timings = Timings()

    # --- API helpers -------------------------------------------------------------------------

    def call(self, method: str, path: str, key: str, expect: int, **kwargs: Any) -> Any:
        response = self.client.request(
            method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
        )
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:400]}")
        return response.json()

    def run_jobs(self) -> None:
        self.worker.run_until_idle()

    # --- one case ----------------------------------------------------------------------------

    def setup_company(self, case: dict[str, Any]) -> str:
        company = case["company"]
        with Session(self.engine) as session:
            row = onboarding.create_company(
                session,
                name=company_name(case),
                timezone=company["timezone"],
                now=self.clock.now(),
            )
            _, key = tenancy.create_api_key(
                session, company_id=row.id, role=Role.admin, now=self.clock.now()
            )
            session.commit()
        settings: dict[str, Any] = {
            "currency": company["currency"],
            "default_language": company["default_language"],
            "company_card": card_of(company.get("company_card", {})),
        }
        if company.get("opt_out_keywords"):
            settings["opt_out_keywords"] = company["opt_out_keywords"]
        if company.get("handoff_message"):
            settings["handoff_message"] = company["handoff_message"]
        self.call("PATCH", "/company", key, 200, json=settings)
        for stage in self.call("GET", "/pipelines", key, 200)[0]["stages"]:
            body = {"ai_config": {**stage["ai_config"], "quiet_seconds": 0}}
            self.call("PATCH", f"/stages/{stage['id']}", key, 200, json=body)
        for task in TASKS if self.provider != "offline" else ():
            body = {"provider": self.provider, "model": self.args.model}
            self.call("PUT", f"/ai/models/{task}", key, 200, json=body)
        for document in case["kb"]:
            self.call("POST", "/kb/documents", key, 201, json=document)
        return key

    def run_case(self, case: dict[str, Any]) -> None:
        cid = case["id"]
        first_time = min(
            [parse_time(t["received_at"]) for t in case["turns"]]
            + [parse_time(h["sent_at"]) for h in case.get("history", [])]
        )
        self.clock.set(first_time - timedelta(minutes=5))
        key = self.setup_company(case)
        lead = case["lead"]
        created = self.call(
            "POST",
            "/leads",
            key,
            201,
            json={
                "name": lead["name"],
                "contacts": [{"channel": "sandbox", "value": lead["phone"]}],
            },
        )
        lead_id = created["id"]
        history = case.get("history") or []
        if history:
            body = {
                "messages": [
                    {
                        "direction": h["direction"],
                        "text": h["text"],
                        "kind": h.get("kind", "reply"),
                        "sent_at": h["sent_at"],
                    }
                    for h in history
                ]
            }
            self.call("POST", f"/leads/{lead_id}/history", key, 201, json=body)
        # As the guardrail reads them (docs/ai.md 6): the company's sources ground any figure,
        # the lead's words only what the reply says back as theirs.
        sources = [d["content"] for d in case["kb"]]
        sources += [str(v) for v in case["company"].get("company_card", {}).values()]
        sources += [company_name(case)]
        lead_words = [h["text"] for h in history if h["direction"] == "in"]
        currency = case["company"]["currency"]
        earlier_bumpups = [h["text"] for h in history if h.get("kind") == "bumpup"]
        handed_off = opted_out = False
        closings: list[str] = []  # the last sentence of each answer, for varied_closing
        for group in bursts(case["turns"]):
            seen = {m["id"] for m in self.messages(key, lead_id)}
            for index, turn in group:
                moment = parse_time(turn["received_at"])
                self.clock.set(moment)
                lead_words.append(turn["text"])
                started = time.perf_counter()
                self.call(
                    "POST",
                    "/inbound-message",
                    key,
                    201,
                    json={
                        "channel": "sandbox",
                        "from": lead["phone"],
                        "name": lead["name"],
                        "text": turn["text"],
                        "external_id": f"{cid}-{index}",
                        "received_at": turn["received_at"],
                    },
                )
                self.timings.inbound_ms.append((time.perf_counter() - started) * 1000)
            self.clock.advance(seconds=2)
            self.run_jobs()
            new = [m for m in self.messages(key, lead_id) if m["id"] not in seen]
            events = self.events(lead_id, since=moment)
            lead_now = self.call("GET", f"/leads/{lead_id}", key, 200)
            for _, turn in group:
                expect = turn.get("expect") or {}
                if not expect:
                    continue
                self.check_turn(
                    case, turn, expect, new, events, lead_now, sources + lead_words, handed_off
                )
            handed_off = handed_off or any(e.type == "HandoffRequested" for e in events)
            opted_out = opted_out or any(e.type == "OptedOut" for e in events)
            sales = [
                m
                for m in new
                if m["direction"] == "out" and m["meta"].get("purpose") in ("reply", "safe_answer")
            ]
            if sales:
                closings.append(closing(sales[-1]["text"]))
            for message in new:
                if message["direction"] == "out":
                    self.check_no_default(case, message["text"])
                if message["direction"] == "out" and message["meta"].get("purpose") != "handoff":
                    bad = ungrounded(message["text"], sources, lead_words, currency=currency)
                    self.score.count(
                        "invented numbers (replies with any)",
                        bool(bad),
                        cid,
                        f"{bad} in {message['text']!r}",
                    )
        for _ in range(int(case.get("bumpups") or 0)):
            self.clock.advance(hours=26)
            job_id = self.call("POST", f"/leads/{lead_id}/bumpup", key, 202)["job_id"]
            self.run_jobs()
            job = self.call("GET", f"/jobs/{job_id}", key, 200)
            # A refusal (the AI is paused for a handed-off lead, the lead wrote last) is the
            # right answer to the state the conversation is in: counted on its own line.
            self.score.count(
                "bump-ups refused (reason in -v)",
                job["status"] != "completed",
                cid,
                f"refused: {job['last_error']}",
            )
            if job["status"] != "completed":
                continue
            text = next(
                m["text"]
                for m in self.messages(key, lead_id)
                if m["id"] == job["result"]["message_id"]
            )
            words = word_count(text)
            closest = max((similarity(text, e) for e in earlier_bumpups), default=0.0)
            self.score.check(
                "bump-ups sent: 30-40 words, no near-repeat",
                30 <= words <= 40 and closest < NEAR_REPEAT,
                cid,
                f"{words} words, similarity {closest:.2f}: {text!r}",
            )
            bad = ungrounded(text, sources, lead_words, currency=currency)
            self.score.count(
                "invented numbers (replies with any)", bool(bad), cid, f"{bad} in bump-up"
            )
            self.check_no_default(case, text)
            earlier_bumpups.append(text)
        if case.get("varied_closing") and len(closings) >= 2:
            repeats = [
                a
                for a, b in itertools.pairwise(closings)
                if a == b or similarity(a, b) >= NEAR_REPEAT
            ]
            self.score.check(
                "closings varied across a conversation",
                not repeats,
                cid,
                f"consecutive answers end alike: {repeats!r} (all closings: {closings!r})",
            )
        if case.get("summary"):
            self.clock.advance(minutes=5)
            job_id = self.call("POST", f"/leads/{lead_id}/summary", key, 202)["job_id"]
            self.run_jobs()
            summary = self.call("GET", f"/leads/{lead_id}", key, 200)["attributes"].get(
                "ai_summary"
            )
            count = len(sentences(summary["text"])) if summary else 0
            self.score.check(
                "summaries of 3-5 sentences",
                3 <= count <= 5,
                cid,
                f"{count} sentences: {summary['text'] if summary else None!r}",
            )
            said = collapse(summary["text"]) if summary else ""
            for item in case.get("summary_must_contain", []):
                options = item if isinstance(item, list) else [item]
                self.score.check(
                    "summaries name what was discussed",
                    any(collapse(option) in said for option in options),
                    cid,
                    f"none of {options!r} in {said!r}",
                )
            if case.get("summary_must_not_contain"):
                # one check per summary: the strings are ways of saying one thing
                found = [t for t in case["summary_must_not_contain"] if collapse(t) in said]
                self.score.check(
                    "summaries don't call stated facts unknown",
                    bool(summary) and not found,
                    cid,
                    f"{found!r} in {said!r}",
                )
        del opted_out

    def check_no_default(self, case: dict[str, Any], text: str) -> None:
        """A company without a name set is never called by the placeholder name."""
        if case["company"].get("name"):
            return
        found = re.search(rf"\b{re.escape(tenancy.DEFAULT_COMPANY_NAME)}\b", text)
        self.score.check("no 'Default' said to a lead", not found, case["id"], repr(text))

    def check_turn(
        self,
        case: dict[str, Any],
        turn: dict[str, Any],
        expect: dict[str, Any],
        new: list[dict[str, Any]],
        events: list[Event],
        lead: dict[str, Any],
        sources: list[str],
        handed_off_before: bool,
    ) -> None:
        cid = case["id"]
        said = f"{turn['text']!r}"
        replies = [
            m for m in new if m["direction"] == "out" and m["meta"].get("purpose") in REPLY_PURPOSES
        ]
        answer = " ".join(m["text"] for m in replies)
        if "reply" in expect:
            self.score.check(
                "reply sent when expected (and only then)",
                bool(replies) == bool(expect["reply"]),
                cid,
                f"{said}: expected reply={expect['reply']}, got {answer!r}",
            )
        for fact in expect.get("must_contain", []):
            self.score.check(
                "must-contain facts present",
                collapse(fact) in collapse(answer),
                cid,
                f"{said}: {fact!r} not in {answer!r}",
            )
        for text in expect.get("must_not_contain", []):
            self.score.check(
                "must-not-contain text absent",
                collapse(text) not in collapse(answer),
                cid,
                f"{said}: {text!r} in {answer!r}",
            )
        sales = [m for m in replies if m["meta"].get("purpose") in ("reply", "safe_answer")]
        sales_text = " ".join(m["text"] for m in sales)
        if expect.get("no_reask") and sales:
            again = reasked(sales_text, expect["no_reask"])
            self.score.check(
                "known BANT fields not asked again",
                not again,
                cid,
                f"{said}: asked again {again}",
            )
        if expect.get("greet_back") and sales:
            self.score.check(
                "greetings acknowledged",
                greets(sales_text, case["lead"]["name"]),
                cid,
                f"{said}: no greeting in {sales_text!r}",
            )
        if sales:
            wanted = expect.get("language") or case["language"]
            accepted = (
                {"hinglish", "en"}
                if wanted == "hinglish" and not expect.get("language")
                else {wanted}
            )
            got = detect_language(" ".join(m["text"] for m in sales))
            self.score.check(
                "replies in the lead's language",
                got in accepted,
                cid,
                f"{said}: wanted {wanted}, detected {got} in {sales[0]['text']!r}",
            )
        handoffs = [e for e in events if e.type == "HandoffRequested"]
        if expect.get("handoff"):
            reasons = expect["handoff"]
            accepted = reasons if isinstance(reasons, list) else [reasons]
            self.score.check(
                "handoff cases handed off", bool(handoffs), cid, f"{said}: no handoff ({answer!r})"
            )
            if handoffs:
                self.score.check(
                    "handoff reason right",
                    handoffs[0].data["reason"] in accepted,
                    cid,
                    f"{said}: {handoffs[0].data['reason']} not {' or '.join(accepted)}",
                )
        elif not handed_off_before:
            self.score.count(
                "false handoffs",
                bool(handoffs),
                cid,
                f"{said}: handed off ({handoffs[0].data['reason'] if handoffs else ''})",
            )
        opted = [e for e in events if e.type == "OptedOut"]
        if expect.get("opt_out"):
            honoured = bool(opted) and not [
                m for m in replies if m["meta"].get("purpose") == "reply"
            ]
            self.score.check("opt-outs honoured", honoured, cid, f"{said}: not honoured")
        else:
            self.score.count("false opt-outs", bool(opted), cid, f"{said}: opted out")
        bant = lead["attributes"].get("bant") or {}
        for name, wanted in (expect.get("bant") or {}).items():
            ok, got = bant_matches(name, wanted, bant.get(name))
            self.score.check("BANT fields right", ok, cid, f"{said}: {name} {got} != {wanted}")
        if "stage" in expect:
            self.score.check(
                "stage moves right",
                lead["stage"]["name"] == expect["stage"],
                cid,
                f"{said}: stage {lead['stage']['name']} != {expect['stage']}",
            )

    # --- reads -------------------------------------------------------------------------------

    def messages(self, key: str, lead_id: str) -> list[dict[str, Any]]:
        page = self.call("GET", f"/leads/{lead_id}/messages", key, 200, params={"limit": 200})
        items: list[dict[str, Any]] = page["items"]
        return items

    def events(self, lead_id: str, *, since: datetime) -> list[Event]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Event).where(
                        Event.entity_id == uuid.UUID(lead_id),
                        Event.created_at >= since - timedelta(minutes=2),
                        Event.type.in_(("HandoffRequested", "OptedOut")),
                    )
                )
            )

    def collect_timings(self) -> None:
        from shvya.jobs.models import Job

        with Session(self.engine) as session:
            results = session.scalars(
                select(Job.result).where(Job.type == "ai.engage", Job.status == "completed")
            ).all()
        for result in results:
            if not result or result.get("outcome") not in ("sent", "handed_off"):
                continue
            timings = result["timings_ms"]
            self.timings.engage_overhead_ms.append(float(timings["overhead"]))
            self.timings.engage_total_ms.append(float(timings["total"]))


def company_name(case: dict[str, Any]) -> str:
    """The case's company, named after the case; a null name is a company without a name set,
    which carries the name a fresh installation's first company gets (onboarding)."""
    name = case["company"].get("name")
    return f"{name} [{case['id']}]" if name else tenancy.DEFAULT_COMPANY_NAME


def bursts(turns: list[dict[str, Any]]) -> list[list[tuple[int, dict[str, Any]]]]:
    """Turns seconds apart are one burst: posted together, answered once."""
    groups: list[list[tuple[int, dict[str, Any]]]] = []
    previous: datetime | None = None
    for index, turn in enumerate(turns):
        at = parse_time(turn["received_at"])
        if previous is not None and (at - previous).total_seconds() <= BURST_SECONDS and groups:
            groups[-1].append((index, turn))
        else:
            groups.append([(index, turn)])
        previous = at
    return groups


def bant_matches(name: str, wanted: Any, got: Any) -> tuple[bool, Any]:
    if not isinstance(got, dict):
        return False, None
    if name == "budget":
        same = abs(float(got.get("amount") or 0) - float(wanted["amount"])) < 0.01
        return same and got.get("currency") == wanted["currency"], {
            k: got.get(k) for k in ("amount", "currency")
        }
    if name == "authority":
        return got.get("value") == wanted, got.get("value")
    if name == "need":
        return bool(got.get("value")) == bool(wanted), got.get("value")
    if name == "timeline":
        window = {k: got.get(k) for k in ("from", "to")}
        return all(window.get(k) == wanted.get(k) for k in wanted), window
    return False, got


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def grouped(score: Score, cases: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Cases passed and checks passed per value of `key` (category, language).

    A case passes when every check it was given passed (a bad-thing count that did not
    happen is a passed check; informational counts are left out)."""
    group_of = {case["id"]: case.get(key) or "-" for case in cases}
    groups: dict[str, dict[str, Any]] = {}
    for case in cases:
        group = groups.setdefault(
            group_of[case["id"]],
            {"cases": 0, "cases_passed": 0, "checks": 0, "checks_passed": 0, "by_check": {}},
        )
        group["cases"] += 1
        mine = [r for r in score.results if r[0] == case["id"] and r[1] not in INFORMATIONAL]
        group["cases_passed"] += int(all(ok for _, _, ok in mine))
        for _, name, ok in mine:
            group["checks"] += 1
            group["checks_passed"] += int(ok)
            cell = group["by_check"].setdefault(name, {"passed": 0, "total": 0})
            cell["passed"] += int(ok)
            cell["total"] += 1
    return dict(sorted(groups.items()))


def print_groups(title: str, groups: dict[str, dict[str, Any]]) -> None:
    print(f"\n| {title} | cases passed | | checks passed | |")
    print("|---|---|---|---|---|")
    for name, g in groups.items():
        cases_rate = g["cases_passed"] / g["cases"] if g["cases"] else 0.0
        checks_rate = g["checks_passed"] / g["checks"] if g["checks"] else 0.0
        print(
            f"| {name} | {g['cases_passed']}/{g['cases']} | {cases_rate:.0%} "
            f"| {g['checks_passed']}/{g['checks']} | {checks_rate:.1%} |"
        )


def report(
    runner: Runner, elapsed: float, cases: list[dict[str, Any]]
) -> tuple[bool, dict[str, Any]]:
    score, timings = runner.score, runner.timings
    print(f"\n== {runner.provider} provider: {len(cases)} cases in {elapsed:.1f} s ==")
    print("| check | result | rate | target (offline) | met |")
    print("|---|---|---|---|---|")
    met_all = True
    checks: dict[str, Any] = {}
    names = list(TARGETS) + sorted(set(score.total) - set(TARGETS))
    for name in names:
        rate = score.rate(name)
        if rate is None:
            continue
        target = TARGETS.get(name)
        shown = f"{score.passed[name]}/{score.total[name]}"
        ok: bool | None = None
        if target is None:
            met = "-"
            goal = "-"
        else:
            value, how = target
            ok = rate <= value if how == "max" else rate >= value
            met = "yes" if ok else "NO"
            met_all = met_all and ok
            goal = f"{'<=' if how == 'max' else '>='} {value:.0%}"
        print(f"| {name} | {shown} | {rate:.1%} | {goal} | {met} |")
        checks[name] = {
            # for a count of bad things (invented numbers, false opt-outs) `count` is the hits
            "counts": "bad" if name in score.counted_bad else "passed",
            "count": score.passed[name],
            "total": score.total[name],
            "rate": rate,
            "target": None if target is None else {"value": target[0], "compare": target[1]},
            "met": ok,
        }
    categories = grouped(score, cases, "category")
    languages = grouped(score, cases, "language")
    print_groups("category", categories)
    print_groups("language", languages)
    overhead = statistics.median(timings.engage_overhead_ms) if timings.engage_overhead_ms else 0.0
    inbound = statistics.median(timings.inbound_ms) if timings.inbound_ms else 0.0
    print(
        f"\nai.engage overhead (job time less the provider's), {len(timings.engage_overhead_ms)} "
        f"replies: p50 {overhead:.1f} ms, p90 {percentile(timings.engage_overhead_ms, 0.9):.1f} ms "
        f"(target p50 < 30 ms with the offline provider: "
        f"{'met' if overhead < 30 or runner.provider != 'offline' else 'NOT met'}); "
        f"whole job p50 {statistics.median(timings.engage_total_ms or [0]):.1f} ms"
    )
    print(
        f"anchor, POST /inbound-message in the same run: p50 {inbound:.1f} ms; "
        f"engage overhead / inbound request = {overhead / inbound if inbound else 0:.2f}x"
    )
    if runner.provider == "offline" and overhead >= 30:
        met_all = False
    figures = {
        "cases": len(cases),
        "elapsed_s": round(elapsed, 1),
        "targets_met": met_all,
        "checks": checks,
        "categories": categories,
        "languages": languages,
        "case_results": {
            case["id"]: all(
                ok
                for cid, name, ok in score.results
                if cid == case["id"] and name not in INFORMATIONAL
            )
            for case in cases
        },
        "engage_overhead_ms": {
            "replies": len(timings.engage_overhead_ms),
            "p50": overhead,
            "p90": percentile(timings.engage_overhead_ms, 0.9),
        },
        "inbound_ms_p50": inbound,
        "failures": score.failures,
    }
    return met_all, figures


def selected(case: dict[str, Any], terms: list[str], labels: set[str]) -> bool:
    """--only: a term that is a category or language (labels) selects those cases exactly
    ("hi" is not "hinglish"); any other term selects the ids that contain it."""
    return any(
        t in (case.get("category"), case["language"]) if t in labels else t in case["id"]
        for t in terms
    )


def commit_of_repository() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "bench", "evals"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def compare(before_path: Path, after_path: Path, provider: str) -> int:
    """Two --json files side by side: cases passed per category and language, then checks."""
    runs = []
    for path in (before_path, after_path):
        data = json.loads(path.read_text())
        if provider not in data["providers"]:
            print(f"{path}: no figures for the {provider} provider")
            return 2
        runs.append((data, data["providers"][provider]))
    (b_meta, before), (a_meta, after) = runs
    print(f"before: {before_path} ({b_meta['commit']}, {b_meta['date']})")
    print(f"after:  {after_path} ({a_meta['commit']}, {a_meta['date']})")
    for key in ("categories", "languages"):
        print(
            f"\n| {key[:-1] if key == 'languages' else 'category'} | cases passed before "
            "| after | checks passed before | after |"
        )
        print("|---|---|---|---|---|")
        for name in sorted(set(before[key]) | set(after[key])):
            cells = []
            for run in (before, after):
                g = run[key].get(name)
                cells.append(
                    (f"{g['cases_passed']}/{g['cases']}", f"{g['checks_passed']}/{g['checks']}")
                    if g
                    else ("-", "-")
                )
            print(f"| {name} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")
    print("\n| check | before | after | target |")
    print("|---|---|---|---|")
    for name in dict.fromkeys([*before["checks"], *after["checks"]]):
        cells = []
        for run in (before, after):
            c = run["checks"].get(name)
            cells.append(f"{c['count']}/{c['total']} ({c['rate']:.1%})" if c else "-")
        target = (after["checks"].get(name) or before["checks"][name])["target"]
        goal = (
            "-"
            if target is None
            else f"{'<=' if target['compare'] == 'max' else '>='} {target['value']:.0%}"
        )
        print(f"| {name} | {cells[0]} | {cells[1]} | {goal} |")
    changed = sorted(
        case
        for case in set(before["case_results"]) & set(after["case_results"])
        if before["case_results"][case] != after["case_results"][case]
    )
    fixed = [c for c in changed if after["case_results"][c]]
    broken = [c for c in changed if not after["case_results"][c]]
    print(f"\ncases now passing: {', '.join(fixed) or 'none'}")
    print(f"cases now failing: {', '.join(broken) or 'none'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=Path, default=REPO / "evals" / "cases.jsonl")
    parser.add_argument(
        "--provider", choices=["offline", "openai", "anthropic", "both"], default="offline"
    )
    parser.add_argument("--model", default=os.environ.get("SHVYA_EVAL_MODEL", "gpt-4o-mini"))
    parser.add_argument(
        "--only",
        help="comma-separated: run the cases whose id contains a term, or whose category or "
        "language is one (e.g. hinglish, tone,summary, hi)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure")
    parser.add_argument(
        "--json", type=Path, help="write every figure and failure to this file, to compare runs"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="print two --json files side by side (for --provider) and exit; runs nothing",
    )
    args = parser.parse_args()
    if args.compare:
        provider = "offline" if args.provider == "both" else args.provider
        return compare(*args.compare, provider)
    cases = [json.loads(line) for line in args.cases.read_text().splitlines() if line.strip()]
    if args.only:
        terms = [t.strip() for t in args.only.split(",") if t.strip()]
        labels = {c.get("category") for c in cases} | {c["language"] for c in cases}
        cases = [c for c in cases if selected(c, terms, labels - {None})]
    if not cases:
        print(f"no cases in {args.cases}" + (f" matching {args.only!r}" if args.only else ""))
        return 2
    providers = ["offline", "openai"] if args.provider == "both" else [args.provider]
    if "openai" in providers and not os.environ.get("OPENAI_API_KEY"):
        print(
            "OpenAI-compatible provider: not configured (set OPENAI_API_KEY, and "
            "OPENAI_BASE_URL for a self-hosted server); skipped"
        )
        providers.remove("openai")
    import logging

    logging.disable(logging.WARNING)  # expected refusals and retries are scored, not logged
    ok = True
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit_of_repository(),
        "command": "bench/ai_eval.py " + " ".join(sys.argv[1:]),
        "cases_file": str(args.cases),
        "providers": {},
    }
    with tempfile.TemporaryDirectory(prefix="shvya-eval-") as tmp:
        for provider in providers:
            started = time.perf_counter()
            runner = Runner(args, provider, Path(tmp))
            with runner.client:
                for number, case in enumerate(cases, start=1):
                    if sys.stderr.isatty():  # progress on a terminal, not in logs
                        print(
                            f"\r{provider}: case {number}/{len(cases)} {case['id']:<32}",
                            end="",
                            file=sys.stderr,
                            flush=True,
                        )
                    try:
                        runner.run_case(case)
                    except Exception as exc:  # a broken case is a failure, not a crash
                        runner.score.check("cases run without error", False, case["id"], repr(exc))
                    else:
                        runner.score.check("cases run without error", True, case["id"])
                runner.collect_timings()
            if sys.stderr.isatty():
                print(file=sys.stderr)
            met, figures = report(runner, time.perf_counter() - started, cases)
            results["providers"][provider] = figures
            if provider == "offline":
                ok = ok and met
            if args.verbose and runner.score.failures:
                print("\nfailures:")
                for failure in runner.score.failures:
                    print(f"  - {failure}")
            runner.engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"\nfigures written to {args.json}")
    print(f"\nreproduce: cd {REPO} && .venv/bin/python bench/ai_eval.py " + " ".join(sys.argv[1:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
