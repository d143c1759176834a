"""ai.engage: the AI salesperson's answer to a lead's unanswered messages.

One run is a pipeline of named steps (docs/ai.md, "The engage pipeline"):

    load -> preflight -> understand -> learn -> handoff? -> retrieve -> draft -> guard -> send

`load` finds what to answer and whether to answer at all; `preflight` asks the channel router
before any model is called, so a send that must wait or may not happen costs nothing;
`understand` reads the messages (intent, language, BANT, handoff, opt-out); `learn` turns that
into what changes for the lead, by rules, held in memory; `retrieve`, `draft` and `guard`
write a reply grounded in the company's passages and check its every figure; `send` goes
through the router, which asks again, and writes what the run learnt with the reply. Steps
that call out are generators (db/phases.py): the runner commits before each call and none is
made with a transaction open. Decisions come from the understanding, never from the reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from shvya.ai import memory, prompts
from shvya.ai import service as ai
from shvya.ai.figures import card_values, ungrounded
from shvya.ai.lexicon import TOPICS, concepts_in
from shvya.ai.providers import (
    AITask,
    ChatMessage,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
)
from shvya.ai.runs import Run, ask, job_lead, payload_id, send_text
from shvya.ai.text import fit, markup_in
from shvya.ai.understanding import (
    UNDERSTANDING_SCHEMA,
    UNREAD_SCAN,
    Read,
    Understanding,
    bant_known,
    merge_bant,
    merge_read,
    parse_understanding,
    read_unread,
    understand_by_rules,
)
from shvya.channels import service as channels
from shvya.channels.policies import Allow, Defer, Refuse, SendKind
from shvya.channels.schemas import OutboundContent
from shvya.conversations import service as conversations
from shvya.conversations.models import Message
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, Pipeline, Stage, SuppressionSource
from shvya.crm.schemas import BANT_FIELDS, StageAIConfig
from shvya.db.phases import Phases
from shvya.events.service import append_lead_event
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


# The answer when the model's second draft is still outside the reply schema (JSON without
# a reply, markup, not JSON at all): the lead never sees the raw text (docs/ai.md 5.7).
NO_DRAFT_ANSWERS = {
    "en": (
        "Sorry, I couldn't put a proper answer together just now. A member of our team can "
        "help you with this. Shall I ask them to get in touch?"
    ),
    "es": (
        "Perdona, ahora mismo no he podido preparar una buena respuesta. Una persona de nuestro "
        "equipo puede ayudarte con esto. ¿Quieres que te contacte?"
    ),
    "hinglish": (
        "Sorry, abhi main aapko sahi jawab nahi de paaya. Hamari team ka ek member isme aapki "
        "help kar sakta hai. Kya main unhe aapse contact karne ko kahun?"
    ),
    "hi": (
        "माफ़ कीजिए, अभी मैं आपको ठीक से जवाब नहीं दे पाया। हमारी टीम का एक सदस्य इसमें आपकी मदद कर "
        "सकता है। क्या मैं उनसे आपसे संपर्क करने को कहूँ?"
    ),
}


def localized(table: dict[str, str], language: str) -> str:
    return table.get(language, table["en"])


@dataclass
class Turn:
    """What one run answers: the lead's unanswered messages, and where the answer goes."""

    company: Company
    lead: Lead
    pending: list[Message]  # computed once per run, oldest first
    stage: Stage
    config: StageAIConfig
    channel: Channel
    result: dict[str, Any] = field(default_factory=dict)
    # An email the company does not let the AI answer itself: the reply is drafted and kept on
    # the lead's message for a person to send, never sent (docs/email-inbound.md).
    suggest_only: bool = False

    @property
    def latest(self) -> Message:
        return self.pending[-1]

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.pending if m.text.strip())


@dataclass(frozen=True)
class Learning:
    """What the run understood that changes the lead. Held in memory until the send writes
    it with the reply (or with the router's refusal): never before the draft, never without
    the reply, so a deferred run learns it again and records it once."""

    understood: Understanding
    source: Message  # the message of the burst that said the lead's words
    stage: Stage  # the stage the lead's reply is written for (after any rule's move)
    config: StageAIConfig
    # Earlier lead messages no understanding had read (imported history, messages that came
    # while the AI was paused), read by the rules: BANT they state counts too (docs/ai.md 5.4).
    earlier: list[Read] = field(default_factory=list)


def engage(ctx: JobContext) -> Phases[dict[str, Any]]:
    run = Run()
    loaded = load(ctx, run)
    if isinstance(loaded, RetryHandoff):
        return (yield from resend_handoff(ctx, run, loaded))
    if not isinstance(loaded, Turn):
        return loaded
    turn = loaded
    verdict = preflight(ctx, run, turn)
    if isinstance(verdict, dict):
        return verdict
    try:
        if isinstance(verdict, Refuse):
            # No reply may go, so no model is asked; the rules still read the messages, so a
            # lead who asked to stop or for a person is not ignored.
            understood = understand_without_model(run, turn)
        else:
            if not turn.suggest_only:  # no typing indicator for a reply nobody sends now
                turn.result["typing"] = yield from channels.show_typing(
                    ctx.session,
                    company_id=turn.company.id,
                    channel=turn.channel,
                    reply_to_external_id=turn.latest.external_id,
                    settings=ctx.settings,
                )
            understood = yield from understand(ctx, run, turn)
        learning = learn(ctx.session, turn, understood)
        if understood.opt_out:
            return opt_out(ctx, run, turn, learning)
        if (
            understood.handoff
            and understood.handoff_reason in learning.config.handoff_on
            and not turn.suggest_only  # the lead waits for a person already (email_reply)
        ):
            # A refused preflight refuses the handoff message too: the pause stands with it.
            return (yield from hand_off(ctx, run, turn, learning, understood.handoff_reason))
        if isinstance(verdict, Refuse):
            return refuse(ctx, turn, learning, verdict)
        if verdict.template is not None:
            # Outside WhatsApp's window the answer can only be the re-engagement template,
            # whatever a draft would say: none is written.
            template = OutboundContent(template=verdict.template)
            return (yield from send(ctx, run, turn, learning, template, Draft("", [], True)))
        turns = memory.recent_turns(ctx.session, lead=turn.lead)
        hits = yield from retrieve(ctx, run, turn)
        request = engage_request(ctx.session, turn, learning, hits, turns)
        first = yield from draft(ctx, run, request, lead=turn.lead, hits=hits)
        unknown = not first.answered and asks_something(understood, turn.text)
        if unknown and "unknown_answer" in learning.config.handoff_on and not turn.suggest_only:
            return (yield from hand_off(ctx, run, turn, learning, "unknown_answer"))
        checked = yield from guard(ctx, run, turn, request, first, hits, turns)
        reply = fit(checked.reply, _limit(turn, learning))
        content = OutboundContent(text=reply, reengage_with_template=True)
        if turn.channel is Channel.email:
            content = _email_reply(turn, reply)
        if turn.suggest_only:
            return suggest(ctx, run, turn, learning, content, checked, turns)
        return (yield from send(ctx, run, turn, learning, content, checked, turns))
    except ProviderError as exc:
        raise ai.job_failure(exc) from exc


# --- load and preflight -----------------------------------------------------------------------


@dataclass(frozen=True)
class RetryHandoff:
    """A handoff message to send again: the lead is paused already, nothing is to learn."""

    lead: Lead
    message: Message


def load(ctx: JobContext, run: Run) -> Turn | RetryHandoff | dict[str, Any]:
    """The turn to answer, or the outcome of a run with nothing to do."""
    session = ctx.session
    company = tenancy.get_company(session, company_id=ctx.job.company_id)
    lead = job_lead(ctx)
    message_id = payload_id(ctx.job.payload, "message_id")
    for key in (f"ai.reply:{message_id}", f"ai.handoff:{message_id}"):
        # A run of this job that died after its send was committed: unknown, never resent.
        if channels.settle_interrupted_send(
            session, company_id=company.id, send_key=key, now=ctx.now
        ):
            return {"outcome": "unknown", "send_key": key, "timings_ms": run.timings()}
    if not company.ai_enabled:
        return run.skip("ai_disabled")
    message = session.get(Message, message_id)
    if message is not None and message.meta.get("auto_submitted"):
        # A program's mail (an out-of-office, a bounce notice): answering it can start a loop
        # of automatic replies (RFC 3834; docs/email-inbound.md).
        return run.skip("auto_reply", header=message.meta["auto_submitted"])
    suggest_only = _suggest_only(session, company, message_id)
    if lead.ai_paused and not (suggest_only and lead.ai_paused_reason == crm.EMAIL_REPLY_REASON):
        # Paused by this job's own handoff, whose message then failed in a way worth
        # retrying: the lead still gets it.
        handoff = conversations.find_outbound_by_send_key(
            session, company_id=company.id, send_key=f"ai.handoff:{message_id}"
        )
        if handoff is not None and handoff.status == "failed" and handoff.meta.get("retryable"):
            return RetryHandoff(lead=lead, message=handoff)
        return run.skip("ai_paused")
    pending = conversations.unanswered_inbound(session, company_id=company.id, lead_id=lead.id)
    if not any(m.id == message_id for m in pending):
        return run.skip("already_answered")
    latest = pending[-1]
    if latest.id != message_id:
        # A later message of the same burst has its own job: that one answers them all.
        return run.skip("coalesced", into=str(latest.id))
    stage = session.get_one(Stage, lead.stage_id)
    config = crm.stage_ai_config(stage)
    # The job was enqueued due at this time; a stage whose quiet period grew since waits on.
    due = conversations.engage_due_at(
        received_at=latest.received_at,
        created_at=latest.created_at,
        quiet_seconds=float(config.quiet_seconds),
    )
    if ctx.now < due:
        raise DeferJob(due, "quiet_period")
    return Turn(
        company=company,
        lead=lead,
        pending=pending,
        stage=stage,
        config=config,
        channel=Channel(latest.channel),
        result={"answers": [str(m.id) for m in pending]},
        suggest_only=suggest_only,
    )


def _suggest_only(session: Session, company: Company, message_id: Any) -> bool:
    """Email is for scheduled work: an answer to an inbound email is only suggested unless
    the company lets the AI send email replies (docs/email-inbound.md). Decided before the
    router or any model is asked, and again whenever the job runs (a person resuming the AI
    does not make it email on its own)."""
    message = session.get(Message, message_id)
    return (
        message is not None
        and message.channel == Channel.email.value
        and not tenancy.ai_email_replies(company)
    )


def preflight(ctx: JobContext, run: Run, turn: Turn) -> Allow | Refuse | dict[str, Any]:
    """The router's verdict before any model call. A deferral reschedules the job here,
    nothing spent; a suppressed lead has nothing to answer; any other refusal is returned, for
    the run to read the messages without a model before it ends with the router's reason."""
    if turn.suggest_only:
        return Allow()  # nothing is sent: a suggestion waits for no window or quiet hours
    verdict = channels.preflight(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        channel=turn.channel,
        kind=SendKind.reply,
        settings=ctx.settings,
        now=ctx.now,
    )
    if isinstance(verdict, Defer):
        _refuse_preflight(ctx, turn, verdict)
    if isinstance(verdict, Refuse) and verdict.reason == "suppressed":
        return run.skip("suppressed")  # an opted-out lead: nothing to answer, nothing wrong
    return verdict


def refuse(ctx: JobContext, turn: Turn, learning: Learning, verdict: Refuse) -> NoReturn:
    """The preflight's refusal, as the send's would be: SendRefused and the job failed for
    good, with what the run learnt (the rules' reading of the messages) kept."""
    crm.lock_lead(ctx.session, turn.lead)
    _refuse_preflight(
        ctx, turn, verdict, with_send=lambda: record_learning(ctx.session, turn, learning, ctx.now)
    )


def _refuse_preflight(
    ctx: JobContext, turn: Turn, verdict: Defer | Refuse, with_send: channels.WithSend | None = None
) -> NoReturn:
    channels.refuse_preflight(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        verdict=verdict,
        now=ctx.now,
        with_send=with_send,
    )


def resend_handoff(ctx: JobContext, run: Run, retry: RetryHandoff) -> Phases[dict[str, Any]]:
    """The handoff message again, as it was written, through the router."""
    message = retry.message
    sent = yield from channels.send_message(
        ctx.session,
        company_id=retry.lead.company_id,
        lead_id=retry.lead.id,
        channel=Channel(message.channel),
        content=OutboundContent.model_validate(message.meta["content"]),
        send_key=str(message.send_key),
        settings=ctx.settings,
        now=ctx.clock.now,
        actor="ai",
        meta={k: v for k, v in message.meta.items() if k not in ("content", "kind")},
    )
    return {
        "outcome": "handed_off",
        "reason": message.meta.get("reason"),
        "message_id": str(sent.message_id),
        "sent": sent.outcome.value,
        "timings_ms": run.timings(),
    }


# --- understand and learn ---------------------------------------------------------------------


def understand(ctx: JobContext, run: Run, turn: Turn) -> Phases[Understanding]:
    """Intent, language, BANT, handoff and opt-out from the model's structured output, or
    from the rules when its answer is outside the schema."""
    company, text = turn.company, turn.text
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
        data = (yield from ask(ctx, run, request, lead_id=turn.lead.id)).data
    except ProviderError as exc:
        if exc.kind is not ProviderErrorKind.bad_response:
            raise  # rate limits and outages: the job retries with the queue's backoff
    understood = parse_understanding(data)
    if understood is None:
        run.notes["understanding"] = "rules_fallback"
        understood = understand_by_rules(
            text,
            opt_out_keywords=keywords,
            default_currency=company.currency,
            default_language=company.default_language,
        )
    turn.result.update(intent=understood.intent, language=understood.language)
    return understood


def understand_without_model(run: Run, turn: Turn) -> Understanding:
    """The rules' reading of the messages (opt-out, a request for a person, BANT), for a run
    that may not reply and so spends nothing on a model."""
    company = turn.company
    run.notes["understanding"] = "rules"
    understood = understand_by_rules(
        turn.text,
        opt_out_keywords=list(company.settings.get("opt_out_keywords") or []),
        default_currency=company.currency,
        default_language=company.default_language,
    )
    turn.result.update(intent=understood.intent, language=understood.language)
    return understood


def learn(session: Session, turn: Turn, understood: Understanding) -> Learning:
    """What the understanding changes, decided by rules: the lead's BANT and the stage its
    reply is written for. Nothing is written here (record_learning writes it)."""
    source = _source_message(understood, turn.pending)
    company = turn.company
    earlier = read_unread(
        conversations.recent_messages(
            session, company_id=company.id, lead_id=turn.lead.id, limit=UNREAD_SCAN
        ),
        skip={m.id for m in turn.pending},
        default_currency=company.currency,
        default_language=company.default_language,
    )
    bant, _ = _merged_bant(company, turn.lead, understood, source, earlier)
    move = _stage_rule(session, lead=turn.lead, stage=turn.stage, understood=understood, bant=bant)
    stage = move[0] if move is not None else turn.stage
    return Learning(
        understood=understood,
        source=source,
        stage=stage,
        config=crm.stage_ai_config(stage) if move is not None else turn.config,
        earlier=earlier,
    )


def record_learning(session: Session, turn: Turn, learning: Learning, now: datetime) -> None:
    """Write what the run learnt on the lead as it is now (the send's check locked it):
    language, BANT (BANTUpdated), a stage move (StageChanged) and the summaries it calls for."""
    lead, company, understood = turn.lead, turn.company, learning.understood
    if lead.attributes.get("language") != understood.language:
        lead.attributes = {**lead.attributes, "language": understood.language}
    merged, changed = _merged_bant(company, lead, understood, learning.source, learning.earlier)
    turn.result["bant_changed"] = changed
    read = {item.message_id for item in learning.earlier}
    for message in [*turn.pending, *(session.get_one(Message, i) for i in read)]:
        # Understood: no later run or summary reads it by the rules again (docs/ai.md 4).
        message.meta = {**message.meta, "understood": True}
    if changed:
        lead.attributes = {**lead.attributes, "bant": merged}
        crm.record_lead_change(
            session,
            lead,
            type="BANTUpdated",
            data={"fields": changed, "bant": {k: merged[k] for k in changed}},
            actor="ai",
            now=now,
        )
    current = session.get_one(Stage, lead.stage_id)
    move = _stage_rule(session, lead=lead, stage=current, understood=understood, bant=merged)
    if move is not None:
        target, why = move
        crm.move_stage(session, lead=lead, stage=target, actor="ai", now=now, reason=why)
        turn.result["stage"] = target.name
        _enqueue_summary(session, lead=lead, key=f"stage:{target.id}:{turn.latest.id}", now=now)
    inbound = conversations.count_inbound(session, company_id=company.id, lead_id=lead.id)
    every = tenancy.summary_every(company)
    if inbound and inbound % every == 0:
        _enqueue_summary(session, lead=lead, key=f"count:{inbound}", now=now)


def _merged_bant(
    company: Company,
    lead: Lead,
    understood: Understanding,
    source: Message,
    earlier: list[Read] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """BANT after this burst (and the earlier messages no understanding had read), each field
    with the message it came from; relative times are resolved against that message's own
    received_at in the company's timezone."""
    received = _aware(source.received_at or source.created_at)
    base, changed = merge_read(
        dict(lead.attributes.get("bant") or {}),
        earlier or [],
        timezone=company.timezone,
        default_currency=company.currency,
    )
    merged, fields = merge_bant(
        base,
        understood,
        message_id=source.id,
        received_at=received,
        local_date=received.astimezone(ZoneInfo(company.timezone)).date(),
        default_currency=company.currency,
    )
    return merged, [*changed, *(f for f in fields if f not in changed)]


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


def _stage_rule(
    session: Session, *, lead: Lead, stage: Stage, understood: Understanding, bant: dict[str, Any]
) -> tuple[Stage, str] | None:
    """The stage the pipeline's first matching rule moves the lead to, and why; None: stay."""
    pipeline = session.get_one(Pipeline, lead.pipeline_id)
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
        return target, why
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


def opt_out(ctx: JobContext, run: Run, turn: Turn, learning: Learning) -> dict[str, Any]:
    """A lead who asked to stop: suppressed, one confirmation queued, never a sales reply."""
    crm.lock_lead(ctx.session, turn.lead)  # the lead as it is now: others wrote meanwhile
    language = learning.understood.language
    if turn.lead.attributes.get("language") != language:
        turn.lead.attributes = {**turn.lead.attributes, "language": language}
    contact = crm.lead_contact(
        ctx.session, company_id=turn.company.id, lead_id=turn.lead.id, channel=turn.channel
    )
    if contact is None:
        raise PermanentJobError(
            f"the lead has no {turn.channel.value} contact", reason="no_contact"
        )
    conversations.record_opt_out(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        channel=turn.channel,
        address=contact.value,
        message_id=turn.latest.id,
        source=SuppressionSource.keyword,
        actor="ai",
        now=ctx.now,
    )
    return {"outcome": "opted_out", **turn.result, "timings_ms": run.timings()}


# --- handoff ----------------------------------------------------------------------------------


def hand_off(
    ctx: JobContext, run: Run, turn: Turn, learning: Learning, reason: str
) -> Phases[dict[str, Any]]:
    """Pause the AI for the lead and tell them a person takes over. The pause, its event and
    what the run learnt are written by the send, with the outbound row, before the provider is
    called: a deferred send rolls all of it back for the rerun, and a crash after the call
    leaves the lead paused and the message `unknown`, never unpaused or sent twice."""
    superseded = still_wanted(ctx, run, turn)
    if superseded is not None:
        return superseded
    language = learning.understood.language
    text = turn.company.handoff_message or localized(HANDOFF_MESSAGES, language)
    if reason == "unknown_answer":
        # Say plainly that we do not know, rather than leave the question hanging.
        text = f"{localized(DO_NOT_KNOW, language)} {text}"

    def with_send() -> None:
        record_learning(ctx.session, turn, learning, ctx.now)
        crm.set_ai_paused(
            ctx.session,
            lead=turn.lead,
            paused=True,
            reason=f"handoff: {reason}",
            actor="ai",
            now=ctx.now,
        )
        append_lead_event(
            ctx.session,
            company_id=turn.company.id,
            lead_id=turn.lead.id,
            type="HandoffRequested",
            data={"reason": reason, "message_id": str(turn.latest.id)},
            actor="ai",
            now=ctx.now,
        )

    outcome: dict[str, Any]
    try:
        sent = yield from send_text(
            ctx,
            turn.lead,
            turn.channel,
            text,
            send_key=f"ai.handoff:{turn.latest.id}",
            meta={"purpose": "handoff", "answers": turn.result["answers"], "reason": reason},
            with_send=with_send,
        )
        outcome = {"message_id": str(sent.message_id), "sent": sent.outcome.value}
    except PermanentJobError as exc:
        # Refused (outside the window, suppressed): the pause was written with the refusal,
        # and the team still has to take over.
        outcome = {"sent": "refused", "refusal": exc.reason}
    return {
        "outcome": "handed_off",
        "reason": reason,
        **outcome,
        **turn.result,
        "timings_ms": run.timings(),
    }


def still_wanted(ctx: JobContext, run: Run, turn: Turn) -> dict[str, Any] | None:
    """Just before sending, with the lead locked (the run's one lock): is this answer still
    wanted? A newer message may have arrived (its own job answers them all), or a person may
    have paused the AI while the model was writing. None: send."""
    crm.lock_lead(ctx.session, turn.lead)
    if turn.lead.ai_paused and not (
        turn.suggest_only and turn.lead.ai_paused_reason == crm.EMAIL_REPLY_REASON
    ):
        return run.skip("ai_paused")
    newest = conversations.newest_answerable_inbound(
        ctx.session, company_id=turn.company.id, lead_id=turn.lead.id
    )
    if newest is not None and newest != turn.latest.id:
        return run.skip("coalesced", into=str(newest))
    return None


# --- retrieve, draft, guard -------------------------------------------------------------------


def asks_something(understood: Understanding, text: str) -> bool:
    """Whether the messages ask for something the knowledge base should answer: a question,
    a price inquiry, or a request naming a topic of the sales lexicon ("is there a free
    trial?", "can I get a demo?"), which a person must follow up when it cannot; a wish to
    visit ("can I stop by tomorrow?") is not (docs/ai.md 5.5)."""
    if understood.intent in ("question", "price_inquiry"):
        return True
    return understood.intent == "demo_request" and bool(set(concepts_in(text)) & TOPICS)


@dataclass(frozen=True)
class Draft:
    reply: str
    sources: list[str]
    answered: bool
    problem: str | None = None  # why the model's answer is outside the reply schema
    raw: str = ""  # the model's answer as it came, kept for the GuardrailBlocked event
    is_safe_answer: bool = False


def retrieve(ctx: JobContext, run: Run, turn: Turn) -> Phases[list[Hit]]:
    """The company's passages that best answer the messages (the query's embedding is a
    call). A lead writing in another language than the knowledge base's has the question
    rewritten into that language first when the company's `rewrite` model is an LLM (one
    call), and both wordings are searched; the sales lexicon reads it in every case
    (docs/ai.md 5.6)."""
    session, company = ctx.session, turn.company
    kb_language = knowledge.knowledge_language(session, company_id=company.id)
    language = str(turn.result.get("language") or company.default_language)
    rewritten = None
    if kb_language is not None and language != kb_language:
        chosen = ai.model_settings(session, company_id=company.id, task=AITask.rewrite)
        if chosen.provider != ai.DEFAULT_PROVIDER:
            rewritten = yield from rewrite_query(ctx, run, turn, kb_language)
            turn.result["query_rewritten_to"] = kb_language
    hits: list[Hit] = yield from knowledge.search_knowledge(
        session,
        company_id=company.id,
        query=turn.text,
        k=PASSAGES,
        backend=embedding_backend(ctx.settings),
        now=ctx.now,
        lead_id=turn.lead.id,
        job_id=ctx.job.id,
        rewritten=rewritten,
        language=kb_language,
    )
    return hits


def rewrite_query(ctx: JobContext, run: Run, turn: Turn, language: str) -> Phases[str | None]:
    """The lead's messages as a search query in the knowledge base's language (the `rewrite`
    call, recorded in ai_usage like every call); None when the answer cannot be used, and
    the lexicon's reading is searched alone."""
    request = CompletionRequest(
        task=AITask.rewrite,
        system=prompts.REWRITE_SYSTEM.format(
            language=prompts.language_name(language),
            company=tenancy.lead_facing_name(turn.company) or "the company",
        ),
        messages=[ChatMessage("user", turn.text)],
        context={"question": turn.text, "language": language},
    )
    try:
        completion = yield from ask(ctx, run, request, lead_id=turn.lead.id)
    except ProviderError as exc:
        if exc.kind is not ProviderErrorKind.bad_response:
            raise  # rate limits and outages: the job retries with the queue's backoff
        return None
    return completion.text.strip()[:MAX_REWRITE_CHARS] or None


MAX_REWRITE_CHARS = 1000


def _passage(hit: Hit) -> dict[str, Any]:
    return {
        "id": str(hit.passage_id),
        "title": hit.title,
        "heading": hit.heading,
        "content": hit.content,
    }


def _limit(turn: Turn, learning: Learning) -> int:
    return min(learning.config.max_chars, CHANNEL_LIMITS[turn.channel])


def engage_request(
    session: Session, turn: Turn, learning: Learning, hits: list[Hit], turns: list[Message]
) -> CompletionRequest:
    """The reply's prompt: the company card, the stage's brief, what is known of the lead
    (with what this run learnt), the passages, the recent turns and the rolling summary."""
    company, lead, stage, config = turn.company, turn.lead, learning.stage, learning.config
    understood, limit = learning.understood, _limit(turn, learning)
    bant, _ = _merged_bant(company, lead, understood, learning.source, learning.earlier)
    # What the lead's unanswered messages told, to be said back (not what history held).
    _, told = _merged_bant(company, lead, understood, learning.source)
    passages = [_passage(hit) for hit in hits]
    known_bant = {k: v for k, v in bant.items() if isinstance(v, dict)}
    known = {
        "name": lead.name,
        "bant": known_bant,
        "attributes": {k: v for k, v in lead.attributes.items() if k not in ("bant", "ai_summary")},
    }
    name = tenancy.lead_facing_name(company)
    last_reply = next((m.text for m in reversed(turns) if m.direction == "out"), "")
    # The lead's message before this burst: what "and Premium?" continues (docs/ai.md 5.5).
    pending = {m.id for m in turn.pending}
    previous_question = next(
        (m.text for m in reversed(turns) if m.direction == "in" and m.id not in pending), ""
    )
    system = prompts.ENGAGE_SYSTEM.format(
        company=name or "a company whose name is not set (never name it)",
        channel=turn.channel.value,
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
        unknown=", ".join(f for f in BANT_FIELDS if f not in known_bant) or "nothing",
        last_question=prompts.last_question(last_reply) or "(none)",
    )
    transcript = "\n".join(f"{'Lead' if m.direction == 'in' else 'Us'}: {m.text}" for m in turns)
    # The rolling summary of AISession: the memory of what fell out of the recent turns.
    row = memory.find_ai_session(session, lead=lead)
    summary = row.summary if row is not None else ""
    earlier = f"Summary of the conversation so far: {summary}\n\n" if summary.strip() else ""
    user = f"{earlier}Conversation:\n{transcript}\n\nThe lead's unanswered message(s):\n{turn.text}"
    return CompletionRequest(
        task=AITask.engage,
        system=system,
        messages=[ChatMessage("user", user)],
        json_schema=prompts.ENGAGE_SCHEMA,
        schema_name="reply",
        context={
            "question": turn.text,
            "language": understood.language,
            "intent": understood.intent,
            "lead": {"name": lead.name},
            "company": {"name": name, "card": company.company_card},
            "passages": passages,
            "stage": {**config.model_dump(mode="json"), "max_chars": limit, "name": stage.name},
            "bant": bant,
            "learnt": {field: bant[field] for field in told if field in bant},
            "last_reply": last_reply,
            "previous_question": previous_question,
        },
    )


def draft(
    ctx: JobContext, run: Run, request: CompletionRequest, *, lead: Lead, hits: list[Hit]
) -> Phases[Draft]:
    """The model's reply, the passages it says it used (only ones it was given), and whether
    it could answer. An answer outside the reply schema (JSON without a reply, a reply that is
    JSON, HTML or a code fence, not JSON at all) is asked for once more, then replaced by a
    safe answer: a lead never sees raw model output (docs/ai.md 5.7)."""
    first = yield from _ask_draft(ctx, run, request, lead=lead, hits=hits)
    if first.problem is None:
        return _without_repeated_question(first, str(request.context.get("last_reply") or ""))
    retry = replace(
        request,
        messages=[
            *request.messages,
            ChatMessage("assistant", first.raw or "(nothing)"),
            ChatMessage("user", prompts.SCHEMA_RETRY.format(problem=first.problem)),
        ],
    )
    second = yield from _ask_draft(ctx, run, retry, lead=lead, hits=hits)
    if second.problem is None:
        run.notes["draft"] = "redrafted"
        return _without_repeated_question(second, str(request.context.get("last_reply") or ""))
    run.notes["draft"] = "safe_answer"
    append_lead_event(
        ctx.session,
        company_id=lead.company_id,
        lead_id=lead.id,
        type="GuardrailBlocked",
        data={
            "reason": "outside_schema",
            "figures": [],
            "problems": [first.problem, second.problem],
            "drafts": [first.raw, second.raw],
        },
        actor="ai",
        now=ctx.now,
    )
    language = str(request.context.get("language") or "en")
    return Draft(localized(NO_DRAFT_ANSWERS, language), [], True, is_safe_answer=True)


def _without_repeated_question(draft: Draft, last_reply: str) -> Draft:
    """A reply never ends with the question our last message ended with (docs/ai.md 5.7):
    a model that asks it again has it cut, when the reply says something else too."""
    closing = prompts.last_question(draft.reply)
    if not closing or closing != prompts.last_question(last_reply) or closing == draft.reply:
        return draft
    return replace(draft, reply=draft.reply[: -len(closing)].rstrip())


def _ask_draft(
    ctx: JobContext, run: Run, request: CompletionRequest, *, lead: Lead, hits: list[Hit]
) -> Phases[Draft]:
    try:
        completion = yield from ask(ctx, run, request, lead_id=lead.id)
    except ProviderError as exc:
        if exc.kind is not ProviderErrorKind.bad_response:
            raise  # rate limits and outages: the job retries with the queue's backoff
        # Not JSON at all: a code-fenced object, an HTML page, prose. Its call is recorded.
        return Draft("", [], True, problem=f"not the JSON object asked for ({exc.message})")
    data = completion.data
    known = {str(hit.passage_id) for hit in hits}
    if data is None:
        reply: str | None = completion.text  # a provider without structured output
    else:
        reply = data.get("reply") if isinstance(data.get("reply"), str) else None
    problem = "a JSON object without a reply" if reply is None else markup_in(reply)
    raw_sources = (data or {}).get("sources") or []
    sources = [str(s).strip("[] ") for s in raw_sources if isinstance(s, str)]
    return Draft(
        reply=(reply or "").strip() if problem is None else "",
        sources=[s for s in dict.fromkeys(sources) if s in known],
        answered=bool((data or {}).get("answered", True)),
        problem=problem,
        raw=completion.text,
    )


EMPTY = "(an empty reply)"


@dataclass(frozen=True)
class Grounding:
    """Where a reply's figures may come from (docs/ai.md 6): the company's sources ground any
    figure, the lead's words only what the reply repeats as theirs, never a price of ours."""

    company: list[str]
    lead: list[str]
    currency: str | None


def _problems(reply: str, sources: Grounding) -> list[str]:
    """Why a draft may not be sent: figures no source grounds, or no text at all."""
    if not reply.strip():
        return [EMPTY]
    return ungrounded(reply, sources.company, sources.lead, currency=sources.currency)


def guard(
    ctx: JobContext,
    run: Run,
    turn: Turn,
    request: CompletionRequest,
    first: Draft,
    hits: list[Hit],
    turns: list[Message],
) -> Phases[Draft]:
    """Every price, amount, percentage, time, date, count and phone number in the draft must
    be grounded by a figure of the same kind in a passage or the company card, or (not a price
    or an offer of ours) in the lead's own words: otherwise the draft is written once more,
    and then replaced by a safe answer that offers a person (GuardrailBlocked keeps the
    drafts). turn.result["guardrail"] says what it did."""
    sources = _grounding(turn, hits, turns)
    bad = _problems(first.reply, sources)
    if not bad:
        return first
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
            ChatMessage("assistant", first.reply or "(nothing)"),
            ChatMessage("user", why),
        ],
        json_schema=prompts.ENGAGE_SCHEMA,
        schema_name="reply",
        context={**request.context, "forbidden": bad},
    )
    second = yield from draft(ctx, run, retry, lead=turn.lead, hits=hits)
    still = _problems(second.reply, sources)
    if not still:
        turn.result["guardrail"] = "regenerated"
        return second
    append_lead_event(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        type="GuardrailBlocked",
        data={
            "message_id": str(turn.latest.id),
            "figures": sorted(set(bad) | set(still)),
            "drafts": [first.reply, second.reply],
        },
        actor="ai",
        now=ctx.now,
    )
    turn.result["guardrail"] = "blocked"
    language = str(turn.result.get("language", "en"))
    return Draft(reply=localized(SAFE_ANSWERS, language), sources=[], answered=False)


def _grounding(turn: Turn, hits: list[Hit], turns: list[Message]) -> Grounding:
    """Where a reply's figures may come from: the passages it was given, the company card and
    name; and the lead's own words (recent turns and the unanswered messages)."""
    return Grounding(
        company=[
            *(f"{hit.heading}\n{hit.content}" for hit in hits),
            *card_values(turn.company.company_card),
            turn.company.name,
        ],
        lead=[
            *(m.text for m in turns if m.direction == "in"),
            *(m.text for m in turn.pending),
        ],
        currency=turn.company.currency,
    )


# --- send -------------------------------------------------------------------------------------


def send(
    ctx: JobContext,
    run: Run,
    turn: Turn,
    learning: Learning,
    content: OutboundContent,
    checked: Draft,
    turns: list[Message] | None = None,
) -> Phases[dict[str, Any]]:
    """The answer through the router, once per send key, if it is still wanted; what the run
    learnt and the AI's memory of the turn are written with it."""
    superseded = still_wanted(ctx, run, turn)
    if superseded is not None:
        return superseded

    def with_send() -> None:
        record_learning(ctx.session, turn, learning, ctx.now)
        if turns is not None:
            memory.remember(
                ctx.session, lead=turn.lead, turns=turns, reply=content.preview(), now=ctx.now
            )

    blocked = turn.result.get("guardrail") == "blocked" or checked.is_safe_answer
    sent = yield from channels.send_message(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        channel=turn.channel,
        content=content,
        send_key=f"ai.reply:{turn.latest.id}",
        settings=ctx.settings,
        now=ctx.clock.now,
        actor="ai",
        meta={
            "purpose": "safe_answer" if blocked else "reply",
            "passages": checked.sources,
            "answers": turn.result["answers"],
            "intent": learning.understood.intent,
            "language": learning.understood.language,
        },
        with_send=with_send,
    )
    return {
        "outcome": sent.outcome.value,
        "message_id": str(sent.message_id),
        **turn.result,
        **run.notes,
        "passages": checked.sources,
        "timings_ms": run.timings(),
    }


def _email_reply(turn: Turn, reply: str) -> OutboundContent:
    """An answer to the lead's email: "Re: <their subject>", In-Reply-To their Message-ID and
    References their thread plus it (RFC 5322 3.6.4)."""
    latest = turn.latest
    subject = str(latest.meta.get("subject") or "").strip()
    if not re.match(r"(?i)^re:", subject):
        subject = f"Re: {subject}" if subject else "Re:"
    references = [r for r in latest.meta.get("email_references", []) if isinstance(r, str)]
    their_id = latest.email_message_id
    if their_id is not None and their_id not in references:
        references.append(their_id)
    return OutboundContent(
        text=reply,
        subject=subject[:998],
        email_in_reply_to=their_id,
        email_references=references[-100:] or None,
    )


def suggest(
    ctx: JobContext,
    run: Run,
    turn: Turn,
    learning: Learning,
    content: OutboundContent,
    checked: Draft,
    turns: list[Message] | None,
) -> dict[str, Any]:
    """Keep the drafted answer on the lead's email (meta["suggested_reply"]) for a person to
    send, with ReplySuggested; nothing goes to the router."""
    superseded = still_wanted(ctx, run, turn)
    if superseded is not None:
        return superseded
    record_learning(ctx.session, turn, learning, ctx.now)
    if turns is not None:
        memory.remember(
            ctx.session, lead=turn.lead, turns=turns, reply=content.preview(), now=ctx.now
        )
    latest = turn.latest
    suggestion = {
        "text": content.text,
        "subject": content.subject,
        "email_in_reply_to": content.email_in_reply_to,
        "email_references": content.email_references or [],
        "passages": checked.sources,
        "safe_answer": checked.is_safe_answer,
        "created_at": ctx.now.isoformat(),
    }
    latest.meta = {**latest.meta, "suggested_reply": suggestion}
    append_lead_event(
        ctx.session,
        company_id=turn.company.id,
        lead_id=turn.lead.id,
        type="ReplySuggested",
        data={"message_id": str(latest.id), "channel": turn.channel.value},
        actor="ai",
        now=ctx.now,
    )
    ctx.session.flush()
    return {
        "outcome": "suggested",
        "message_id": str(latest.id),
        **turn.result,
        **run.notes,
        "passages": checked.sources,
        "timings_ms": run.timings(),
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
