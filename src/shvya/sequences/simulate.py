"""The dry run of a sequence over a lead list (docs/sequences.md, "Dry run"): the timing and
policy code a live step runs, on a simulated clock, sending and writing nothing.

For each lead, from `now`: each step is due where `timing.due_at` puts it (from the previous
simulated send), the stop conditions that stand for the lead now apply, a simulated reply
(drawn per lead and step with `reply_rate`, the same draw every run) stops it, and the router's
preflight (`channels.service.preflight`, the verdict a live step asks for) is asked at the due
moment: a deferral moves the step to the moment it names and back into its window, a refusal
stops the lead's run. The leads' steps are met in the order of their moments, as the scheduler
meets them, and the sending limits count the sends already made and the ones simulated before
(a 400-a-day mailbox spreads a 1,000-lead sequence over three days here as it would live).
What the router counts from one lead's own history (pacing, the 24-hour window) is read from
the real conversation: simulated sends are not written, so those do not count them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import uuid
from collections import Counter, defaultdict
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
from shvya.sequences import limits, service
from shvya.sequences.models import Sequence, SequenceStep
from shvya.sequences.schemas import SimulationOut, SimulationRow
from shvya.sequences.timing import due_at, next_opening

MAX_LEADS = 5000
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
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
    _Simulation(session, report, sequence, steps, reply_rate, settings, now, end).run(leads)
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


@dataclass
class _Lead:
    """One lead's way through the sequence: the step it is at and what that step is due from."""

    lead: Lead
    zone: str
    index: int
    base: datetime
    deferrals: int = 0


class _Ledger:
    """The simulated sends, per sending account and per recipient domain: the sending limits
    count them as a live run counts the sends it made (docs/sequences-ooo-and-limits.md)."""

    def __init__(self) -> None:
        self.sends: defaultdict[str, list[datetime]] = defaultdict(list)

    def add(self, limited: service.StepLimits, when: datetime) -> None:
        bisect.insort(self.sends[limited.account_key], when)
        if limited.domain is not None:
            bisect.insort(self.sends[f"@{limited.domain}"], when)

    def hold(
        self, limited: service.StepLimits, channel: str, when: datetime
    ) -> tuple[datetime, str] | None:
        """Until when the simulated sends hold a step due at `when`, and why; None: free."""
        applied, kind = limited.applied, limits.account_kind(channel)
        checks = [
            (limited.account_key, applied.per_hour, HOUR, f"{kind}_hourly_limit"),
            (limited.account_key, applied.per_day, DAY, f"{kind}_daily_limit"),
        ]
        if limited.domain is not None:
            domain = f"@{limited.domain}"
            checks.append((domain, applied.per_domain_per_day, DAY, "domain_daily_limit"))
        holds = []
        for key, allowed, window, reason in checks:
            if allowed is None:
                continue
            sent = self.sends[key]
            recent = sent[bisect.bisect_right(sent, when - window) :]
            if len(recent) >= allowed:
                holds.append((recent[len(recent) - allowed] + window, reason))
        return max(holds) if holds else None


class _Simulation:
    """Every lead's steps in the order of their moments, as a scheduler would meet them, so
    that the sends simulated for one lead count against the limits another lead's step meets."""

    def __init__(
        self,
        session: Session,
        report: _Report,
        sequence: Sequence,
        steps: list[SequenceStep],
        reply_rate: float,
        settings: Settings,
        start: datetime,
        end: datetime,
    ) -> None:
        self.session, self.report, self.sequence, self.steps = session, report, sequence, steps
        self.reply_rate, self.settings, self.start, self.end = reply_rate, settings, start, end
        self.ledger = _Ledger()
        self.queue: list[tuple[datetime, int, _Lead]] = []
        self.order = itertools.count()

    def run(self, leads: list[Lead]) -> None:
        for lead in leads:
            zone = channels.lead_time_zone(
                self.session, company_id=lead.company_id, lead_id=lead.id
            )
            standing = service.standing_stop_reason(
                self.session,
                stop_on=self.sequence.stop_on or [],
                lead=lead,
                enrolled_stage_id=lead.stage_id,
            )
            if standing is not None:
                for tally in self.report.at(self.start, 0):
                    tally.stops[standing] += 1
                continue
            self._schedule(_Lead(lead=lead, zone=zone, index=0, base=self.start))
        while self.queue:
            when, _, state = heapq.heappop(self.queue)
            self._due(state, when)

    def _push(self, state: _Lead, when: datetime) -> None:
        heapq.heappush(self.queue, (when, next(self.order), state))

    def _schedule(self, state: _Lead) -> None:
        """The lead's next step, due from its base: into its window, or stopped by a reply."""
        step = self.steps[state.index]
        timing = service.step_timing(step)
        when = due_at(timing, base=state.base, zone_name=state.zone)
        if when is None:
            for tally in self.report.at(state.base, step.position):
                tally.stops["window_never_opens"] += 1
            return
        if when > self.end:
            return
        if when != due_at(replace(timing, window=None), base=state.base, zone_name=state.zone):
            # Due outside its window: it waits for the next opening.
            for tally in self.report.at(when, step.position):
                tally.deferrals["window"] += 1
        if "reply" in (self.sequence.stop_on or []) and _replies(
            f"{state.lead.id}:{step.position}", self.reply_rate
        ):
            for tally in self.report.at(when, step.position):
                tally.stops["reply"] += 1
            return
        state.deferrals = 0
        self._push(state, when)

    def _wait(self, state: _Lead, when: datetime, until: datetime, reason: str) -> None:
        """The step may not go at `when`: it waits until `until` and back into its window."""
        step = self.steps[state.index]
        for tally in self.report.at(when, step.position):
            tally.deferrals[reason] += 1
        opening = next_opening(service.step_timing(step), until, state.zone)
        state.deferrals += 1
        if opening is None or opening > self.end or state.deferrals > MAX_DEFERRALS:
            return
        if opening != until:
            for tally in self.report.at(when, step.position):
                tally.deferrals["window"] += 1
        self._push(state, opening)

    def _due(self, state: _Lead, when: datetime) -> None:
        """What a live step does at its moment: the limits, then the router; then it goes."""
        lead, step = state.lead, self.steps[state.index]
        channel = service.step_channel(self.session, lead, step)
        limited = service.step_limits(self.session, channel, lead, now=when)
        if limited is not None:
            holds = [self.ledger.hold(limited, channel.value, when)]
            if limited.hold is not None:
                holds.append((limited.hold.until, limited.hold.reason))
            hold = max((h for h in holds if h is not None), default=None)
            if hold is not None:
                self._wait(state, when, *hold)
                return
        verdict = channels.preflight(
            self.session,
            company_id=lead.company_id,
            lead_id=lead.id,
            channel=channel,
            kind=SendKind.sequence_step,
            settings=self.settings,
            now=when,
        )
        if isinstance(verdict, Defer):
            self._wait(state, when, verdict.until, verdict.reason)
            return
        if isinstance(verdict, Refuse):
            for tally in self.report.at(when, step.position):
                tally.refusals[verdict.reason] += 1
                tally.stops[verdict.reason] += 1
            return
        local = when.astimezone(ZoneInfo(state.zone)).strftime("%H:%M")
        for tally in self.report.at(when, step.position):
            tally.sent(local)
        if limited is not None:
            self.ledger.add(limited, when)
        state.base = when
        state.index += 1
        if state.index < len(self.steps):
            self._schedule(state)
