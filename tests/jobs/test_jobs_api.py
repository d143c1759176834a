from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.runner import JobContext
from shvya.jobs.service import enqueue_job
from tests.jobs.conftest import Recorder
from tests.support import FakeClock, Tenant, make_operator_key, post_inbound


def dead_letter(
    factory: sessionmaker[Session],
    worker: EmbeddedWorker,
    recorder: Recorder,
    tenant: Tenant,
    clock: FakeClock,
    job_type: str = "webhook.reminder",
) -> uuid.UUID:
    def boom(ctx: JobContext) -> None:
        raise ConnectionError("customer endpoint refused the connection")

    recorder.behaviour[job_type] = boom
    with factory() as session:
        job_id, _ = enqueue_job(
            session, job_type, {}, company_id=tenant.company_id, now=clock.now(), max_attempts=2
        )
        session.commit()
    worker.run_until_idle()
    clock.advance(minutes=1)
    worker.run_until_idle()
    recorder.behaviour.pop(job_type)
    return job_id


def test_get_job_shows_the_inbound_job_and_its_outcome(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
    make_worker: Callable[..., EmbeddedWorker],
) -> None:
    job_id = post_inbound(client, acme).json()["job_id"]
    queued = client.get(f"/jobs/{job_id}", headers=acme.agent)
    assert queued.status_code == 200
    assert queued.json()["status"] == "queued"
    assert (queued.json()["type"], queued.json()["priority"]) == ("ai.engage", 100)

    clock.advance(seconds=3)  # the stage's quiet period: the job is due
    make_worker().run_until_idle()
    done = client.get(f"/jobs/{job_id}", headers=acme.agent).json()
    assert (done["status"], done["attempts"]) == ("completed", 1)
    assert done["result"] == {"ok": True, "type": "ai.engage"}
    assert done["finished_at"] is not None

    assert client.get(f"/jobs/{job_id}", headers=globex.admin).status_code == 404


def test_queue_stats_count_by_status_type_and_lane(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    for index in range(3):
        post_inbound(client, acme, phone=f"+1415555011{index}")
    post_inbound(client, globex)
    clock.advance(seconds=3 + 42)  # due after the stage's 3 s quiet period, then 42 s waiting
    stats = client.get("/queue/stats", headers=acme.agent).json()
    assert stats["scope"] == "company"
    assert stats["by_status"]["queued"] == 3
    assert stats["by_type"] == {"ai.engage": {"queued": 3}}
    assert stats["lanes"]["p1"]["queued_due"] == 3
    assert stats["lanes"]["p1"]["oldest_due_age_seconds"] == 42
    assert stats["lanes"]["p2"]["queued_due"] == 0

    make_worker().run_until_idle()
    stats = client.get("/queue/stats", headers=acme.agent).json()
    assert stats["by_status"]["completed"] == 3 + 1 - 1  # globex's job ran too, not counted
    assert stats["lanes"]["p1"]["started_last_hour"] == 3
    assert stats["lanes"]["p1"]["wait_p50_ms"] == 42_000

    # Every company's figures are the installation operator's, not a company admin's.
    for headers in (acme.admin, acme.agent):
        refused = client.get("/queue/stats?all_companies=true", headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "forbidden"
        assert "shvya apikey create --operator" in refused.json()["detail"]
    operator = {"Authorization": f"Bearer {make_operator_key(session_factory)}"}
    for path in ("/queue/stats?all_companies=true", "/queue/stats"):
        everyone = client.get(path, headers=operator)
        assert everyone.status_code == 200, everyone.text
        assert everyone.json()["scope"] == "all"
        assert everyone.json()["by_status"]["completed"] == 4


def test_dlq_lists_and_replays_for_admins_only(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    recorder: Recorder,
    make_worker: Callable[..., EmbeddedWorker],
) -> None:
    worker = make_worker()
    dead = dead_letter(session_factory, worker, recorder, acme, clock)
    other = dead_letter(session_factory, worker, recorder, globex, clock)

    assert client.get("/admin/dlq", headers=acme.agent).status_code == 403
    assert client.post("/admin/dlq/replay", headers=acme.agent).status_code == 403
    listed = client.get("/admin/dlq", headers=acme.admin).json()
    assert [item["id"] for item in listed["items"]] == [str(dead)]
    assert listed["items"][0]["last_error"] == (
        "ConnectionError: customer endpoint refused the connection"
    )
    assert listed["items"][0]["attempts"] == 2

    assert client.post(
        "/admin/dlq/replay", json={"type": "ai.engage"}, headers=acme.admin
    ).json() == {"replayed": 0}
    unknown = client.post("/admin/dlq/replay", json={"type": "no.such"}, headers=acme.admin)
    assert unknown.status_code == 422
    assert "type" in unknown.json()["detail"]
    replay = client.post("/admin/dlq/replay", json={"limit": 10}, headers=acme.admin)
    assert replay.json() == {"replayed": 1}
    job = client.get(f"/jobs/{dead}", headers=acme.agent).json()
    assert (job["status"], job["attempts"]) == ("queued", 0)
    assert client.get(f"/jobs/{other}", headers=globex.agent).json()["status"] == "dlq"

    worker.run_until_idle()
    assert client.get(f"/jobs/{dead}", headers=acme.agent).json()["status"] == "completed"
