from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    CompoundSelect,
    Uuid,
    and_,
    bindparam,
    case,
    column,
    exists,
    func,
    null,
    or_,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shvya.crm.models import (
    BUMPUP_IDLE_MINUTES_RANGE,
    DEFAULT_STAGES,
    Channel,
    Lead,
    LeadContact,
    Pipeline,
    Stage,
    Suppression,
    SuppressionReason,
    SuppressionSource,
)
from shvya.crm.schemas import (
    DEFAULT_STAGE_RULES,
    HANDOFF_REASONS,
    ContactOut,
    LeadCreateIn,
    LeadFilter,
    LeadOut,
    LeadPatchIn,
    PipelineOut,
    StageAIConfig,
    StageOut,
    StagePatchIn,
    StageRef,
    StageRule,
)
from shvya.db.base import UTCDateTime, table_of
from shvya.db.queries import get_for_company, page_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import Conflict, InvalidInput, NotFound
from shvya.events.service import append_event, append_lead_event
from shvya.schemas import PageRequest
from shvya.tenancy.models import User

EMAIL_CHANNELS = frozenset({Channel.email})
SANDBOX_VISITOR = re.compile(r"visitor-[0-9a-f]{16,64}")


class LeadNotFound(NotFound):
    code = "lead_not_found"


class StageNotFound(NotFound):
    code = "stage_not_found"


class InvalidContact(InvalidInput):
    code = "invalid_contact"


class ContactTaken(Conflict):
    code = "contact_taken"


# --- contacts ---------------------------------------------------------------------------------


def normalise_phone(raw: str, *, region: str) -> str:
    """E.164, read in the company's region when the number has no country code."""
    return _normalise_phone(raw, region)


@lru_cache(maxsize=65_536)
def _normalise_phone(raw: str, region: str) -> str:
    # Cached: a lead writes many times from one number, and parsing is the costliest step of
    # reading a message's sender (a ValueError is not cached; bad numbers are rare).
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(
            f"not a valid phone number for region {region}; "
            "write it in international format, e.g. +14155550100"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_provider_phone(raw: str, *, field: str) -> str:
    """A number the channel itself reports (WhatsApp's wa_id, with its country code): E.164.

    The provider is the authority on its users' numbers, so a number of a possible length for
    its country is kept although the phone library does not know its range yet (a new mobile
    range, the UK's 07700 900xxx): dropping it would drop the lead's message
    (docs/reliability.md P2). Numbers people type keep the strict check (`normalise_contact`).
    """
    try:
        return _normalise_provider_phone(raw)
    except ValueError as exc:
        raise InvalidContact(f"{field}: {exc}", extra={"field": field}) from None


@lru_cache(maxsize=65_536)
def _normalise_provider_phone(raw: str) -> str:
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number for its country code")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from None
    return result.normalized.lower()


def normalise_contact(channel: Channel, raw: str, *, region: str, field: str) -> str:
    """The value a contact is stored and matched by: E.164 phone or lower-case email.

    The sandbox channel also takes either, and the sandbox page's own visitor ids.
    """
    if channel is Channel.sandbox and SANDBOX_VISITOR.fullmatch(raw):
        return raw
    try:
        if channel in EMAIL_CHANNELS or (channel is Channel.sandbox and "@" in raw):
            return normalise_email(raw)
        return normalise_phone(raw, region=region)
    except ValueError as exc:
        raise InvalidContact(f"{field}: {exc}", extra={"field": field}) from None


# --- pipelines and stages ---------------------------------------------------------------------


def create_default_pipeline(session: Session, *, company_id: uuid.UUID, now: datetime) -> Pipeline:
    pipeline = Pipeline(
        company_id=company_id,
        name="Sales",
        is_default=True,
        created_at=now,
    )
    session.add(pipeline)
    session.flush()
    for position, name in enumerate(DEFAULT_STAGES):
        session.add(
            Stage(
                company_id=company_id,
                pipeline_id=pipeline.id,
                name=name,
                position=position,
                ai_config={},
                created_at=now,
            )
        )
    session.flush()
    return pipeline


def get_entry_stage(session: Session, *, company_id: uuid.UUID, now: datetime) -> Stage:
    """The first stage of the company's default pipeline, making the pipeline if it has none.
    Remembered for the session: a webhook batch creates many leads in the same stage."""
    cache_key = ("shvya.crm.entry_stage", company_id)
    cached = session.info.get(cache_key)
    if isinstance(cached, Stage):
        return cached
    statement = (
        select(Stage)
        .join(Pipeline, Pipeline.id == Stage.pipeline_id)
        .where(Pipeline.company_id == company_id, Pipeline.is_default.is_(True))
        .order_by(Stage.position)
        .limit(1)
    )
    stage = session.scalars(statement).first()
    if stage is not None:
        session.info[cache_key] = stage
        return stage
    try:
        with session.begin_nested():
            create_default_pipeline(session, company_id=company_id, now=now)
    except IntegrityError:
        pass  # another request made it first; use theirs
    stage = session.scalars(statement).first()
    assert stage is not None
    return stage


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def resolve_stage(
    session: Session, *, company_id: uuid.UUID, ref: str, pipeline_id: uuid.UUID | None
) -> Stage:
    """A stage by id (any of the company's pipelines) or by name (in the given pipeline)."""
    stage_id = _parse_uuid(ref)
    statement = select(Stage).where(Stage.company_id == company_id)
    if stage_id is not None:
        statement = statement.where(Stage.id == stage_id)
    else:
        statement = statement.where(func.lower(Stage.name) == ref.strip().lower())
        if pipeline_id is not None:
            statement = statement.where(Stage.pipeline_id == pipeline_id)
        else:
            statement = statement.join(Pipeline, Pipeline.id == Stage.pipeline_id).where(
                Pipeline.is_default.is_(True)
            )
    stage = session.scalars(statement.limit(1)).first()
    if stage is None:
        raise StageNotFound(f"stage {ref!r} not found; GET /pipelines lists the stages")
    return stage


def effective_stage_rules(pipeline: Pipeline) -> list[StageRule]:
    raw = DEFAULT_STAGE_RULES if pipeline.stage_rules is None else pipeline.stage_rules
    return [StageRule.model_validate(rule) for rule in raw]


def _pipeline_out(pipeline: Pipeline, stages: list[StageOut]) -> PipelineOut:
    return PipelineOut(
        id=pipeline.id,
        name=pipeline.name,
        is_default=pipeline.is_default,
        stages=stages,
        stage_rules=[
            rule.model_dump(by_alias=True, mode="json") for rule in effective_stage_rules(pipeline)
        ],
        stage_rules_are_default=pipeline.stage_rules is None,
    )


def list_pipelines(session: Session, *, company_id: uuid.UUID) -> list[PipelineOut]:
    pipelines = session.scalars(
        select(Pipeline)
        .where(Pipeline.company_id == company_id)
        .order_by(Pipeline.is_default.desc(), Pipeline.created_at)
    ).all()
    stages = session.scalars(
        select(Stage)
        .where(Stage.company_id == company_id)
        .order_by(Stage.pipeline_id, Stage.position)
    ).all()
    by_pipeline: dict[uuid.UUID, list[StageOut]] = {}
    for stage in stages:
        by_pipeline.setdefault(stage.pipeline_id, []).append(StageOut.model_validate(stage))
    return [_pipeline_out(p, by_pipeline.get(p.id, [])) for p in pipelines]


class PipelineNotFound(NotFound):
    code = "pipeline_not_found"


def get_pipeline(session: Session, *, company_id: uuid.UUID, pipeline_id: uuid.UUID) -> Pipeline:
    return get_for_company(
        session, Pipeline, pipeline_id, company_id=company_id, missing=PipelineNotFound
    )


def pipeline_stages(session: Session, *, pipeline_id: uuid.UUID) -> list[Stage]:
    return list(
        session.scalars(
            select(Stage).where(Stage.pipeline_id == pipeline_id).order_by(Stage.position)
        )
    )


def set_stage_rules(
    session: Session,
    *,
    company_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    rules: list[StageRule],
    actor: str,
    now: datetime,
) -> PipelineOut:
    """Replace the pipeline's rules; every stage they name must be one of its stages."""
    pipeline = get_pipeline(session, company_id=company_id, pipeline_id=pipeline_id)
    stages = pipeline_stages(session, pipeline_id=pipeline.id)
    names = {stage.name.lower() for stage in stages}
    for index, rule in enumerate(rules):
        for name in [*rule.from_, rule.to]:
            if name.strip().lower() not in names:
                raise InvalidInput(
                    f"rules[{index}]: {name!r} is not a stage of pipeline {pipeline.name!r} "
                    f"({', '.join(stage.name for stage in stages)})",
                    extra={"field": f"rules.{index}"},
                )
    pipeline.stage_rules = [rule.model_dump(by_alias=True, mode="json") for rule in rules]
    append_event(
        session,
        company_id=company_id,
        entity_type="pipeline",
        entity_id=pipeline.id,
        type="StageRulesChanged",
        data={"rules": pipeline.stage_rules},
        actor=actor,
        now=now,
    )
    session.flush()
    return _pipeline_out(pipeline, [StageOut.model_validate(stage) for stage in stages])


def set_stage_ai_config(
    session: Session,
    *,
    company_id: uuid.UUID,
    stage_id: uuid.UUID,
    config: StageAIConfig,
    actor: str,
    now: datetime,
) -> Stage:
    stage = get_for_company(
        session,
        Stage,
        stage_id,
        company_id=company_id,
        missing=StageNotFound,
        hint="; GET /pipelines lists the stages",
    )
    stage.ai_config = config.model_dump(mode="json", exclude_defaults=True)
    append_event(
        session,
        company_id=company_id,
        entity_type="stage",
        entity_id=stage.id,
        type="StageAIConfigChanged",
        data={"ai_config": stage.ai_config},
        actor=actor,
        now=now,
    )
    session.flush()
    return stage


def get_stage(session: Session, *, company_id: uuid.UUID, stage_id: uuid.UUID) -> Stage:
    return get_for_company(
        session,
        Stage,
        stage_id,
        company_id=company_id,
        missing=StageNotFound,
        hint="; GET /pipelines lists the stages",
    )


# The sequences table, read here without importing the sequences domain (a higher layer):
# a stage may name only one of its company's sequences.
_SEQUENCES = table("sequences", column("id", Uuid()), column("company_id", Uuid()))


def set_stage_auto_enroll(
    session: Session,
    *,
    company_id: uuid.UUID,
    stage_id: uuid.UUID,
    sequence_id: uuid.UUID | None,
    actor: str,
    now: datetime,
) -> Stage:
    """Name the sequence a lead entering this stage is enrolled in (None: none)."""
    stage = get_stage(session, company_id=company_id, stage_id=stage_id)
    if sequence_id is not None and (
        session.scalar(
            select(_SEQUENCES.c.id).where(
                _SEQUENCES.c.id == sequence_id, _SEQUENCES.c.company_id == company_id
            )
        )
        is None
    ):
        raise InvalidInput(
            f"auto_enroll_sequence_id: sequence {sequence_id} not found; "
            "GET /sequences lists the company's sequences",
            extra={"field": "auto_enroll_sequence_id"},
        )
    stage.auto_enroll_sequence_id = sequence_id
    append_event(
        session,
        company_id=company_id,
        entity_type="stage",
        entity_id=stage.id,
        type="StageAutoEnrollChanged",
        data={"sequence_id": str(sequence_id) if sequence_id else None},
        actor=actor,
        now=now,
    )
    session.flush()
    return stage


def set_stage_bumpup_timing(
    session: Session,
    *,
    company_id: uuid.UUID,
    stage_id: uuid.UUID,
    patch: StagePatchIn,
    actor: str,
    now: datetime,
) -> Stage:
    """Set the stage's bump-up timing from the fields `patch` names (null: the default), with
    a StageBumpupTimingChanged event. The stage's quiet leads are looked at again on the next
    scheduler tick, so a shorter idle time or a higher maximum applies to them at once
    (docs/scheduler.md)."""
    stage = get_stage(session, company_id=company_id, stage_id=stage_id)
    before = {"bumpup_idle_minutes": stage.bumpup_idle_minutes, "bumpup_max": stage.bumpup_max}
    for field in ("bumpup_idle_minutes", "bumpup_max"):
        if field in patch.model_fields_set:
            setattr(stage, field, getattr(patch, field))
    after = {"bumpup_idle_minutes": stage.bumpup_idle_minutes, "bumpup_max": stage.bumpup_max}
    if after == before:
        return stage
    append_event(
        session,
        company_id=company_id,
        entity_type="stage",
        entity_id=stage.id,
        type="StageBumpupTimingChanged",
        data={"from": before, "to": after},
        actor=actor,
        now=now,
    )
    # Only the leads whose last message is ours, on the (company_id, stage_id) index.
    session.execute(
        update(Lead)
        .where(
            Lead.company_id == company_id,
            Lead.stage_id == stage.id,
            Lead.last_inbound_at.is_not(None),
            Lead.last_outbound_at > Lead.last_inbound_at,
        )
        .values(next_bumpup_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return stage


def stage_ai_config(stage: Stage | dict[str, Any] | None) -> StageAIConfig:
    """A stage's AI brief, from the stage or its stored ai_config; a stored config that no
    longer validates falls back to defaults field by field rather than silencing the AI."""
    stored = (stage.ai_config if isinstance(stage, Stage) else stage) or {}
    try:
        return StageAIConfig.model_validate(stored)
    except ValueError:
        known = StageAIConfig.model_fields
        config = StageAIConfig()
        for key, value in stored.items():
            if key in known:
                try:
                    config = StageAIConfig.model_validate({**config.model_dump(), key: value})
                except ValueError:
                    continue
        return config


def record_lead_change(
    session: Session,
    lead: Lead,
    *,
    type: str,
    data: dict[str, Any],
    actor: str,
    now: datetime,
) -> None:
    """The lead changed: its updated_at moves to `now`, and its timeline says how (an event
    of `type`)."""
    lead.updated_at = now
    append_lead_event(
        session,
        company_id=lead.company_id,
        lead_id=lead.id,
        type=type,
        data=data,
        actor=actor,
        now=now,
    )


# What happens when a lead enters a stage, registered by the domains above crm (a sequence's
# auto-enrolment: shvya.sequences.service), run in the transaction of the move.
StageEnteredHook = Callable[[Session, Lead, Stage, str, datetime], None]
_STAGE_ENTERED: list[StageEnteredHook] = []


def on_stage_entered(hook: StageEnteredHook) -> None:
    """Run `hook(session, lead, stage, actor, now)` whenever move_stage puts a lead in a stage
    or create_lead makes one in it (a lead a message creates is not: docs/sequences.md)."""
    if hook not in _STAGE_ENTERED:
        _STAGE_ENTERED.append(hook)


def move_stage(
    session: Session,
    *,
    lead: Lead,
    stage: Stage,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Put the lead in `stage`, with a StageChanged event. False: it was there already."""
    if stage.id == lead.stage_id:
        return False
    previous = session.get_one(Stage, lead.stage_id)
    lead.stage_id = stage.id
    lead.pipeline_id = stage.pipeline_id
    if lead.next_bumpup_at is not None and lead.next_bumpup_at > now:
        # The new stage may time bump-ups otherwise: the scheduler looks again (docs/scheduler.md).
        lead.next_bumpup_at = now
    record_lead_change(
        session,
        lead,
        type="StageChanged",
        data={
            "from": {"id": str(previous.id), "name": previous.name},
            "to": {"id": str(stage.id), "name": stage.name},
            **({"reason": reason} if reason else {}),
        },
        actor=actor,
        now=now,
    )
    for hook in _STAGE_ENTERED:
        hook(session, lead, stage, actor, now)
    return True


# --- contact look-ups -------------------------------------------------------------------------


def find_contact(
    session: Session, *, company_id: uuid.UUID, channel: str, value: str
) -> LeadContact | None:
    """The contact that owns an address (a normalised value) on a channel, whoever's lead."""
    return session.scalars(
        select(LeadContact).where(
            LeadContact.company_id == company_id,
            LeadContact.channel == str(channel),
            LeadContact.value == value,
        )
    ).first()


def lead_contact(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, channel: str | None = None
) -> LeadContact | None:
    """Where to reach a lead: its oldest contact on `channel`, or its oldest of all."""
    statement = select(LeadContact).where(
        LeadContact.company_id == company_id, LeadContact.lead_id == lead_id
    )
    if channel is not None:
        statement = statement.where(LeadContact.channel == str(channel))
    return session.scalars(
        statement.order_by(LeadContact.created_at, LeadContact.id).limit(1)
    ).first()


def lead_contacts(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID
) -> list[LeadContact]:
    """Every contact of a lead, oldest first."""
    return list(
        session.scalars(
            select(LeadContact)
            .where(LeadContact.company_id == company_id, LeadContact.lead_id == lead_id)
            .order_by(LeadContact.created_at, LeadContact.id)
        )
    )


@dataclass(frozen=True)
class Sender:
    """Who an inbound message comes from: their contact, their lead, and that lead's stage."""

    contact_id: uuid.UUID
    lead_id: uuid.UUID
    lead_created: bool
    ai_paused: bool
    stage_config: StageAIConfig  # the AI brief of the lead's stage (its quiet period...)


@dataclass(frozen=True)
class NewSender:
    """A sender never seen: their lead would start in the entry stage, whose brief this is
    (None: the company has no pipeline yet)."""

    entry_stage_config: StageAIConfig | None


_contacts = table_of(LeadContact)
_leads = table_of(Lead)
_stages = table_of(Stage)
_pipelines = table_of(Pipeline)
# A foreign-key column's type is only known once its target is resolved, which may be after
# this module builds its statements: the bound parameter names its type itself.
_COMPANY_ID = bindparam("company_id", type_=Uuid())


def _sender_statement(match_user_id: bool) -> CompoundSelect[Any]:
    """The sender's contact rows (with their lead and its stage's ai_config) or, for a sender
    never seen, one row of NULLs but the entry stage's ai_config: one round trip either way,
    so that the inbound path knows the quiet period of the stage a new lead starts in."""

    def matches(contacts: Any) -> list[Any]:
        address = contacts.c.value == bindparam("value")
        if match_user_id:
            address = or_(address, contacts.c.external_user_id == bindparam("user_id"))
        return [
            contacts.c.company_id == _COMPANY_ID,
            contacts.c.channel == bindparam("channel"),
            address,
        ]

    known = (
        select(
            _contacts.c.id,
            _contacts.c.lead_id,
            _contacts.c.external_user_id,
            _leads.c.ai_paused,
            _leads.c.name,
            _stages.c.ai_config,
        )
        .join(_leads, _leads.c.id == _contacts.c.lead_id)
        .join(_stages, _stages.c.id == _leads.c.stage_id)
        .where(*matches(_contacts))
    )
    entry_stage_config = (
        select(_stages.c.ai_config)
        .join(_pipelines, _pipelines.c.id == _stages.c.pipeline_id)
        .where(_pipelines.c.company_id == _COMPANY_ID, _pipelines.c.is_default.is_(True))
        .order_by(_stages.c.position)
        .limit(1)
        .scalar_subquery()
    )
    seen = _contacts.alias("seen")
    # Evaluated once per statement (no correlation), and the entry stage only when needed.
    unknown = select(null(), null(), null(), null(), null(), entry_stage_config).where(
        ~exists().where(*matches(seen))
    )
    return union_all(known, unknown)


_SENDER_BY_VALUE = _sender_statement(match_user_id=False)
_SENDER_BY_USER_ID = _sender_statement(match_user_id=True)


def find_sender(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    value: str,
    name: str | None,
    external_user_id: str | None = None,
) -> Sender | NewSender:
    """The contact and lead an inbound message comes from, in one indexed query (the hot path
    of every inbound message), or for a sender never seen the entry stage their lead would
    start in. With a provider user id (WhatsApp's business-scoped id) the contact is found by
    it first: a lead who changes or hides their number stays the same lead. A name fills an
    unnamed lead."""
    statement = _SENDER_BY_USER_ID if external_user_id is not None else _SENDER_BY_VALUE
    rows = (
        session.connection()
        .execute(
            statement,
            {
                "company_id": company_id,
                "channel": channel.value,
                "value": value,
                "user_id": external_user_id,
            },
        )
        .all()
    )
    found = [r for r in rows if r.id is not None]
    if not found:
        raw = rows[0].ai_config if rows else None
        return NewSender(entry_stage_config=None if raw is None else stage_ai_config(raw))
    # The provider's user id outranks the phone number (a number can change hands).
    row = next((r for r in found if r.external_user_id == external_user_id), found[0])
    if external_user_id is not None and row.external_user_id is None:
        session.execute(
            update(LeadContact)
            .where(LeadContact.id == row.id)
            .values(external_user_id=external_user_id)
        )
    if name and not row.name:
        session.execute(update(Lead).where(Lead.id == row.lead_id).values(name=name))
    return Sender(
        contact_id=row.id,
        lead_id=row.lead_id,
        lead_created=False,
        ai_paused=row.ai_paused,
        stage_config=stage_ai_config(row.ai_config),
    )


def find_or_create_sender(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    value: str,
    name: str | None,
    actor: str,
    now: datetime,
    external_user_id: str | None = None,
) -> Sender:
    """The contact and lead a message comes from, created in the entry stage when new."""
    found = find_sender(
        session,
        company_id=company_id,
        channel=channel,
        value=value,
        name=name,
        external_user_id=external_user_id,
    )
    if isinstance(found, Sender):
        return found
    return _create_sender(
        session,
        company_id=company_id,
        channel=channel,
        value=value,
        name=name,
        actor=actor,
        now=now,
        external_user_id=external_user_id,
    )


def _create_sender(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    value: str,
    name: str | None,
    actor: str,
    now: datetime,
    external_user_id: str | None,
) -> Sender:
    """A new lead in the entry stage for a sender the caller did not find.

    Two first messages from a new number can race: the contact's unique indexes pick the
    winner, the loser's lead is rolled back with the savepoint and the winner's is found.
    """
    stage = get_entry_stage(session, company_id=company_id, now=now)
    try:
        with session.begin_nested():
            lead = _add_lead(
                session,
                company_id=company_id,
                stage=stage,
                name=name,
                attributes={},
                created_data={"contact": {"channel": channel.value, "value": value}},
                actor=actor,
                now=now,
            )
            contact = LeadContact(
                company_id=company_id,
                lead_id=lead.id,
                channel=channel.value,
                value=value,
                external_user_id=external_user_id,
                created_at=now,
            )
            session.add(contact)
            session.flush()
    except IntegrityError:
        found = find_sender(
            session,
            company_id=company_id,
            channel=channel,
            value=value,
            name=name,
            external_user_id=external_user_id,
        )
        assert isinstance(found, Sender)
        return found
    return Sender(
        contact_id=contact.id,
        lead_id=lead.id,
        lead_created=True,
        ai_paused=lead.ai_paused,
        stage_config=stage_ai_config(stage),
    )


def _later(column: Any) -> Any:
    """`column` moved forward to :at, never back (decided in SQL, so two messages of one lead
    processed at once cannot move it back)."""
    at = bindparam("at", type_=UTCDateTime())
    return case((or_(column.is_(None), column < at), at), else_=column)


_TOUCH_CONTACT = (
    update(_contacts)
    .where(_contacts.c.id == bindparam("contact_id"))
    .values(last_inbound_at=_later(_contacts.c.last_inbound_at))
)
_TOUCH_LEAD = (
    update(_leads)
    .where(_leads.c.id == bindparam("lead_id"))
    .values(
        last_inbound_at=_later(_leads.c.last_inbound_at),
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)


def note_inbound(
    session: Session,
    *,
    contact_id: uuid.UUID,
    lead_id: uuid.UUID,
    received_at: datetime,
    now: datetime,
) -> None:
    """The contact's and lead's last inbound time move forward only."""
    connection = session.connection()
    connection.execute(_TOUCH_CONTACT, {"contact_id": contact_id, "at": received_at})
    connection.execute(_TOUCH_LEAD, {"lead_id": lead_id, "at": received_at, "now": now})


# --- leads ------------------------------------------------------------------------------------


def _add_lead(
    session: Session,
    *,
    company_id: uuid.UUID,
    stage: Stage,
    name: str | None,
    attributes: dict[str, Any],
    created_data: dict[str, Any],
    actor: str,
    now: datetime,
) -> Lead:
    """A new lead in `stage`, flushed for its id, and its LeadCreated event: the stage, then
    `created_data` (how the lead is reached)."""
    lead = Lead(
        company_id=company_id,
        pipeline_id=stage.pipeline_id,
        stage_id=stage.id,
        name=name,
        attributes=attributes,
        created_at=now,
        updated_at=now,
    )
    session.add(lead)
    session.flush()
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=lead.id,
        type="LeadCreated",
        data={"stage_id": str(stage.id), "stage": stage.name, **created_data},
        actor=actor,
        now=now,
    )
    return lead


def get_lead(session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID) -> Lead:
    return get_for_company(session, Lead, lead_id, company_id=company_id, missing=LeadNotFound)


def create_lead(
    session: Session,
    *,
    company_id: uuid.UUID,
    data: LeadCreateIn,
    region: str,
    actor: str,
    now: datetime,
) -> Lead:
    """A lead without any message: nothing is enqueued.

    A contact that already belongs to a lead is a 409 naming that lead; the caller's unit
    of work rolls back the half-made lead with it.
    """
    if data.stage is None:
        stage = get_entry_stage(session, company_id=company_id, now=now)
    else:
        stage = resolve_stage(session, company_id=company_id, ref=data.stage, pipeline_id=None)
    # The same contact twice is one contact.
    contacts = dict.fromkeys(
        (
            contact.channel,
            normalise_contact(
                contact.channel, contact.value, region=region, field=f"contacts[{index}].value"
            ),
        )
        for index, contact in enumerate(data.contacts)
    )
    lead = _add_lead(
        session,
        company_id=company_id,
        stage=stage,
        name=data.name,
        attributes=data.attributes,
        created_data={"contacts": [{"channel": c.value, "value": v} for c, v in contacts]},
        actor=actor,
        now=now,
    )
    for channel, value in contacts:
        inserted = insert_or_ignore(
            session,
            table_of(LeadContact),
            {
                "company_id": company_id,
                "lead_id": lead.id,
                "channel": channel.value,
                "value": value,
                "created_at": now,
            },
            conflict_on=("company_id", "channel", "value"),
        )
        if inserted is None:
            owner = find_contact(session, company_id=company_id, channel=channel, value=value)
            assert owner is not None
            raise ContactTaken(
                f"{channel.value} contact {value} already belongs to lead {owner.lead_id}",
                extra={"lead_id": str(owner.lead_id)},
            )
    # A lead made in a stage enters it, as one moved there does (a sequence's auto-enrolment).
    for hook in _STAGE_ENTERED:
        hook(session, lead, stage, actor, now)
    return lead


def update_lead(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    patch: LeadPatchIn,
    actor: str,
    now: datetime,
) -> Lead:
    lead = get_lead(session, company_id=company_id, lead_id=lead_id)
    sent = patch.model_fields_set
    changes: dict[str, Any] = {}
    if "stage" in sent and patch.stage is not None:
        stage = resolve_stage(
            session, company_id=company_id, ref=patch.stage, pipeline_id=lead.pipeline_id
        )
        move_stage(session, lead=lead, stage=stage, actor=actor, now=now)
    if "name" in sent and patch.name != lead.name:
        changes["name"] = {"from": lead.name, "to": patch.name}
        lead.name = patch.name
    if "priority" in sent and patch.priority is not None and patch.priority != lead.priority:
        changes["priority"] = {"from": lead.priority, "to": patch.priority}
        lead.priority = patch.priority
    if "attributes" in sent and patch.attributes is not None:
        merged = dict(lead.attributes)
        for key, value in patch.attributes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if merged != lead.attributes:
            changes["attributes"] = {"set": patch.attributes}
            lead.attributes = merged
    if "assigned_to" in sent:
        assign_lead(session, lead=lead, user_id=patch.assigned_to, actor=actor, now=now)
    if changes:
        append_lead_event(
            session,
            company_id=company_id,
            lead_id=lead.id,
            type="LeadUpdated",
            data=changes,
            actor=actor,
            now=now,
        )
    lead.updated_at = now
    session.flush()
    return lead


def lock_lead(session: Session, lead: Lead) -> None:
    """Read the lead again and hold its row until the transaction ends (PostgreSQL; SQLite's
    write transactions are serial already), so what a job writes is not lost to another."""
    session.flush()  # what this transaction changed is kept, not expired away
    session.refresh(lead, with_for_update=True)


# The reasons the AI's handoff pauses a lead with (ai.engage hand_off writes "handoff: <reason>";
# the bare reason is accepted too). A lead paused for one of them needs a person (docs/ai.md 5.5).
# An inbound email reply waits for a person too (docs/email-inbound.md), and so does a
# sequence step whose every AI draft the guardrail refused (docs/sequences.md).
EMAIL_REPLY_REASON = "email_reply"
SEQUENCE_DRAFT_REFUSED_REASON = "sequence_draft_refused"
NEEDS_PERSON_REASONS = tuple(
    sorted(
        {
            *HANDOFF_REASONS,
            *(f"handoff: {reason}" for reason in HANDOFF_REASONS),
            EMAIL_REPLY_REASON,
            SEQUENCE_DRAFT_REFUSED_REASON,
        }
    )
)
MAX_PAUSE_REASON_CHARS = 200  # leads.ai_paused_reason


def needs_person(lead: Lead) -> bool:
    """The AI handed the conversation to a person and no person has answered or taken it since
    (a person's reply or pause replaces the handoff's reason)."""
    return lead.ai_paused and lead.ai_paused_reason in NEEDS_PERSON_REASONS


def set_ai_paused(
    session: Session,
    *,
    lead: Lead,
    paused: bool,
    reason: str,
    actor: str,
    now: datetime,
) -> bool:
    """Pause or resume the AI for one lead (AIPaused / AIResumed), keeping why and since when.
    False: the AI was paused (or answering) already. A pause of a paused lead for another
    reason replaces the reason and keeps the time (AIPauseReasonChanged): a person who replies
    to a handed-off lead ("agent_replied") or takes it over answers its need for a person."""
    reason = reason[:MAX_PAUSE_REASON_CHARS]
    if paused and lead.ai_paused:
        if reason != lead.ai_paused_reason:
            record_lead_change(
                session,
                lead,
                type="AIPauseReasonChanged",
                data={"from": lead.ai_paused_reason, "to": reason},
                actor=actor,
                now=now,
            )
            lead.ai_paused_reason = reason
        return False
    if lead.ai_paused == paused:
        return False
    lead.ai_paused = paused
    lead.ai_paused_reason = reason if paused else None
    lead.ai_paused_at = now if paused else None
    record_lead_change(
        session,
        lead,
        type="AIPaused" if paused else "AIResumed",
        data={"reason": reason},
        actor=actor,
        now=now,
    )
    return True


class UserNotFound(NotFound):
    code = "user_not_found"


def company_user(
    session: Session, *, company_id: uuid.UUID, user_id: uuid.UUID, field: str
) -> User:
    """A user of the company, or a 404 naming `field`, like any id the company does not have
    (another company's user too)."""
    user = session.scalars(
        select(User).where(User.id == user_id, User.company_id == company_id)
    ).first()
    if user is None:
        raise UserNotFound(
            f"{field}: {user_id} is not a user of this company", extra={"field": field}
        )
    return user


def assign_lead(
    session: Session, *, lead: Lead, user_id: uuid.UUID | None, actor: str, now: datetime
) -> bool:
    """Assign the lead to a user of its company, or unassign it (None), with a LeadAssigned
    event. False: it was assigned so already."""
    if user_id is not None:
        company_user(session, company_id=lead.company_id, user_id=user_id, field="assigned_to")
    if user_id == lead.assigned_user_id:
        return False
    previous = lead.assigned_user_id
    lead.assigned_user_id = user_id
    record_lead_change(
        session,
        lead,
        type="LeadAssigned",
        data={
            "from": str(previous) if previous else None,
            "to": str(user_id) if user_id else None,
        },
        actor=actor,
        now=now,
    )
    return True


# A search that looks like a phone number is matched by its digits ("+1 (415) 555-0100").
_PHONE_LIKE = re.compile(r"[\d\s()+.\-]+")


def _search(company_id: uuid.UUID, text: str) -> Any:
    """The lead's name or one of its contacts (E.164 phone, lower-case email) contains `text`,
    in any case, on both databases (ILIKE on PostgreSQL, lower() LIKE on SQLite, which folds
    ASCII letters only); LIKE's wildcards in `text` are matched literally."""
    text = text.strip()
    contact = [LeadContact.value.icontains(text, autoescape=True)]
    digits = re.sub(r"\D", "", text)
    if _PHONE_LIKE.fullmatch(text) and len(digits) >= 3 and digits != text:
        contact.append(LeadContact.value.contains(digits, autoescape=True))
    return or_(
        Lead.name.icontains(text, autoescape=True),
        exists().where(
            LeadContact.company_id == company_id,
            LeadContact.lead_id == Lead.id,
            or_(*contact),
        ),
    )


def list_leads(
    session: Session,
    *,
    company_id: uuid.UUID,
    filters: LeadFilter,
    page: PageRequest,
) -> tuple[Sequence[Lead], int]:
    """The company's leads that pass every filter: newest first, or with needs_person=true the
    longest-waiting first (by when the AI was paused). A stage or a user the company does not
    have is a 404 (stage_not_found, user_not_found) naming the filter."""
    where: list[Any] = [Lead.company_id == company_id]
    if filters.stage is not None:
        try:
            stage = resolve_stage(
                session, company_id=company_id, ref=filters.stage, pipeline_id=None
            )
        except StageNotFound as exc:
            # 404 like any id the company does not have (another company's stage too).
            exc.extra["field"] = "stage"
            raise
        where.append(Lead.stage_id == stage.id)
    if filters.needs_person is True:
        where.append(
            and_(Lead.ai_paused.is_(True), Lead.ai_paused_reason.in_(NEEDS_PERSON_REASONS))
        )
    elif filters.needs_person is False:
        where.append(
            or_(
                Lead.ai_paused.is_(False),
                Lead.ai_paused_reason.is_(None),
                Lead.ai_paused_reason.not_in(NEEDS_PERSON_REASONS),
            )
        )
    if filters.ai_paused is not None:
        where.append(Lead.ai_paused.is_(filters.ai_paused))
    if filters.channel is not None:
        where.append(
            exists().where(
                LeadContact.company_id == company_id,
                LeadContact.lead_id == Lead.id,
                LeadContact.channel == filters.channel.value,
            )
        )
    if filters.search:
        where.append(_search(company_id, filters.search))
    if filters.assigned_to == "none":
        where.append(Lead.assigned_user_id.is_(None))
    elif filters.assigned_to is not None:
        company_user(
            session, company_id=company_id, user_id=filters.assigned_to, field="assigned_to"
        )
        where.append(Lead.assigned_user_id == filters.assigned_to)
    order_by = (
        (Lead.ai_paused_at.asc(), Lead.id.asc())
        if filters.needs_person
        else (Lead.created_at.desc(), Lead.id.desc())
    )
    return page_of(session, Lead, *where, order_by=order_by, page=page)


def present_leads(session: Session, leads: Sequence[Lead]) -> list[LeadOut]:
    """LeadOut for each lead, with its stage and contacts, in two queries for the whole page."""
    if not leads:
        return []
    lead_ids = [lead.id for lead in leads]
    stages = {
        stage.id: stage
        for stage in session.scalars(
            select(Stage).where(Stage.id.in_({lead.stage_id for lead in leads}))
        )
    }
    contacts: dict[uuid.UUID, list[ContactOut]] = {}
    for contact in session.scalars(
        select(LeadContact)
        .where(LeadContact.lead_id.in_(lead_ids))
        .order_by(LeadContact.created_at, LeadContact.id)
    ):
        contacts.setdefault(contact.lead_id, []).append(ContactOut.model_validate(contact))
    return [
        LeadOut(
            id=lead.id,
            name=lead.name,
            pipeline_id=lead.pipeline_id,
            stage=StageRef(id=lead.stage_id, name=stages[lead.stage_id].name),
            attributes=lead.attributes,
            priority=lead.priority,
            ai_paused=lead.ai_paused,
            ai_paused_reason=lead.ai_paused_reason if lead.ai_paused else None,
            ai_paused_since=lead.ai_paused_at if lead.ai_paused else None,
            needs_person=needs_person(lead),
            assigned_to=lead.assigned_user_id,
            contacts=contacts.get(lead.id, []),
            created_at=lead.created_at,
            updated_at=lead.updated_at,
            last_inbound_at=lead.last_inbound_at,
        )
        for lead in leads
    ]


def present_lead(session: Session, lead: Lead) -> LeadOut:
    return present_leads(session, [lead])[0]


# --- suppressions -----------------------------------------------------------------------------


class SuppressionNotFound(NotFound):
    code = "suppression_not_found"


def is_suppressed(session: Session, *, company_id: uuid.UUID, channel: str, address: str) -> bool:
    return (
        session.scalar(
            select(Suppression.id).where(
                Suppression.company_id == company_id,
                Suppression.channel == channel,
                Suppression.address == address,
            )
        )
        is not None
    )


def find_suppression(
    session: Session, *, company_id: uuid.UUID, channel: str, address: str
) -> Suppression | None:
    return session.scalars(
        select(Suppression).where(
            Suppression.company_id == company_id,
            Suppression.channel == channel,
            Suppression.address == address,
        )
    ).first()


def add_suppression(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: str,
    address: str,
    reason: SuppressionReason,
    source: str,
    actor: str,
    now: datetime,
    lead_id: uuid.UUID | None = None,
) -> tuple[Suppression, bool]:
    """Suppress an address on a channel; returns (row, created). Adding it twice is a no-op."""
    created_id = insert_or_ignore(
        session,
        table_of(Suppression),
        {
            "company_id": company_id,
            "channel": channel,
            "address": address,
            "reason": reason.value,
            # Only SuppressionSource values are written (a typo fails here, not in the CSV).
            "source": SuppressionSource(source).value,
            "created_at": now,
        },
        conflict_on=("company_id", "channel", "address"),
    )
    row = find_suppression(session, company_id=company_id, channel=channel, address=address)
    assert row is not None
    if created_id is not None:
        append_lead_event(
            session,
            company_id=company_id,
            lead_id=lead_id,
            type="ContactSuppressed",
            data={"channel": channel, "address": address, "reason": reason.value, "source": source},
            actor=actor,
            now=now,
        )
    return row, created_id is not None


def remove_suppression(
    session: Session,
    *,
    company_id: uuid.UUID,
    suppression: Suppression,
    actor: str,
    now: datetime,
    lead_id: uuid.UUID | None = None,
) -> None:
    session.delete(suppression)
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=lead_id,
        type="ContactUnsuppressed",
        data={"channel": suppression.channel, "address": suppression.address},
        actor=actor,
        now=now,
    )


def get_suppression(
    session: Session, *, company_id: uuid.UUID, suppression_id: uuid.UUID
) -> Suppression:
    return get_for_company(
        session, Suppression, suppression_id, company_id=company_id, missing=SuppressionNotFound
    )


def _suppression_filters(
    company_id: uuid.UUID, source: SuppressionSource | None, channel: Channel | None
) -> list[Any]:
    where: list[Any] = [Suppression.company_id == company_id]
    if source is not None:
        where.append(Suppression.source == source.value)
    if channel is not None:
        where.append(Suppression.channel == channel.value)
    return where


def list_suppressions(
    session: Session,
    *,
    company_id: uuid.UUID,
    page: PageRequest,
    source: SuppressionSource | None = None,
    channel: Channel | None = None,
) -> tuple[Sequence[Suppression], int]:
    return page_of(
        session,
        Suppression,
        *_suppression_filters(company_id, source, channel),
        order_by=(Suppression.created_at.desc(), Suppression.id),
        page=page,
    )


def iter_suppressions(
    session: Session,
    *,
    company_id: uuid.UUID,
    source: SuppressionSource | None = None,
    channel: Channel | None = None,
    batch: int = 500,
) -> Iterator[Suppression]:
    """Every suppression of the company that matches, newest first, read `batch` rows at a
    time (a server-side cursor on PostgreSQL) so an export never holds the list in memory."""
    statement = (
        select(Suppression)
        .where(*_suppression_filters(company_id, source, channel))
        .order_by(Suppression.created_at.desc(), Suppression.id)
        .execution_options(yield_per=batch)
    )
    yield from session.scalars(statement)


def set_marketing_consent(
    session: Session, *, contact: LeadContact, value: str, at: datetime, now: datetime
) -> bool:
    """WhatsApp's user_preferences: "stop" or "resume". Returns whether anything changed
    (an older or repeated preference changes nothing)."""
    if contact.marketing_consent_at is not None and at <= contact.marketing_consent_at:
        return False
    if contact.marketing_consent == value:
        contact.marketing_consent_at = at
        return False
    contact.marketing_consent = value
    contact.marketing_consent_at = at
    append_lead_event(
        session,
        company_id=contact.company_id,
        lead_id=contact.lead_id,
        type="MarketingConsentChanged",
        data={"channel": contact.channel, "value": value},
        now=now,
    )
    return True


def touch_last_outbound(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, at: datetime
) -> None:
    lead = get_lead(session, company_id=company_id, lead_id=lead_id)
    if lead.last_outbound_at is None or at > lead.last_outbound_at:
        lead.last_outbound_at = at
        # The bump-up scheduler looks at the lead once the shortest idle time a stage can set
        # has passed, and then knows the exact time or that none is due (docs/scheduler.md).
        lead.next_bumpup_at = at + timedelta(minutes=BUMPUP_IDLE_MINUTES_RANGE[0])
