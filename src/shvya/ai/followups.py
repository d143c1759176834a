"""followup.bumpup and ai.summary: the AI's messages and notes that no inbound message asked for.

A bump-up nudges a lead who went quiet, on WhatsApp only (the sandbox stands in for it), in
30 to 40 words, about their conversation, and never in the wording of an earlier bump-up to
the same lead. A summary gives the team 3 to 5 sentences on the lead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shvya.ai import prompts
from shvya.ai import service as ai
from shvya.ai.figures import card_values, ungrounded
from shvya.ai.memory import ai_session
from shvya.ai.providers import AITask, ChatMessage, CompletionRequest, ProviderError
from shvya.ai.providers.offline import OfflineProvider
from shvya.ai.runs import Run, ask, job_lead, send_text
from shvya.ai.text import NEAR_REPEAT, markup_in, sentences, similarity, word_count
from shvya.ai.understanding import UNREAD_SCAN, merge_read, read_unread
from shvya.channels import service as channels
from shvya.channels.policies import EMAIL_NOT_FOR_BUMPUPS, Allow, SendKind
from shvya.channels.schemas import OutboundContent, TemplateSend
from shvya.conversations import service as conversations
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, Stage
from shvya.db.phases import Phases
from shvya.jobs.runner import JobContext
from shvya.jobs.service import PermanentJobError
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Company

BUMPUP_CHANNELS = (Channel.wa_cloud, Channel.wa_web, Channel.sandbox)
BUMPUP_WORDS = (30, 40)
SUMMARY_SENTENCES = (3, 5)
ATTEMPTS = 3


def _refuse(reason: str, message: str) -> PermanentJobError:
    return PermanentJobError(message, reason=reason)


# --- bump-ups ---------------------------------------------------------------------------------


def bumpup_problem(
    text: str,
    earlier: list[str],
    sources: list[str],
    lead_words: list[str] | None = None,
    *,
    currency: str | None = None,
) -> str | None:
    """Why this bump-up may not be sent, or None. Like a reply, it may state no figure the
    company's `sources` (its card and name) do not ground; the lead's own words ground only
    what it repeats as theirs, never a price or an offer (docs/ai.md 6)."""
    words = word_count(text)
    low, high = BUMPUP_WORDS
    if not low <= words <= high:
        return f"{words} words, not {low} to {high}"
    for before in earlier:
        if similarity(text, before) >= NEAR_REPEAT:
            return "too close to an earlier bump-up"
    invented = ungrounded(text, sources, lead_words or [], currency=currency)
    if invented:
        return f"states {', '.join(invented)}, which no source does"
    return None


def _refusal(session: Session, company: Company, lead: Lead) -> PermanentJobError | None:
    """Why no bump-up may go to this lead now, or None."""
    if not company.ai_enabled:
        return _refuse("ai_disabled", "the AI is switched off for this company")
    if lead.ai_paused:
        return _refuse("ai_paused", "the AI is paused for this lead: a person has the conversation")
    if conversations.unanswered_inbound(session, company_id=company.id, lead_id=lead.id):
        return _refuse(
            "lead_wrote_last", "the lead wrote last and is waiting for an answer, not a bump-up"
        )
    return None


def bumpup(ctx: JobContext) -> Phases[dict[str, Any]]:
    run = Run()
    session = ctx.session
    company = tenancy.get_company(session, company_id=ctx.job.company_id)
    lead = job_lead(ctx)
    channel = _bumpup_channel(session, lead)
    refusal = _refusal(session, company, lead)
    if refusal is not None:
        raise refusal
    # Ask the router before the model writes a word: a bump-up that must wait or may not go
    # (a marketing send: refused to a contact who stopped marketing) costs nothing.
    verdict = channels.preflight(
        session,
        company_id=company.id,
        lead_id=lead.id,
        channel=channel,
        kind=SendKind.bumpup,
        settings=ctx.settings,
        now=ctx.now,
    )
    if not isinstance(verdict, Allow):
        channels.refuse_preflight(
            session, company_id=company.id, lead_id=lead.id, verdict=verdict, now=ctx.now
        )
    if verdict.template is not None:
        # Outside WhatsApp's window a bump-up can only be the re-engagement template: no
        # model writes one.
        return (yield from _send_bumpup(ctx, run, lead, channel, verdict.template))
    drafted = yield from draft_followup(ctx, run, company=company, lead=lead, instruction=None)
    if drafted.text is None:
        raise _refuse(
            "bumpup_repeats",
            "every bump-up we can write repeats an earlier one to this lead: "
            + "; ".join(drafted.problems),
        )
    text, problems, language = drafted.text, drafted.problems, drafted.language
    # The model may have taken a while: the lead may have written, or a person taken over.
    crm.lock_lead(session, lead)
    refusal = _refusal(session, company, lead)
    if refusal is not None:
        raise refusal
    sent = yield from send_text(
        ctx,
        lead,
        channel,
        text,
        send_key=f"bumpup:{ctx.job.id}",
        meta={"purpose": "bumpup", "language": language},
        kind=SendKind.bumpup,
    )
    return {
        "outcome": sent.outcome.value,
        "message_id": str(sent.message_id),
        "words": word_count(text),
        "rejected_drafts": problems,
        **run.notes,
        "timings_ms": run.timings(),
    }


@dataclass(frozen=True)
class Draft:
    """A follow-up the AI wrote, or None when every draft broke a rule (`problems` says how)."""

    text: str | None
    problems: list[str]
    language: str


def draft_followup(
    ctx: JobContext,
    run: Run,
    *,
    company: Company,
    lead: Lead,
    instruction: str | None,
) -> Phases[Draft]:
    """A follow-up to a lead who went quiet, written by the company's model with the bump-up's
    rules: the lead's language, 30 to 40 words about their conversation, no figure the
    company's card does not ground, never the wording of an earlier follow-up (docs/ai.md 6).
    `instruction` is what the company asks this message to do (a sequence step's `ai`).

    Without an instruction (a bump-up), when the model keeps missing the rules, the offline
    writer's text is used if it passes them; with one, no fallback writes it instead: the
    draft is None and a person decides (docs/sequences.md)."""
    session = ctx.session
    earlier = [
        m.text
        for m in conversations.outbound_for(
            session, company_id=company.id, lead_id=lead.id, purpose="bumpup"
        )
    ]
    language = str(lead.attributes.get("language") or _company_language(company))
    topic = _topic(session, lead)
    sources = [company.name, *card_values(company.company_card)]
    lead_words = [
        m.text
        for m in conversations.recent_messages(
            session, company_id=company.id, lead_id=lead.id, limit=50
        )
        if m.direction == "in"
    ]
    context: dict[str, Any] = {
        "language": language,
        "lead": {"name": lead.name},
        "company": {"name": company.name},
        "topic": topic,
        "earlier": earlier,
    }
    system = prompts.BUMPUP_SYSTEM.format(
        company=tenancy.lead_facing_name(company) or "the company (never name it)",
        language=prompts.language_name(language),
        topic=topic,
        earlier="\n".join(f"- {e}" for e in earlier) or "(none)",
    )
    if instruction:
        system += prompts.FOLLOWUP_INSTRUCTION.format(instruction=instruction)
        context["instruction"] = instruction
    problems: list[str] = []
    for attempt in range(ATTEMPTS):
        request = CompletionRequest(
            task=AITask.bumpup,
            system=system,
            messages=[ChatMessage("user", f"Write the follow-up to {lead.name or 'the lead'}.")],
            context={**context, "variant": len(earlier) + attempt},
        )
        try:
            completion = yield from ask(ctx, run, request, lead_id=lead.id)
        except ProviderError as exc:
            raise ai.job_failure(exc) from exc
        candidate = completion.text.strip().strip('"')
        markup = markup_in(candidate)  # a lead never sees raw JSON or markup (docs/ai.md 7)
        problem = f"{markup}, not a message" if markup else None
        problem = problem or bumpup_problem(
            candidate, earlier, sources, lead_words, currency=company.currency
        )
        if problem is None:
            return Draft(candidate, problems, language)
        problems.append(problem)
    if instruction is not None:
        return Draft(None, problems, language)
    # The model kept missing the rules: the offline writer never does (or says so).
    fallback = (
        OfflineProvider()
        .complete(
            CompletionRequest(
                task=AITask.bumpup, system="", messages=[], context={**context, "variant": 0}
            )
        )
        .text
    )
    if bumpup_problem(fallback, earlier, sources, lead_words, currency=company.currency):
        return Draft(None, problems, language)
    run.notes["fallback"] = "offline"
    return Draft(fallback, problems, language)


def _send_bumpup(
    ctx: JobContext, run: Run, lead: Lead, channel: Channel, template: TemplateSend
) -> Phases[dict[str, Any]]:
    sent = yield from channels.send_message(
        ctx.session,
        company_id=lead.company_id,
        lead_id=lead.id,
        channel=channel,
        content=OutboundContent(template=template),
        kind=SendKind.bumpup,
        send_key=f"bumpup:{ctx.job.id}",
        settings=ctx.settings,
        now=ctx.clock.now,
        actor="ai",
        meta={"purpose": "bumpup"},
    )
    return {
        "outcome": sent.outcome.value,
        "message_id": str(sent.message_id),
        "template": template.name,
        "timings_ms": run.timings(),
    }


def _bumpup_channel(session: Session, lead: Lead) -> Channel:
    contacts = crm.lead_contacts(session, company_id=lead.company_id, lead_id=lead.id)
    for wanted in BUMPUP_CHANNELS:
        if any(c.channel == wanted.value for c in contacts):
            return wanted
    if contacts and all(c.channel == Channel.email.value for c in contacts):
        # Email is for scheduled work: never a bump-up (docs/quiet-hours.md, the router's
        # rule in channels.policies).
        raise _refuse(EMAIL_NOT_FOR_BUMPUPS.reason, EMAIL_NOT_FOR_BUMPUPS.detail)
    have = ", ".join(sorted({c.channel for c in contacts})) or "none"
    raise _refuse(
        "channel_not_whatsapp",
        f"bump-ups go only over WhatsApp (or the sandbox); this lead's channels: {have}",
    )


def _company_language(company: Company) -> str:
    return "es" if company.default_language == "es" else "en"


def _topic(session: Session, lead: Lead) -> str:
    need = (lead.attributes.get("bant") or {}).get("need")
    if isinstance(need, dict) and need.get("value"):
        return str(need["value"])
    for message in reversed(
        conversations.recent_messages(
            session, company_id=lead.company_id, lead_id=lead.id, limit=10
        )
    ):
        if message.direction == "in" and len(message.text.split()) >= 3:
            return " ".join(message.text.split()[:8]).rstrip("?.!,")
    return ""


# --- summaries --------------------------------------------------------------------------------


def summary_problem(text: str) -> str | None:
    markup = markup_in(text)
    if markup is not None:
        return f"{markup}, not sentences"
    count = len(sentences(text))
    low, high = SUMMARY_SENTENCES
    return None if low <= count <= high else f"{count} sentences, not {low} to {high}"


SUMMARY_READS = 500  # the whole conversation, for any lead a team works by hand
SUMMARY_TRANSCRIPT = 40  # the turns an LLM is shown; BANT covers the rest


def understand_unread(
    session: Session, *, company: Company, lead: Lead, now: datetime
) -> list[str]:
    """Understanding by rules over every lead message no understanding has read yet (imported
    history, messages that came while the AI was paused or off), recorded as BANT
    (BANTUpdated). Messages an ai.engage run is about to answer are left to it. Returns the
    fields that changed (docs/ai.md 7)."""
    waiting: set[uuid.UUID] = set()
    if company.ai_enabled and not lead.ai_paused:
        waiting = {
            m.id
            for m in conversations.unanswered_inbound(
                session, company_id=company.id, lead_id=lead.id
            )
        }
    messages = conversations.recent_messages(
        session, company_id=company.id, lead_id=lead.id, limit=UNREAD_SCAN
    )
    read = read_unread(
        messages,
        skip=waiting,
        default_currency=company.currency,
        default_language=company.default_language,
    )
    bant, changed = merge_read(
        dict(lead.attributes.get("bant") or {}),
        read,
        timezone=company.timezone,
        default_currency=company.currency,
    )
    done = {item.message_id for item in read}
    for message in messages:
        if message.id in done:
            message.meta = {**message.meta, "understood": True}
    if changed:
        lead.attributes = {**lead.attributes, "bant": bant}
        crm.record_lead_change(
            session,
            lead,
            type="BANTUpdated",
            data={"fields": changed, "bant": {k: bant[k] for k in changed}, "read_by": "summary"},
            actor="ai",
            now=now,
        )
    return changed


def summarise(ctx: JobContext) -> Phases[dict[str, Any]]:
    run = Run()
    session = ctx.session
    company = tenancy.get_company(session, company_id=ctx.job.company_id)
    lead = job_lead(ctx)
    crm.lock_lead(session, lead)  # BANT is read and written with the lead as it is now
    learnt = understand_unread(session, company=company, lead=lead, now=ctx.now)
    if learnt:
        run.notes["bant_learnt"] = learnt
    turns = conversations.recent_messages(
        session, company_id=company.id, lead_id=lead.id, limit=SUMMARY_READS
    )
    stage = session.get_one(Stage, lead.stage_id)
    handoff = next(
        (m for m in reversed(turns) if m.direction == "out" and m.meta.get("purpose") == "handoff"),
        None,
    )
    status = "A person has taken over the conversation; the AI is paused" if lead.ai_paused else ""
    if lead.ai_paused and handoff is not None and handoff.meta.get("reason"):
        reason = str(handoff.meta["reason"]).replace("_", " ")
        status = f"A person has taken over the conversation (handoff: {reason}); the AI is paused"
    bant = lead.attributes.get("bant") or {}
    context: dict[str, Any] = {
        "turns": [
            {
                "direction": m.direction,
                "text": m.text,
                "purpose": m.meta.get("purpose"),
                "imported": bool(m.meta.get("imported")),
            }
            for m in turns
        ],
        "lead": {"name": lead.name},
        "company": {"name": tenancy.lead_facing_name(company)},
        "bant": bant,
        "stage_name": stage.name,
        "status": status,
    }
    transcript = "\n".join(
        f"{'Lead' if m.direction == 'in' else company.name}: {m.text}"
        for m in turns[-SUMMARY_TRANSCRIPT:]
    )
    known = prompts.card_text({k: v for k, v in bant.items() if isinstance(v, dict)})
    request = CompletionRequest(
        task=AITask.summary,
        system=prompts.SUMMARY_SYSTEM.format(company=company.name),
        messages=[
            ChatMessage(
                "user",
                f"Lead: {lead.name or 'unknown'}; stage: {stage.name}. {status}\n"
                f"Known (budget, authority, need, timeline): {known}\n\n{transcript}",
            )
        ],
        context=context,
    )
    try:
        text = (yield from ask(ctx, run, request, lead_id=lead.id)).text.strip()
    except ProviderError as exc:
        raise ai.job_failure(exc) from exc
    problem = summary_problem(text)
    if problem is not None:
        fallback = OfflineProvider().complete(request).text
        run.notes["rejected_draft"] = problem
        run.notes["fallback"] = "offline"
        text = fallback
    written = {"text": text, "at": ctx.now.isoformat(), "sentences": len(sentences(text))}
    crm.lock_lead(session, lead)  # what ai.engage wrote meanwhile (BANT) is kept
    lead.attributes = {**lead.attributes, "ai_summary": written}
    crm.record_lead_change(
        session,
        lead,
        type="SummaryUpdated",
        data={"sentences": written["sentences"], "job_id": str(ctx.job.id)},
        actor="ai",
        now=ctx.now,
    )
    row = ai_session(session, lead=lead, now=ctx.now)
    row.summary = text  # the AI's memory; lead.attributes holds the team's copy
    row.updated_at = ctx.now
    return {"outcome": "written", **written, **run.notes, "timings_ms": run.timings()}
