"""evals/cases.jsonl keeps the rules of evals/README.md ("Adding a case", its checklist).

A case that breaks them would score the AI against an expectation no salesperson could meet
(a fact the knowledge base does not hold, a stage the lead never reached), so the file is
checked here, in `make test`, rather than discovered in a benchmark run.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

CASES_PATH = Path(__file__).resolve().parent.parent / "evals" / "cases.jsonl"

LANGUAGES = {"en", "hinglish", "es", "hi"}
COMPANY_LANGUAGES = {"en", "es", "hi"}
STAGES = {"New", "Qualified", "Nurture", "Converted", "Lost"}
HANDOFF_REASONS = {"asked_for_person", "angry", "legal_or_complaint", "unknown_answer"}
BANT_FIELDS = {"budget", "authority", "need", "timeline"}
CATEGORIES = {
    # issue 7's cases, by their main point
    "qualification",
    "handoff",
    "opt_out",
    "lost",
    # issue 14's cases
    "policy_question",
    "complaint",
    "authority",
    "currency",
    "timeline",
    "comparison",
    "unanswerable_near",
    "tone",
    "cross_language",
    "summary",
}
CASE_KEYS = {
    "id",
    "industry",
    "language",
    "category",
    "company",
    "kb",
    "lead",
    "history",
    "turns",
    "bumpups",
    "summary",
    "varied_closing",
    "summary_must_contain",
    "summary_must_not_contain",
}
REQUIRED_CASE_KEYS = {"id", "industry", "language", "company", "kb", "lead", "turns"}
COMPANY_KEYS = {
    "name",
    "timezone",
    "currency",
    "default_language",
    "company_card",
    "opt_out_keywords",
    "handoff_message",
}
EXPECT_KEYS = {
    "reply",
    "must_contain",
    "must_not_contain",
    "language",
    "handoff",
    "opt_out",
    "bant",
    "stage",
    "no_reask",
    "greet_back",
}


def load_cases() -> list[dict[str, Any]]:
    lines = CASES_PATH.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "the file ends with one newline"
    cases = []
    for number, line in enumerate(lines[:-1], start=1):
        assert line.strip(), f"line {number} is blank"
        cases.append(json.loads(line))
    return cases


CASES = load_cases()


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def at(value: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), f"{value} is not UTC with Z"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_ids_are_unique_and_follow_the_convention() -> None:
    ids = Counter(case["id"] for case in CASES)
    assert [i for i, n in ids.items() if n > 1] == []
    for case in CASES:
        assert re.fullmatch(rf"{case['language']}-[a-z_]+-\d\d", case["id"]), case["id"]


def test_every_language_and_issue_14_category_is_covered() -> None:
    languages = Counter(case["language"] for case in CASES)
    assert set(languages) == LANGUAGES
    categories = Counter(case.get("category") for case in CASES)
    assert set(categories) == CATEGORIES, "every case has a category, and every category a case"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_keeps_the_format(case: dict[str, Any]) -> None:
    assert REQUIRED_CASE_KEYS <= set(case) <= CASE_KEYS, set(case) ^ CASE_KEYS
    assert case["language"] in LANGUAGES
    assert case.get("category") in CATEGORIES
    company = case["company"]
    assert {"timezone", "currency", "default_language"} <= set(company) <= COMPANY_KEYS
    # a null name is the company without a name set (evals/README.md, "Format")
    assert company.get("name") is None or company["name"].strip()
    ZoneInfo(company["timezone"])
    assert re.fullmatch(r"[A-Z]{3}", company["currency"])
    assert company["default_language"] in COMPANY_LANGUAGES
    assert 1 <= len(case["kb"]) <= 3
    for document in case["kb"]:
        assert set(document) == {"title", "content"}
        assert 80 <= len(document["content"].split()) <= 300, document["title"]
    assert set(case["lead"]) == {"name", "phone"}
    assert re.fullmatch(r"\+[1-9]\d{7,14}", case["lead"]["phone"])
    assert 0 <= case.get("bumpups", 0) <= 3
    if "summary_must_contain" in case or "summary_must_not_contain" in case:
        assert case.get("summary") is True, "summary checks need summary: true"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_times_increase_in_november_2026(case: dict[str, Any]) -> None:
    zone = ZoneInfo(case["company"]["timezone"])
    times = [at(turn["received_at"]) for turn in case["turns"]]
    assert times == sorted(times) and len(set(times)) == len(times), "received_at increases"
    for moment in times:
        assert (moment.year, moment.month) == (2026, 11)
        local = moment.astimezone(zone)
        assert (local.year, local.month) == (2026, 11), f"{moment} is not November locally"
    for earlier, later in itertools.pairwise(times):
        gap = (later - earlier).total_seconds()
        assert gap <= 30 or gap >= 60, "a burst is seconds apart, other turns a minute or more"
    for message in case.get("history", []):
        assert at(message["sent_at"]) < times[0], "history comes before the first turn"
        if message.get("kind") == "bumpup":
            assert 30 <= len(message["text"].split()) <= 40


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_expectations_are_ones_a_salesperson_could_meet(case: dict[str, Any]) -> None:
    kb = collapse(" ".join(document["content"] for document in case["kb"]))
    known: set[str] = set()
    stopped = False
    for turn in case["turns"]:
        expect = turn["expect"]
        assert set(expect) <= EXPECT_KEYS, set(expect) - EXPECT_KEYS
        for fact in expect.get("must_contain", []):
            assert collapse(fact) in kb, f"{fact!r} is not in the knowledge base"
        assert all(isinstance(s, str) and s for s in expect.get("must_not_contain", []))
        reasons = expect.get("handoff", False)
        if reasons:
            accepted = reasons if isinstance(reasons, list) else [reasons]
            assert set(accepted) <= HANDOFF_REASONS
        if "language" in expect:
            assert expect["language"] in LANGUAGES
        if stopped:
            assert expect.get("reply") is False, "nothing is answered after a handoff or opt-out"
        stopped = stopped or bool(reasons) or expect.get("opt_out") is True
        for name, value in (expect.get("bant") or {}).items():
            assert name in BANT_FIELDS
            if name == "timeline":
                assert date.fromisoformat(value["from"]) <= date.fromisoformat(value["to"])
            known.add(name)
        if "stage" in expect:
            assert expect["stage"] in STAGES
            if expect["stage"] == "Qualified":
                assert {"budget", "need", "timeline"} <= known, "Qualified needs B, N and T"
        asked_again = set(expect.get("no_reask", []))
        assert asked_again <= known, "no_reask names only fields the lead has stated"
    if case.get("varied_closing"):
        assert sum(1 for t in case["turns"] if t["expect"].get("reply")) >= 2


def test_summary_checks_name_strings() -> None:
    for case in CASES:
        for item in case.get("summary_must_contain", []):
            options = item if isinstance(item, list) else [item]
            assert options and all(isinstance(o, str) and o for o in options), case["id"]
        assert all(isinstance(s, str) and s for s in case.get("summary_must_not_contain", []))
