"""The step handler's seams with the out-of-office detector (shvya.sequences.ooo) and the
sending limits (shvya.sequences.limits), written against their contract (docs/sequences.md,
"Running a step"). The modules here stand in for them with the contract's signatures, so the
handler's side is proved whichever implementation is installed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import FakeClock, Tenant

PHONE = "+14155550100"


@dataclass(frozen=True)
class OutOfOffice:
    until: datetime
    stated: bool
    language: str
    matched: str


@dataclass(frozen=True)
class LimitHold:
    reason: str
    detail: str
    until: datetime


def _module(name: str, **attributes: Any) -> ModuleType:
    module = ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def test_an_out_of_office_reply_pauses_the_enrolment_until_the_return_date(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    back = clock.now() + timedelta(days=5)

    def detect(text: str, *, subject: str | None, now: datetime, zone: str) -> OutOfOffice | None:
        return OutOfOffice(back, True, "en", "out of office") if "out of office" in text else None

    monkeypatch.setitem(
        sys.modules, "shvya.sequences.ooo", _module("ooo", detect_out_of_office=detect)
    )
    seq = create_sequence(client, acme, steps=[{"channel": "sandbox", "text": "Hello"}])["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    clock.advance(seconds=30)
    body = {"channel": "sandbox", "from": PHONE, "text": "I am out of office until Monday"}
    assert client.post("/inbound-message", json=body, headers=acme.agent).status_code == 201
    work()
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "paused"
    assert row["hold_reason"].startswith("out_of_office until ")
    clock.current = back
    work()
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "completed"
    # A real reply after the out-of-office one still stops the next enrolment's step.
    seq2 = create_sequence(client, acme, name="Two")["id"]
    enroll(client, acme, seq2, lead_ids=[lead])
    tick()
    clock.advance(seconds=30)
    body = {"channel": "sandbox", "from": PHONE, "text": "Not interested, thanks"}
    assert client.post("/inbound-message", json=body, headers=acme.agent).status_code == 201
    work()
    [row] = enrollments(client, acme, seq2)
    assert (row["status"], row["stop_reason"]) == ("stopped", "reply")


def test_a_step_over_a_sending_limit_waits_with_the_limits_reason(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    until = clock.now() + timedelta(hours=3)
    asked: list[dict[str, Any]] = []

    class SendingLimits:
        pass

    def limit_verdict(session: Any, **kwargs: Any) -> LimitHold | None:
        asked.append(kwargs)
        if kwargs["now"] < until:
            return LimitHold("mailbox_daily_limit", "100 sent in 24 hours", until)
        return None

    monkeypatch.setitem(
        sys.modules,
        "shvya.sequences.limits",
        _module("limits", SendingLimits=SendingLimits, limit_verdict=limit_verdict),
    )
    seq = create_sequence(client, acme, steps=[{"channel": "sandbox", "text": "Hello"}])["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    [row] = enrollments(client, acme, seq)
    assert row["hold_reason"] == f"mailbox_daily_limit until {until.isoformat()}"
    assert asked[0]["channel"] == "sandbox"
    assert asked[0]["recipient"] == PHONE
    clock.current = until
    work()
    [row] = enrollments(client, acme, seq)
    assert (row["status"], row["hold_reason"]) == ("completed", None)
