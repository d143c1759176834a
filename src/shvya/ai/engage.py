"""ai.engage: the AI salesperson's answer to a lead's unanswered messages.

One run: wait out the lead's burst (the stage's quiet period), understand the messages
(intent, language, BANT, handoff, opt-out: a structured output, or rules offline), apply what
was understood by rules (BANT merge, stage moves, handoff, opt-out), retrieve the company's
passages, draft a reply, check every figure in the draft against its sources, and send it
through the channel router. Decisions come from the understanding, never from the reply text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.ai import prompts
from shvya.ai import service as ai
from shvya.ai.figures import ungrounded
from shvya.ai.models import AISession
from shvya.ai.providers import (
    AITask,
    ChatMessage,
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
)
from shvya.ai.text import fit
from shvya.ai.understanding import (
    UNDERSTANDING_SCHEMA,
    Understanding,
    bant_known,
    merge_bant,
    parse_understanding,
    understand_by_rules,
)
from shvya.channels import service as channels
from shvya.channels.schemas import OutboundContent, SendResultOut
from shvya.conversations import service as conversations
from shvya.conversations.models import Message
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, Pipeline, Stage
from shvya.crm.schemas import StageAIConfig
from shvya.events.service import append_event
from shvya.jobs.runner import JobContext
from shvya.jobs.service import DeferJob, JobType, PermanentJobError, enqueue_job
from shvya.knowledge import service as knowledge
from shvya.knowledge.embeddings import embedding_backend
from shvya.knowledge.retrieval import Hit
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Company

# The longest message each channel carries; a stage's max_chars may only be shorter.
CHANNEL_LIMITS = {
    Channel.wa_cloud: 4096,
    Channel.wa_web: 4096,
    Channel.sandbox: 4096,
    Channel.sms: 1600,
    Channel.email: 10000,
}
PASSAGES = 5
MEMORY_MESSAGES = 20
MEMORY_WORDS = 1200  # the recent turns an LLM sees, newest kept first

HANDOFF_MESSAGES = {
    "en": (
        "I'm bringing in a member of our team, who will reply to you here shortly. "
        "Thank you for your patience."
    ),
    "es": (
        "Voy a pasar tu conversación a una persona de nuestro equipo, que te responderá aquí "
        "en breve. Gracias por tu paciencia."
    ),
    "hinglish": (
        "Main aapki baat hamari team ke ek member tak pahuncha raha hoon, woh jaldi hi yahin "
        "reply karenge. Dhanyavaad."
    ),
    "hi": "मैं आपकी बात हमारी टीम के एक सदस्य तक पहुँचा रहा हूँ, वे जल्द ही यहीं जवाब देंगे। धन्यवाद।",
}
DO_NOT_KNOW = {
    "en": "I don't have that information, and I'd rather not guess.",
    "es": "No tengo esa información y prefiero no adivinar.",
    "hinglish": "Yeh information abhi mere paas nahi hai, aur main guess nahi karunga.",
    "hi": "यह जानकारी अभी मेरे पास नहीं है, और मैं अंदाज़ा नहीं लगाऊँगा।",
}
SAFE_ANSWERS = {
    "en": (
        "I'd rather not give you a figure I can't confirm. A member of our team can confirm "
        "it for you. Shall I ask them to get in touch?"
    ),
    "es": (
        "Prefiero no darte una cifra que no puedo confirmar. Una persona de nuestro equipo "
        "puede confirmártela. ¿Quieres que te contacte?"
    ),
    "hinglish": (
        "Main aapko koi aisa figure nahi batana chahta jo confirm na ho. Hamari team ka ek "
        "member aapko confirm kar dega. Kya main unhe aapse contact karne ko kahun?"
    ),
    "hi": (
        "मैं आपको ऐसा कोई आँकड़ा नहीं बताना चाहता जिसकी पुष्टि न हो। हमारी टीम का एक सदस्य इसकी "
        "पुष्टि कर देगा। क्या मैं उनसे आपसे संपर्क करने को कहूँ?"
    ),
}


@dataclass
class Run:
    """What one engage run learns and spends, for its job result."""

    started: float = field(default_factory=time.perf_counter)
    provider_ms: float = 0.0
    calls: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def timings(self) -> dict[str, float]:
        total = (time.perf_counter() - self.started) * 1000
        return {
            "total": round(total, 2),
            "provider": round(self.provider_ms, 2),
            "overhead": round(total - self.provider_ms, 2),
        }


def localized(table: dict[str, str], language: str) -> str:
    return table.get(language, table["en"])


def _skip(reason: str, run: Run, **extra: Any) -> dict[str, Any]:
    return {"outcome": "skipped", "reason": reason, **extra, "timings_ms": run.timings()}


def ask(ctx: JobContext, run: Run, request: CompletionRequest, *, lead_id: uuid.UUID) -> Completion:
    """The company's provider for this request, its time counted as the provider's."""
    started = time.perf_counter()
    try:
        return ai.generate(
            ctx.session,
            company_id=ctx.job.company_id,
            request=request,
            settings=ctx.settings,
            now=ctx.clock.now(),
            lead_id=lead_id,
            job_id=ctx.job.id,
            checkpoint=ctx.checkpoint,
        )
    except ProviderError as exc:
        raise ai.job_failure(exc) from None
    finally:
        run.provider_ms += (time.perf_counter() - started) * 1000
        run.calls += 1


def send_text(
    ctx: JobContext, lead: Lead, channel: Channel, text: str, *, send_key: str, meta: dict[str, Any]
) -> SendResultOut:
    """The AI's text through the channel router, once per send key. Outside WhatsApp's
    24-hour window the router may swap it for the company's re-engagement template."""
    return channels.send_message(
        ctx.session,
        company_id=lead.company_id,
        lead_id=lead.id,
        channel=channel,
        content=OutboundContent(text=text, reengage_with_template=True),
        send_key=send_key,
        settings=ctx.settings,
        now=ctx.clock.now,
        checkpoint=ctx.checkpoint,
        actor="ai",
        meta=meta,
    )


def payload_id(payload: dict[str, Any], key: str) -> uuid.UUID:
    """An id the job's payload must carry; without it no retry can help."""
    try:
        return uuid.UUID(str(payload[key]))
    except (KeyError, ValueError):
        raise PermanentJobError(
            f"the job's payload has no valid {key!r}: {payload!r}", reason="bad_payload"
        ) from None


def job_lead(ctx: JobContext) -> Lead:
    """The job's lead; a lead deleted since the job was queued fails it for good."""
    lead_id = payload_id(ctx.job.payload, "lead_id")
    try:
        return crm.get_lead(ctx.session, company_id=ctx.job.company_id, lead_id=lead_id)
    except crm.LeadNotFound:
        raise PermanentJobError(f"lead {lead_id} no longer exists", reason="lead_gone") from None


def engage(ctx: JobContext) -> dict[str, Any]:
    run = Run()
    session = ctx.session
    payload = ctx.job.payload
    company = tenancy.get_company(session, company_id=ctx.job.company_id)
    lead = job_lead(ctx)
    message_id = payload_id(payload, "message_id")
    for key in (f"ai.reply:{message_id}", f"ai.handoff:{message_id}"):
        # A run of this job that died after its send was committed: unknown, never resent.
        if channels.settle_interrupted_send(
            session, company_id=company.id, send_key=key, now=ctx.now
        ):
            return {"outcome": "unknown", "send_key": key, "timings_ms": run.timings()}
    if not company.ai_enabled:
        return _skip("ai_disabled", run)
    if lead.ai_paused:
        return _skip("ai_paused", run)
    pending = conversations.unanswered_inbound(session, company_id=company.id, lead_id=lead.id)
    if not any(m.id == message_id for m in pending):
        return _skip("already_answered", run)
    latest = pending[-1]
    if latest.id != message_id:
        # A later message of the same burst has its own job: that one answers them all.
        return _skip("coalesced", run, into=str(latest.id))
    stage = session.get_one(Stage, lead.stage_id)
    config = crm.stage_ai_config(stage)
    quiet_until = _aware(latest.created_at) + timedelta(seconds=config.quiet_seconds)
    if ctx.now < quiet_until:
        raise DeferJob(quiet_until, "quiet_period")
    channel = Channel(latest.channel)
    contact = crm.lead_contact(session, company_id=company.id, lead_id=lead.id, channel=channel)
    if contact is None:
        raise PermanentJobError(f"the lead has no {channel.value} contact", reason="no_contact")
    if crm.is_suppressed(session, company_id=company.id, channel=channel, address=contact.value):
        return _skip("suppressed", run)
    if channel is Channel.wa_cloud and latest.external_id:
        ctx.checkpoint()  # the typing indicator is a call to Meta: no transaction across it
    typing = channels.show_typing(
        session,
        company_id=company.id,
        channel=channel,
        reply_to_external_id=latest.external_id,
        settings=ctx.settings,
    )
    text = "\n".join(m.text for m in pending if m.text.strip())
    understood = _understand(ctx, run, company=company, lead=lead, text=text)
    # The provider call may have committed: read the lead again, locked, before changing it
    # (a summary or another job may have written its attributes meanwhile).
    crm.lock_lead(session, lead)
    language = understood.language
    result: dict[str, Any] = {
        "answers": [str(m.id) for m in pending],
        "intent": understood.intent,
        "language": language,
        "typing": typing,
    }
    if lead.attributes.get("language") != language:
        lead.attributes = {**lead.attributes, "language": language}

    if understood.opt_out:
        conversations.record_opt_out(
            session,
            company_id=company.id,
            lead_id=lead.id,
            channel=channel,
            address=contact.value,
            message_id=latest.id,
            source="ai",
            actor="ai",
            now=ctx.now,
        )
        return {"outcome": "opted_out", **result, "timings_ms": run.timings()}

    changed = _merge_bant(
        session, company=company, lead=lead, understood=understood, pending=pending, now=ctx.now
    )
    result["bant_changed"] = changed
    moved = _apply_stage_rules(session, lead=lead, stage=stage, understood=understood, now=ctx.now)
    if moved is not None:
        stage, config = moved, crm.stage_ai_config(moved)
        result["stage"] = moved.name
        _enqueue_summary(session, lead=lead, key=f"stage:{moved.id}:{latest.id}", now=ctx.now)
    inbound = conversations.count_inbound(session, company_id=company.id, lead_id=lead.id)
    every = tenancy.summary_every(company)
    if inbound and inbound % every == 0:
        _enqueue_summary(session, lead=lead, key=f"count:{inbound}", now=ctx.now)

    if understood.handoff and understood.handoff_reason in config.handoff_on:
        return _handoff(
            ctx,
            run,
            company=company,
            lead=lead,
            channel=channel,
            latest=latest,
            reason=understood.handoff_reason,
            language=language,
            result=result,
        )

    backend = embedding_backend(ctx.settings)
    if backend is not None and getattr(backend, "remote", False):
        ctx.checkpoint()  # the query's embedding is a network call
    hits = knowledge.search_knowledge(
        session, company_id=company.id, query=text, k=PASSAGES, backend=backend
    )
    limit = min(config.max_chars, CHANNEL_LIMITS[channel])
    memory = _memory(session, lead=lead, now=ctx.now)
    rolling = ai_session(session, lead=lead, now=ctx.now)
    request = _engage_request(
        company=company,
        lead=lead,
        stage=stage,
        config=config,
        channel=channel,
        understood=understood,
        text=text,
        hits=hits,
        memory=memory,
        summary=rolling.summary,
        limit=limit,
    )
    draft = _draft(ctx, run, request, lead_id=lead.id, hits=hits)
    if (
        not draft.answered
        and understood.intent in ("question", "price_inquiry")
        and ("unknown_answer" in config.handoff_on)
    ):
        return _handoff(
            ctx,
            run,
            company=company,
            lead=lead,
            channel=channel,
            latest=latest,
            reason="unknown_answer",
            language=language,
            result=result,
        )

    sources = _grounding(company, hits, memory, pending)
    drafts = [draft.reply]
    bad = _problems(draft.reply, sources)
    if bad:
        why = (
            prompts.EMPTY_RETRY
            if bad == [EMPTY]
            else prompts.GUARDRAIL_RETRY.format(figures=", ".join(bad))
        )
        retry = CompletionRequest(
            task=AITask.engage,
            system=request.system,
            messages=[
                *request.messages,
                ChatMessage("assistant", draft.reply or "(nothing)"),
                ChatMessage("user", why),
            ],
            json_schema=prompts.ENGAGE_SCHEMA,
            schema_name="reply",
            context={**request.context, "forbidden": bad},
        )
        draft = _draft(ctx, run, retry, lead_id=lead.id, hits=hits)
        drafts.append(draft.reply)
        still = _problems(draft.reply, sources)
        if still:
            append_event(
                session,
                company_id=company.id,
                entity_type="lead",
                entity_id=lead.id,
                type="GuardrailBlocked",
                data={
                    "message_id": str(latest.id),
                    "figures": sorted(set(bad) | set(still)),
                    "drafts": drafts,
                },
                actor="ai",
                now=ctx.now,
            )
            draft = Draft(reply=localized(SAFE_ANSWERS, language), sources=[], answered=False)
            result["guardrail"] = "blocked"
        else:
            result["guardrail"] = "regenerated"
    reply = fit(draft.reply, limit)
    superseded = _superseded(ctx, lead=lead, latest=latest, run=run)
    if superseded is not None:
        return superseded
    _remember(rolling, memory=memory, reply=reply, now=ctx.now)
    sent = send_text(
        ctx,
        lead,
        channel,
        reply,
        send_key=f"ai.reply:{latest.id}",
        meta={
            "purpose": "reply" if result.get("guardrail") != "blocked" else "safe_answer",
            "passages": draft.sources,
            "answers": result["answers"],
            "intent": understood.intent,
            "language": language,
        },
    )
    return {
        "outcome": sent.outcome.value,
        "message_id": str(sent.message_id),
        **result,
        "passages": draft.sources,
        "timings_ms": run.timings(),
    }


def _superseded(ctx: JobContext, *, lead: Lead, latest: Message, run: Run) -> dict[str, Any] | None:
    """Just before sending, with the lead locked: is this answer still wanted? Another job
    may have answered meanwhile, a newer message may have arrived (its job answers all), or
    a person may have paused the AI while the model was writing."""
    crm.lock_lead(ctx.session, lead)
    if lead.ai_paused:
        return _skip("ai_paused", run)
    pending = conversations.unanswered_inbound(
        ctx.session, company_id=lead.company_id, lead_id=lead.id
    )
    if not any(m.id == latest.id for m in pending):
        return _skip("already_answered", run)
    if pending[-1].id != latest.id:
        return _skip("coalesced", run, into=str(pending[-1].id))
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- understanding ----------------------------------------------------------------------------


def _understand(
    ctx: JobContext, run: Run, *, company: Company, lead: Lead, text: str
) -> Understanding:
    keywords = list(company.settings.get("opt_out_keywords") or [])
    request = CompletionRequest(
        task=AITask.extract,
        system=prompts.EXTRACT_SYSTEM.format(company=company.name, currency=company.currency),
        messages=[ChatMessage("user", text)],
        json_schema=UNDERSTANDING_SCHEMA,
        schema_name="understanding",
        context={
            "text": text,
            "opt_out_keywords": keywords,
            "currency": company.currency,
            "default_language": company.default_language,
        },
    )
    data: dict[str, Any] | None = None
    try:
        data = ask(ctx, run, request, lead_id=lead.id).data
    except ProviderError as exc:
        if exc.kind is not ProviderErrorKind.bad_response:
            raise  # rate limits and outages: the job retries with the queue's backoff
    understood = parse_understanding(data)
    if understood is None:
        # An answer outside the schema: the rules understand the message instead.
        run.notes["understanding"] = "rules_fallback"
        understood = understand_by_rules(
            text,
            opt_out_keywords=keywords,
            default_currency=company.currency,
            default_language=company.default_language,
        )
    return understood


def _merge_bant(
    session: Session,
    *,
    company: Company,
    lead: Lead,
    understood: Understanding,
    pending: list[Message],
    now: datetime,
) -> list[str]:
    """BANT into lead.attributes["bant"], each field with the message it came from; relative
    times are resolved against that message's own received_at in the company's timezone."""
    source = _source_message(understood, pending)
    received = _aware(source.received_at or source.created_at)
    local_date = received.astimezone(ZoneInfo(company.timezone)).date()
    current = dict(lead.attributes.get("bant") or {})
    merged, changed = merge_bant(
        current,
        understood,
        message_id=source.id,
        received_at=received,
        local_date=local_date,
        default_currency=company.currency,
    )
    if changed:
        lead.attributes = {**lead.attributes, "bant": merged}
        lead.updated_at = now
        append_event(
            session,
            company_id=company.id,
            entity_type="lead",
            entity_id=lead.id,
            type="BANTUpdated",
            data={"fields": changed, "bant": {k: merged[k] for k in changed}},
            actor="ai",
            now=now,
        )
    return changed


def _source_message(understood: Understanding, pending: list[Message]) -> Message:
    """The message of a burst that said the lead's words (the last one when unsure)."""
    clues = [
        understood.timeline,
        understood.budget.text if understood.budget else None,
        understood.authority.text if understood.authority else None,
    ]
    for message in reversed(pending):
        folded = message.text.casefold()
        if any(clue and clue.casefold() in folded for clue in clues):
            return message
    return pending[-1]


def _apply_stage_rules(
    session: Session, *, lead: Lead, stage: Stage, understood: Understanding, now: datetime
) -> Stage | None:
    pipeline = session.get_one(Pipeline, lead.pipeline_id)
    bant = lead.attributes.get("bant") or {}
    stages = {s.name.lower(): s for s in crm.pipeline_stages(session, pipeline_id=pipeline.id)}
    for rule in crm.effective_stage_rules(pipeline):
        target = stages.get(rule.to.strip().lower())
        if target is None or target.id == stage.id:
            continue
        if rule.from_ and stage.name.lower() not in {n.strip().lower() for n in rule.from_}:
            continue
        if not all(bant_known(bant, f) for f in rule.when.bant_known):
            continue
        if rule.when.intent and understood.intent not in rule.when.intent:
            continue
        why = (
            f"intent {understood.intent}"
            if rule.when.intent
            else "known: " + ", ".join(rule.when.bant_known)
        )
        crm.move_stage(session, lead=lead, stage=target, actor="ai", now=now, reason=why)
        return target
    return None


def _enqueue_summary(session: Session, *, lead: Lead, key: str, now: datetime) -> None:
    enqueue_job(
        session,
        JobType.ai_summary,
        {"lead_id": str(lead.id)},
        company_id=lead.company_id,
        lead_id=lead.id,
        idempotency_key=f"ai.summary:{lead.id}:{key}",
        now=now,
    )


# --- handoff ----------------------------------------------------------------------------------


def _handoff(
    ctx: JobContext,
    run: Run,
    *,
    company: Company,
    lead: Lead,
    channel: Channel,
    latest: Message,
    reason: str,
    language: str,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Pause the AI for the lead and tell them a person takes over. The pause and its event
    are committed by the send itself, with the outbound row, before the provider is called:
    a deferred send (pacing) rolls all of it back for the rerun, and a crash after the call
    leaves the lead paused and the message `unknown`, never unpaused or sent twice."""
    superseded = _superseded(ctx, lead=lead, latest=latest, run=run)
    if superseded is not None:
        return superseded
    text = company.handoff_message or localized(HANDOFF_MESSAGES, language)
    if reason == "unknown_answer":
        # Say plainly that we do not know, rather than leave the question hanging.
        text = f"{localized(DO_NOT_KNOW, language)} {text}"
    crm.set_ai_paused(
        ctx.session, lead=lead, paused=True, reason=f"handoff: {reason}", actor="ai", now=ctx.now
    )
    append_event(
        ctx.session,
        company_id=company.id,
        entity_type="lead",
        entity_id=lead.id,
        type="HandoffRequested",
        data={"reason": reason, "message_id": str(latest.id)},
        actor="ai",
        now=ctx.now,
    )
    outcome: dict[str, Any]
    try:
        sent = send_text(
            ctx,
            lead,
            channel,
            text,
            send_key=f"ai.handoff:{latest.id}",
            meta={"purpose": "handoff", "answers": result["answers"], "reason": reason},
        )
        outcome = {"message_id": str(sent.message_id), "sent": sent.outcome.value}
    except PermanentJobError as exc:
        # Refused (outside the window, suppressed): the refusal was committed with the pause,
        # and the team still has to take over.
        outcome = {"sent": "refused", "refusal": exc.reason}
    return {
        "outcome": "handed_off",
        "reason": reason,
        **outcome,
        **result,
        "timings_ms": run.timings(),
    }


# --- the reply --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    reply: str
    sources: list[str]
    answered: bool


def _passage(hit: Hit) -> dict[str, Any]:
    return {
        "id": str(hit.passage_id),
        "title": hit.title,
        "heading": hit.heading,
        "content": hit.content,
    }


def _engage_request(
    *,
    company: Company,
    lead: Lead,
    stage: Stage,
    config: StageAIConfig,
    channel: Channel,
    understood: Understanding,
    text: str,
    hits: list[Hit],
    memory: list[Message],
    summary: str,
    limit: int,
) -> CompletionRequest:
    bant = lead.attributes.get("bant") or {}
    passages = [_passage(hit) for hit in hits]
    known = {
        "name": lead.name,
        "bant": {k: v for k, v in bant.items() if isinstance(v, dict)},
        "attributes": {k: v for k, v in lead.attributes.items() if k not in ("bant", "ai_summary")},
    }
    system = prompts.ENGAGE_SYSTEM.format(
        company=company.name,
        channel=channel.value,
        card=prompts.card_text(company.company_card),
        stage=stage.name,
        goal=config.goal or "move the lead toward a purchase",
        tone=config.tone or "warm, brief, professional",
        ask_next=f"Ask next: {config.ask_next}\n" if config.ask_next else "",
        avoid=f"Never discuss: {', '.join(config.avoid)}\n" if config.avoid else "",
        lead=prompts.card_text(known),
        passages=prompts.passages_text(passages),
        language=prompts.language_name(understood.language),
        max_chars=limit,
    )
    transcript = "\n".join(f"{'Lead' if m.direction == 'in' else 'Us'}: {m.text}" for m in memory)
    # The rolling summary of AISession: the memory of what fell out of the recent turns.
    earlier = f"Summary of the conversation so far: {summary}\n\n" if summary.strip() else ""
    user = f"{earlier}Conversation:\n{transcript}\n\nThe lead's unanswered message(s):\n{text}"
    return CompletionRequest(
        task=AITask.engage,
        system=system,
        messages=[ChatMessage("user", user)],
        json_schema=prompts.ENGAGE_SCHEMA,
        schema_name="reply",
        context={
            "question": text,
            "language": understood.language,
            "intent": understood.intent,
            "lead": {"name": lead.name},
            "company": {"name": company.name, "card": company.company_card},
            "passages": passages,
            "stage": {**config.model_dump(mode="json"), "max_chars": limit, "name": stage.name},
            "bant": bant,
        },
    )


def _draft(
    ctx: JobContext, run: Run, request: CompletionRequest, *, lead_id: uuid.UUID, hits: list[Hit]
) -> Draft:
    completion = ask(ctx, run, request, lead_id=lead_id)
    data = completion.data or {}
    known = {str(hit.passage_id) for hit in hits}
    reply = data.get("reply") if isinstance(data.get("reply"), str) else None
    if reply is None:
        # Not the schema: take the text as the reply, still checked by the guardrail.
        reply = completion.text
    raw_sources = data.get("sources") or data.get("passage_ids") or []
    sources = [str(s).strip("[] ") for s in raw_sources if isinstance(s, str)]
    return Draft(
        reply=reply.strip(),
        sources=[s for s in dict.fromkeys(sources) if s in known],
        answered=bool(data.get("answered", True)),
    )


EMPTY = "(an empty reply)"


def _problems(reply: str, sources: list[str]) -> list[str]:
    """Why a draft may not be sent: figures no source states, or no text at all."""
    return ungrounded(reply, sources) if reply.strip() else [EMPTY]


def _grounding(
    company: Company, hits: list[Hit], memory: list[Message], pending: list[Message]
) -> list[str]:
    """Where a reply's figures may come from: the passages it was given, the company card and
    the lead's own words."""
    return [
        *(f"{hit.heading}\n{hit.content}" for hit in hits),
        *card_values(company.company_card),
        company.name,
        *(m.text for m in memory if m.direction == "in"),
        *(m.text for m in pending),
    ]


def card_values(card: Any) -> Iterable[str]:
    if isinstance(card, dict):
        for value in card.values():
            yield from card_values(value)
    elif isinstance(card, list):
        for value in card:
            yield from card_values(value)
    elif card is not None:
        yield str(card)


# --- memory -----------------------------------------------------------------------------------


def _memory(session: Session, *, lead: Lead, now: datetime) -> list[Message]:
    """The recent turns an LLM reads, within MEMORY_WORDS; older ones live in the summary."""
    recent = conversations.recent_messages(
        session, company_id=lead.company_id, lead_id=lead.id, limit=MEMORY_MESSAGES
    )
    kept: list[Message] = []
    budget = MEMORY_WORDS
    for message in reversed(recent):
        budget -= len(message.text.split())
        if budget < 0 and kept:
            break
        kept.append(message)
    return list(reversed(kept))


def ai_session(session: Session, *, lead: Lead, now: datetime) -> AISession:
    """The lead's AI memory (recent turns and the rolling summary), made on first use."""
    row = session.scalars(select(AISession).where(AISession.lead_id == lead.id)).first()
    if row is None:
        row = AISession(
            company_id=lead.company_id, lead_id=lead.id, created_at=now, summary="", turns={}
        )
        session.add(row)
    return row


def _remember(row: AISession, *, memory: list[Message], reply: str, now: datetime) -> None:
    """AISession: the turns the reply was written from, and its size in tokens (words)."""
    turns: list[dict[str, str | None]] = [
        {"id": str(m.id), "direction": m.direction, "text": m.text[:1000]} for m in memory
    ]
    turns.append({"id": None, "direction": "out", "text": reply})
    row.turns = {"recent": turns}
    row.token_count = sum(len(str(t["text"]).split()) for t in turns) + len(row.summary.split())
    row.updated_at = now
