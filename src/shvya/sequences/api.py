"""/sequences: multi-step follow-up sequences and their enrolments (docs/sequences.md)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging, SettingsDep
from shvya.schemas import AUTH_ERRORS, error_responses
from shvya.sequences import service
from shvya.sequences.models import Enrollment
from shvya.sequences.schemas import (
    EnrollByIds,
    EnrollByStage,
    EnrollIn,
    EnrollmentOut,
    EnrollmentPage,
    EnrollOut,
    SequenceIn,
    SequenceOut,
    SequencePage,
    SequencePatchIn,
    SimulateByIds,
    SimulateByStage,
    SimulateIn,
    SimulationOut,
)
from shvya.sequences.simulate import simulate
from shvya.tenancy.auth import AdminKey, CurrentKey

router = APIRouter(tags=["sequences"], responses=error_responses(*AUTH_ERRORS))


@router.post(
    "/sequences",
    status_code=201,
    summary="Create a sequence with its steps (admin)",
    responses=error_responses(403, 409),
)
def create_sequence(
    body: SequenceIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> SequenceOut:
    sequence = service.create_sequence(
        session, company_id=key.company.id, data=body, actor=key.actor, now=clock.now()
    )
    return service.present_sequence(session, sequence)


@router.get("/sequences", summary="The company's sequences with their steps")
def list_sequences(session: DbSession, key: CurrentKey, page: Paging) -> SequencePage:
    items, total = service.list_sequences(session, company_id=key.company.id, page=page)
    return SequencePage.of(items, total, page)


@router.get("/sequences/{sequence_id}", summary="One sequence", responses=error_responses(404))
def get_sequence(sequence_id: uuid.UUID, session: DbSession, key: CurrentKey) -> SequenceOut:
    sequence = service.get_sequence(session, company_id=key.company.id, sequence_id=sequence_id)
    return service.present_sequence(session, sequence)


@router.patch(
    "/sequences/{sequence_id}",
    summary="Change a sequence's name, stop conditions, steps or active flag (admin)",
    responses=error_responses(403, 404, 409),
)
def patch_sequence(
    sequence_id: uuid.UUID,
    body: SequencePatchIn,
    session: DbSession,
    key: AdminKey,
    clock: ClockDep,
) -> SequenceOut:
    sequence = service.update_sequence(
        session,
        company_id=key.company.id,
        sequence_id=sequence_id,
        data=body,
        actor=key.actor,
        now=clock.now(),
    )
    return service.present_sequence(session, sequence)


@router.delete(
    "/sequences/{sequence_id}",
    summary="Deactivate a sequence: its enrolments stop (admin)",
    responses=error_responses(403, 404),
)
def delete_sequence(
    sequence_id: uuid.UUID, session: DbSession, key: AdminKey, clock: ClockDep
) -> SequenceOut:
    sequence = service.deactivate_sequence(
        session,
        company_id=key.company.id,
        sequence_id=sequence_id,
        actor=key.actor,
        now=clock.now(),
    )
    return service.present_sequence(session, sequence)


@router.post(
    "/sequences/{sequence_id}/enrollments",
    summary="Enrol leads by id or by stage; leads already active are counted, not enrolled again",
    responses=error_responses(404, 409),
)
def enroll(
    sequence_id: uuid.UUID, body: EnrollIn, session: DbSession, key: CurrentKey, clock: ClockDep
) -> EnrollOut:
    enrolled, already = service.enroll(
        session,
        company_id=key.company.id,
        sequence_id=sequence_id,
        lead_ids=body.lead_ids if isinstance(body, EnrollByIds) else None,
        stage=body.stage if isinstance(body, EnrollByStage) else None,
        actor=key.actor,
        now=clock.now(),
    )
    return EnrollOut(enrolled=enrolled, already=already)


def _present(enrollment: Enrollment) -> EnrollmentOut:
    return EnrollmentOut(
        id=enrollment.id,
        lead_id=enrollment.lead_id,
        status=enrollment.status,
        step=enrollment.position,
        next_run_at=enrollment.next_run_at,
        stop_reason=enrollment.stop_reason,
        hold_reason=enrollment.hold_reason,
        enrolled_at=enrollment.enrolled_at,
        updated_at=enrollment.updated_at,
    )


@router.get(
    "/sequences/{sequence_id}/enrollments",
    summary="The sequence's enrolments with status, next step and why they stopped or wait",
    responses=error_responses(404),
)
def list_enrollments(
    sequence_id: uuid.UUID, session: DbSession, key: CurrentKey, page: Paging
) -> EnrollmentPage:
    rows, total = service.list_enrollments(
        session, company_id=key.company.id, sequence_id=sequence_id, page=page
    )
    return EnrollmentPage.of([_present(r) for r in rows], total, page)


@router.delete(
    "/sequences/{sequence_id}/enrollments/{lead_id}",
    summary="Unenrol a lead: the enrolment stops with reason unenrolled",
    responses=error_responses(404),
)
def unenroll(
    sequence_id: uuid.UUID,
    lead_id: uuid.UUID,
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
) -> EnrollmentOut:
    enrollment = service.unenroll(
        session,
        company_id=key.company.id,
        sequence_id=sequence_id,
        lead_id=lead_id,
        actor=key.actor,
        now=clock.now(),
    )
    return _present(enrollment)


@router.post(
    "/sequences/{sequence_id}/simulate",
    summary="Dry run: the sequence over these leads on a simulated clock, sending nothing",
    responses=error_responses(404),
)
def simulate_sequence(
    sequence_id: uuid.UUID,
    body: SimulateIn,
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
    settings: SettingsDep,
) -> SimulationOut:
    return simulate(
        session,
        company_id=key.company.id,
        sequence_id=sequence_id,
        lead_ids=body.lead_ids if isinstance(body, SimulateByIds) else None,
        stage=body.stage if isinstance(body, SimulateByStage) else None,
        days=body.days,
        reply_rate=body.reply_rate,
        settings=settings,
        now=clock.now(),
    )
