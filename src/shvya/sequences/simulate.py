"""The dry run of a sequence over a lead list (docs/sequences.md, "Dry run"): the timing and
policy code a live step runs, on a simulated clock, sending and writing nothing.

For each lead, from `now`: each step is due where `timing.due_at` puts it (from the previous
simulated send), the stop conditions that stand for the lead now apply, a simulated reply
(drawn per lead and step with `reply_rate`, the same draw every run) stops it, and the router's
preflight (`channels.service.preflight`, the verdict a live step asks for) is asked at the due
moment: a deferral moves the step to the moment it names and back into its window, a refusal
stops the lead's run. What the router counts from history (pacing, the 24-hour window) is read
from the real conversation: simulated sends are not written, so they do not count.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.channels import service as channels
from shvya.channels.policies import Defer, Refuse, SendKind
from shvya.config import Settings
from shvya.crm import service as crm
from shvya.crm.models import Lead
from shvya.errors import InvalidInput
from shvya.sequences import service
from shvya.sequences.models import Sequence, SequenceStep
from shvya.sequences.schemas import SimulationOut, SimulationRow
from shvya.sequences.timing import due_at, next_opening

MAX_LEADS = 5000
# A step deferred more often than this within the run is counted as never sent.
MAX_DEFERRALS = 50


@dataclass
class _Tally:
    sends: int = 0
    deferrals: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    stops: Counter[str] = field(default_factory=Counter)
    earliest: str | None = None
    latest: str | None = None

    def sent(self, local: str) -> None:
        self.sends += 1
        self.earliest = min(self.earliest or local, local)
        self.latest = max(self.latest or local, local)

    def row(self, key: str) -> SimulationRow:
        return SimulationRow(
            key=key,
            sends=self.sends,
            deferrals=dict(self.deferrals),
            refusals=dict(self.refusals),
            stops=dict(self.stops),
            earliest_local_send=self.earliest,
            latest_local_send=self.latest,
        )


class _Report:
    def __init__(self) -> None:
        self.days: dict[str, _Tally] = {}
        self.steps: dict[int, _Tally] = {}
        self.total = _Tally()

    def at(self, moment: datetime, step: int) -> list[_Tally]:
        day = self.days.setdefault(moment.date().isoformat(), _Tally())
        return [day, self.steps.setdefault(step, _Tally()), self.total]


def _replies(seed: str, rate: float) -> bool:
    # A simulation's draw, not a secret: the same seed gives the same report every run.
    return rate > 0 and random.Random(seed).random() < rate  # noqa: S311


def simulate(
    session: Session,
    *,
    company_id: uuid.UUID,
    sequence_id: uuid.UUID,
    lead_ids: list[uuid.UUID] | None,
    stage: str | None,
    days: int,
    reply_rate: float,
    settings: Settings,
    now: datetime,
) -> SimulationOut:
    sequence = service.get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    steps = service.sequence_steps(session, sequence_id=sequence.id)
    if lead_ids is not None:
        leads = service.leads_of(session, company_id=company_id, lead_ids=lead_ids)
    else:
        assert stage is not None
        found = crm.resolve_stage(session, company_id=company_id, ref=stage, pipeline_id=None)
        leads = list(
            session.scalars(
                select(Lead)
                .where(Lead.company_id == company_id, Lead.stage_id == found.id)
                .order_by(Lead.created_at, Lead.id)
                .limit(MAX_LEADS + 1)
            )
        )
    if len(leads) > MAX_LEADS:
        raise InvalidInput(
            f"the stage holds more than {MAX_LEADS} leads: simulate a list of lead_ids instead"
        )
    end = now + timedelta(days=days)
    report = _Report()
    for lead in leads:
        _simulate_lead(session, report, sequence, steps, lead, reply_rate, settings, now, end)
    return SimulationOut(
        sequence_id=sequence.id,
        leads=len(leads),
        days=days,
        reply_rate=reply_rate,
        starts_at=now,
        ends_at=end,
        per_day=[report.days[k].row(k) for k in sorted(report.days)],
        per_step=[report.steps[k].row(str(k)) for k in sorted(report.steps)],
        total=report.total.row("total"),
    )


def _simulate_lead(
    session: Session,
    report: _Report,
    sequence: Sequence,
    steps: list[SequenceStep],
    lead: Lead,
    reply_rate: float,
    settings: Settings,
    start: datetime,
    end: datetime,
) -> None:
    zone = channels.lead_time_zone(session, company_id=lead.company_id, lead_id=lead.id)
    standing = service.standing_stop_reason(
        session, stop_on=sequence.stop_on or [], lead=lead, enrolled_stage_id=lead.stage_id
    )
    if standing is not None:
        for tally in report.at(start, 0):
            tally.stops[standing] += 1
        return
    base = start
    for step in steps:
        timing = service.step_timing(step)
        when = due_at(timing, base=base, zone_name=zone)
        if when is None:
            for tally in report.at(base, step.position):
                tally.stops["window_never_opens"] += 1
            return
        if when > end:
            return
        if when != due_at(replace(timing, window=None), base=base, zone_name=zone):
            # Due outside its window: it waits for the next opening.
            for tally in report.at(when, step.position):
                tally.deferrals["window"] += 1
        if "reply" in (sequence.stop_on or []) and _replies(
            f"{lead.id}:{step.position}", reply_rate
        ):
            for tally in report.at(when, step.position):
                tally.stops["reply"] += 1
            return
        channel = service.step_channel(session, lead, step)
        for _ in range(MAX_DEFERRALS):
            verdict = channels.preflight(
                session,
                company_id=lead.company_id,
                lead_id=lead.id,
                channel=channel,
                kind=SendKind.sequence_step,
                settings=settings,
                now=when,
            )
            if not isinstance(verdict, Defer):
                break
            for tally in report.at(when, step.position):
                tally.deferrals[verdict.reason] += 1
            opening = next_opening(timing, verdict.until, zone)
            if opening is None:
                return
            if opening != verdict.until:
                for tally in report.at(when, step.position):
                    tally.deferrals["window"] += 1
            when = opening
            if when > end:
                return
        else:
            return
        if isinstance(verdict, Refuse):
            for tally in report.at(when, step.position):
                tally.refusals[verdict.reason] += 1
                tally.stops[verdict.reason] += 1
            return
        local = when.astimezone(ZoneInfo(zone)).strftime("%H:%M")
        for tally in report.at(when, step.position):
            tally.sent(local)
        base = when
