"""The `shvya` command as a user runs it: a real process, DATABASE_URL in its environment."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shvya import cli
from shvya.app import create_app
from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from tests.support import make_tenant, post_inbound, wait_until_it_catches

# A command's words and exit codes are the same on either database; the lifecycle test runs
# the command against PostgreSQL too (docs/architecture.md, "Tests").
ONE_DATABASE = pytest.mark.one_database

KEY_PATTERN = re.compile(r"^shvya_[0-9a-f]{12}_[0-9a-f]{48}$")


def shvya(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shvya", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": database_url, **env},
        check=False,
    )


def _every_command(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Each command's words, groups first (Typer's groups are its own click's: duck-typed)."""
    yield path
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _every_command(command, (*path, name))
        else:
            yield (*path, name)


def test_every_command_has_help() -> None:
    """Every command and group of the tree (new ones included without editing this list) has
    help that says what to type. In-process: 40 interpreters would cost a minute of the
    suite's budget; the real entry point is started once below."""
    tree = typer.main.get_command(cli.app)
    commands = list(_every_command(tree))
    assert {("serve",), ("worker",), ("kb", "add"), ("email", "dkim", "add")} <= set(commands)
    runner = CliRunner()
    helps = {}
    for command in commands:
        result = runner.invoke(cli.app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output
        # What to type after an option, never Python's name of its type.
        for python_type in ("<bool>", "<str>", "<int", "<list", "<Path>", "<UUID>"):
            assert python_type not in result.output, (command, result.output)
        helps[command] = result.output
    assert "--company" in helps[("kb", "add")]
    assert "COMPANY" in helps[("kb", "add")]
    assert "[admin|agent|supervisor]" in helps[("apikey", "create")]
    real = shvya("--help", database_url="sqlite:///unused.db")
    assert real.returncode == 0, real.stderr
    assert "Usage" in real.stdout
    assert "serve" in real.stdout


def test_company_and_key_lifecycle(database_url: str) -> None:
    migrated = shvya("migrate", database_url=database_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    created = shvya(
        "company",
        "create",
        "Acme Motors",
        "--timezone",
        "Asia/Kolkata",
        "--phone-region",
        "in",
        database_url=database_url,
    )
    assert created.returncode == 0, created.stderr
    assert "Acme Motors" in created.stdout
    assert "slug acme-motors," in created.stdout
    # Names need not be unique; the slug is.
    same_name = shvya("company", "create", "acme motors", database_url=database_url)
    assert same_name.returncode == 0, same_name.stderr
    assert "slug acme-motors-2," in same_name.stdout
    listed = shvya("company", "list", database_url=database_url).stdout.splitlines()
    assert [line.split()[1] for line in listed] == ["acme-motors", "acme-motors-2"]
    first_id, second_id = (line.split()[0] for line in listed)
    ambiguous = shvya(
        "apikey", "create", "--company", "ACME MOTORS", "--role", "agent", database_url=database_url
    )
    assert ambiguous.returncode == 1
    assert "2 companies are named 'ACME MOTORS'" in ambiguous.stderr
    assert f"acme-motors ({first_id})" in ambiguous.stderr
    assert f"acme-motors-2 ({second_id})" in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr
    by_id = shvya("apikey", "list", "--company", second_id, database_url=database_url)
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout == ""  # the second company has no keys yet
    bad_zone = shvya(
        "company", "create", "Other", "--timezone", "Mars/Base", database_url=database_url
    )
    assert bad_zone.returncode == 1
    assert "IANA" in bad_zone.stderr

    key_run = shvya(
        "apikey", "create", "--company", "acme-motors", "--role", "agent", database_url=database_url
    )
    assert key_run.returncode == 0, key_run.stderr
    raw_key = key_run.stdout.strip().splitlines()[-1]
    assert KEY_PATTERN.match(raw_key)

    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {raw_key}"}
        me = client.get("/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["company_name"] == "Acme Motors"
        assert me.json()["role"] == "agent"
        # the company's region reads national numbers
        inbound = client.post(
            "/inbound-message",
            json={"channel": "wa_cloud", "from": "9876543210", "text": "hello"},
            headers=headers,
        )
        assert inbound.status_code == 201, inbound.text

        listed = shvya("apikey", "list", "--company", first_id, database_url=database_url)
        assert listed.returncode == 0
        assert raw_key not in listed.stdout
        prefix = raw_key.rsplit("_", 1)[0]
        assert prefix in listed.stdout

        revoked = shvya("apikey", "revoke", prefix, database_url=database_url)
        assert revoked.returncode == 0, revoked.stderr
        assert (
            shvya("apikey", "list", "--company", second_id, database_url=database_url).stdout == ""
        )
        assert client.get("/me", headers=headers).status_code == 401
        again = shvya("apikey", "revoke", prefix, database_url=database_url)
        assert again.returncode == 1
        assert "already revoked" in again.stderr


def test_errors_are_messages_with_nonzero_exit(tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    unmigrated = shvya(
        "apikey", "create", "--company", "Default", "--role", "admin", database_url=fresh
    )
    assert unmigrated.returncode == 1
    assert "run `shvya migrate` first" in unmigrated.stderr
    assert "Traceback" not in unmigrated.stderr

    shvya("migrate", database_url=fresh)
    no_company = shvya(
        "apikey", "create", "--company", "Nope", "--role", "admin", database_url=fresh
    )
    assert no_company.returncode == 1
    assert "no company 'Nope' (by id, slug or name)" in no_company.stderr
    bad_role = shvya("apikey", "create", "--company", "Nope", "--role", "owner", database_url=fresh)
    assert bad_role.returncode == 2
    assert "owner" in bad_role.stderr

    unreachable = shvya("migrate", database_url="postgresql://postgres@127.0.0.1:9/nowhere")
    assert unreachable.returncode == 1
    assert "cannot reach the database" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    bad_config = shvya("serve", database_url=fresh, SHVYA_ENV="production")
    assert bad_config.returncode == 1
    assert "SHVYA_SECRET_KEY" in bad_config.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    database_url: str, *args: str, **env: str
) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "shvya", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url, **env},
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        # Uvicorn says it is running once its socket is bound; "Application startup complete"
        # comes before that, and a request sent then can be refused.
        if "Uvicorn running on" in line:
            return process, lines
    process.kill()
    raise AssertionError("server did not start:\n" + "\n".join(lines))


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_first_start_creates_default_company_and_prints_admin_key_once(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'data' / 'shvya.db'}"
    assert shvya("migrate", database_url=database_url).returncode == 0
    port = free_port()
    process, lines = start_server(database_url, "--port", str(port))
    try:
        keys = [line.strip() for line in lines if KEY_PATTERN.match(line.strip())]
        assert len(keys) == 1, lines
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/health").json()
        assert (health["status"], health["database"]) == ("ok", "ok")
        assert health["retrieval"].startswith("hybrid (sqlite fts5 + numpy exact")
        assert "swagger" in httpx.get(f"{base}/docs").text.lower()
        headers = {"Authorization": f"Bearer {keys[0]}"}
        me = httpx.get(f"{base}/me", headers=headers).json()
        assert (me["company_name"], me["role"]) == ("Default", "admin")
        stages = httpx.get(f"{base}/pipelines", headers=headers).json()[0]["stages"]
        assert [s["name"] for s in stages] == ["New", "Qualified", "Nurture", "Converted", "Lost"]
    finally:
        stop(process)

    port = free_port()
    process, lines = start_server(database_url, SHVYA_PORT=str(port), SHVYA_HOST="127.0.0.1")
    try:
        assert not [line for line in lines if KEY_PATTERN.match(line.strip())]
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        stop(process)


@ONE_DATABASE
def test_worker_once_queue_stats_and_dlq_commands(database_url: str) -> None:
    from sqlalchemy.orm import Session

    from shvya import onboarding
    from shvya.clock import SystemClock
    from shvya.db.engine import make_engine, make_session_factory
    from shvya.jobs.service import enqueue_job

    assert shvya("migrate", database_url=database_url).returncode == 0
    engine = make_engine(database_url)
    now = SystemClock().now()
    with make_session_factory(engine)() as session:
        assert isinstance(session, Session)
        company = onboarding.create_company(session, name="Queue Co", now=now)
        for _ in range(3):
            enqueue_job(session, "ai.engage", {}, company_id=company.id, now=now)
        enqueue_job(session, "sequence.step", {}, company_id=company.id, now=now)
        session.commit()

    stats = shvya("queue", "stats", "--company", "Queue Co", database_url=database_url)
    assert stats.returncode == 0, stats.stderr
    assert "scope: company queue-co (Queue Co)" in stats.stdout
    assert "queued 4" in stats.stdout
    assert "p1: 3 due" in stats.stdout
    assert "p2: 1 due" in stats.stdout

    once = shvya("worker", "--once", database_url=database_url)
    assert once.returncode == 0, once.stderr
    assert "ran 4 jobs" in once.stdout
    stats = shvya("queue", "stats", database_url=database_url)
    assert "scope: every company" in stats.stdout
    # The ai.engage jobs name no lead, the sequence.step job no enrolment: they fail for good
    # at once, no retries.
    assert "completed 0, failed 4" in stats.stdout

    empty = shvya("dlq", "list", database_url=database_url)
    assert empty.returncode == 0
    assert "0 dead-lettered job(s)" in empty.stdout
    replayed = shvya("dlq", "replay", "--type", "ai.engage", database_url=database_url)
    assert replayed.returncode == 0
    assert "replayed 0 job(s)" in replayed.stdout
    unknown = shvya("dlq", "replay", "--type", "ai.dance", database_url=database_url)
    assert unknown.returncode == 1
    assert "unknown job type" in unknown.stderr
    engine.dispose()


@ONE_DATABASE
def test_kb_add_list_and_search(database_url: str, tmp_path: Path) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Default", database_url=database_url).returncode == 0
    docs = tmp_path / "docs"
    (docs / "nested").mkdir(parents=True)
    (docs / "pricing.md").write_text(
        "# Plans\n\n## Premium\nThe premium plan costs 4,999 INR per month.\n"
    )
    (docs / "nested" / "delivery.html").write_text(
        "<h1>Delivery</h1><p>We deliver across Maharashtra in 5 days.</p>"
    )
    (docs / "notes.docx").write_bytes(b"ignored: not a knowledge-base format")
    added = shvya("kb", "add", str(docs), database_url=database_url)
    assert added.returncode == 0, added.stderr
    assert "2 file(s): 2 created" in added.stdout
    again = shvya("kb", "add", str(docs / "pricing.md"), database_url=database_url)
    assert "1 file(s): 1 unchanged" in again.stdout
    listed = shvya("kb", "list", database_url=database_url)
    assert "pricing" in listed.stdout
    assert "2 document(s)" in listed.stdout
    found = shvya("kb", "search", "how much is premium", database_url=database_url)
    assert found.returncode == 0, found.stderr
    assert "retrieval: hybrid" in found.stdout
    assert "1. " in found.stdout
    assert "4,999 INR" in found.stdout.split("2. ")[0]
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 broken")
    refused = shvya("kb", "add", str(bad), database_url=database_url)
    assert refused.returncode == 1
    assert "not a readable PDF" in refused.stderr
    missing = shvya("kb", "add", str(tmp_path / "nope"), database_url=database_url)
    assert missing.returncode == 1
    assert "no such file or folder" in missing.stderr


def test_log_level_setting_quiets_the_worker(tmp_path: Path) -> None:
    """SHVYA_LOG_LEVEL is honoured: WARNING hides the INFO lifecycle lines a default run shows."""
    import signal

    database_url = f"sqlite:///{tmp_path / 'logs.db'}"
    assert shvya("migrate", database_url=database_url).returncode == 0

    def run_worker(**env: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "shvya", "worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DATABASE_URL": database_url, **env},
        )
        wait_until_it_catches(process.pid, signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        return stderr

    assert "worker.started" in run_worker()
    quiet = run_worker(SHVYA_LOG_LEVEL="warning")
    assert "worker.started" not in quiet
    assert "INFO" not in quiet
    bad = shvya("worker", "--once", database_url=database_url, SHVYA_LOG_LEVEL="loud")
    assert bad.returncode == 1
    assert "log_level" in bad.stderr


def test_serve_logs_no_verify_token(tmp_path: Path) -> None:
    """`shvya serve` logs the handshake without its token (src/shvya/redact.py)."""
    token = "verify-0123456789abcdef"
    database_url = f"sqlite:///{tmp_path / 'logs.db'}"
    assert shvya("migrate", database_url=database_url).returncode == 0
    port = free_port()
    process, lines = start_server(database_url, "--port", str(port), META_VERIFY_TOKEN=token)
    try:
        base = f"http://127.0.0.1:{port}/webhooks/whatsapp"
        ok = httpx.get(
            base,
            params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "77"},
        )
        assert (ok.status_code, ok.text) == (200, "77")
        wrong = httpx.get(f"{base}?hub.mode=subscribe&hub.verify_token={token}x&hub.challenge=1")
        assert wrong.status_code == 403
    finally:
        stop(process)
    assert process.stdout is not None
    output = "\n".join(lines) + process.stdout.read()
    assert "GET /webhooks/whatsapp?" in output, output
    assert token not in output
    assert output.count("hub.verify_token=[redacted]") == 2, output


OPERATOR_KEY_PATTERN = re.compile(r"^shvyaop_[0-9a-f]{12}_[0-9a-f]{48}$")


@ONE_DATABASE
def test_a_person_added_by_the_command_gets_a_key_that_acts_as_them(database_url: str) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Acme", database_url=database_url).returncode == 0

    def add(*args: str) -> subprocess.CompletedProcess[str]:
        return shvya("user", "add", "--company", "acme", *args, database_url=database_url)

    added = add("--email", "Priya@Acme.example", "--name", "Priya Shah", "--role", "agent")
    assert added.returncode == 0, added.stderr
    assert "added agent priya@acme.example (Priya Shah)" in added.stdout
    user_id = added.stdout.strip().rsplit(" ", 1)[-1]
    again = add("--email", "priya@acme.example", "--name", "Priya", "--role", "admin")
    assert again.returncode == 1
    assert "already has a user with e-mail priya@acme.example" in again.stderr
    bad = add("--email", "priya", "--name", "Priya", "--role", "agent")
    assert bad.returncode == 1
    assert "--email:" in bad.stderr and "Traceback" not in bad.stderr

    made = shvya(
        "apikey",
        "create",
        "--company",
        "acme",
        "--user",
        "PRIYA@acme.example",
        database_url=database_url,
    )
    assert made.returncode == 0, made.stderr
    assert "created agent key" in made.stderr and "of PRIYA@acme.example" in made.stderr
    raw_key = made.stdout.strip().splitlines()[-1]
    other_role = shvya(
        "apikey",
        "create",
        "--company",
        "acme",
        "--user",
        "priya@acme.example",
        "--role",
        "admin",
        database_url=database_url,
    )
    assert other_role.returncode == 1
    assert "a user's key has the user's role (agent)" in other_role.stderr
    nobody = shvya(
        "apikey",
        "create",
        "--company",
        "acme",
        "--user",
        "nobody@acme.example",
        database_url=database_url,
    )
    assert nobody.returncode == 1
    assert "not found" in nobody.stderr
    listed = shvya("user", "list", "--company", "acme", database_url=database_url)
    assert listed.stdout.split() == [user_id, "agent", "priya@acme.example", "Priya", "Shah"]

    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as client:
        me = client.get("/me", headers={"Authorization": f"Bearer {raw_key}"})
        assert (me.json()["user_id"], me.json()["role"]) == (user_id, "agent")


@ONE_DATABASE
def test_only_the_command_makes_operator_keys(database_url: str) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Acme", database_url=database_url).returncode == 0
    assert "--operator" in shvya("apikey", "create", "--help", database_url=database_url).stdout
    mixed = shvya("apikey", "create", "--operator", "--company", "acme", database_url=database_url)
    assert mixed.returncode == 1
    assert "belongs to no company" in mixed.stderr
    neither = shvya("apikey", "create", database_url=database_url)
    assert neither.returncode == 1
    assert "--company and --role" in neither.stderr

    made = shvya("apikey", "create", "--operator", "--name", "ops", database_url=database_url)
    assert made.returncode == 0, made.stderr
    raw_key = made.stdout.strip().splitlines()[-1]
    assert OPERATOR_KEY_PATTERN.match(raw_key), made.stdout
    prefix = raw_key.rsplit("_", 1)[0]
    listed = shvya("apikey", "list", "--operator", database_url=database_url)
    assert prefix in listed.stdout and "operator" in listed.stdout and "ops" in listed.stdout
    assert raw_key not in listed.stdout
    assert (
        prefix not in shvya("apikey", "list", "--company", "acme", database_url=database_url).stdout
    )

    with TestClient(create_app(Settings(database_url=database_url))) as client:
        headers = {"Authorization": f"Bearer {raw_key}"}
        stats = client.get("/queue/stats?all_companies=true", headers=headers)
        assert stats.status_code == 200, stats.text
        assert stats.json()["scope"] == "all"
        assert client.get("/leads", headers=headers).status_code == 403
        revoked = shvya("apikey", "revoke", prefix, database_url=database_url)
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/queue/stats", headers=headers).status_code == 401


@ONE_DATABASE
def test_the_last_admin_key_is_kept_by_the_command_too(database_url: str) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Acme", database_url=database_url).returncode == 0
    made = shvya(
        "apikey", "create", "--company", "acme", "--role", "admin", database_url=database_url
    )
    prefix = made.stdout.strip().splitlines()[-1].rsplit("_", 1)[0]
    refused = shvya("apikey", "revoke", prefix, database_url=database_url)
    assert refused.returncode == 1
    assert "last active admin key; create another admin key first" in refused.stderr
    listed = shvya("apikey", "list", "--company", "acme", database_url=database_url)
    assert "active" in listed.stdout and "revoked" not in listed.stdout


@ONE_DATABASE
def test_renaming_the_default_company_keeps_the_sandbox_and_the_cli_working(
    database_url: str, tmp_path: Path
) -> None:
    """The default company is the installation's first one, whatever it is called later."""
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Default", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Globex", database_url=database_url).returncode == 0
    key_run = shvya(
        "apikey", "create", "--company", "Default", "--role", "admin", database_url=database_url
    )
    headers = {"Authorization": f"Bearer {key_run.stdout.strip().splitlines()[-1]}"}
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        renamed = client.patch("/company", json={"name": "Sunrise Motors"}, headers=headers)
        assert renamed.status_code == 200, renamed.text
        assert client.get("/").status_code == 200  # the sandbox page
        sent = client.post("/sandbox/messages", json={"text": "hello?"})
        assert sent.status_code == 201, sent.text
        assert client.get("/sandbox/messages").json()["company"] == "Sunrise Motors"

    listed = shvya("company", "list", database_url=database_url)
    [default_line] = [line for line in listed.stdout.splitlines() if line.endswith("default")]
    assert "Sunrise Motors" in default_line
    price_list = tmp_path / "pricing.md"
    price_list.write_text("# Plans\n\nThe premium plan costs 4,999 INR per month.\n")
    added = shvya("kb", "add", str(price_list), database_url=database_url)
    assert added.returncode == 0, added.stderr
    assert "1 file(s): 1 created" in added.stdout
    documents = shvya("kb", "list", database_url=database_url)
    assert documents.returncode == 0, documents.stderr
    assert "pricing" in documents.stdout
    assert "1 document(s)" in documents.stdout
    # Globex's knowledge base is another one; the old name names nothing now.
    assert (
        "0 document(s)"
        in shvya("kb", "list", "--company", "Globex", database_url=database_url).stdout
    )
    old_name = shvya("kb", "list", "--company", "Default", database_url=database_url)
    assert old_name.returncode == 1
    assert "no company 'Default'" in old_name.stderr


def test_kb_commands_without_any_company_say_how_to_make_one(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert shvya("migrate", database_url=database_url).returncode == 0
    listed = shvya("kb", "list", database_url=database_url)
    assert listed.returncode == 1
    assert "there is no company yet" in listed.stderr
    assert "Traceback" not in listed.stderr


@ONE_DATABASE
def test_kb_delete(database_url: str, tmp_path: Path) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Acme", database_url=database_url).returncode == 0
    assert shvya("company", "create", "Globex", database_url=database_url).returncode == 0
    (tmp_path / "pricing.md").write_text("# Plans\n\nThe premium plan costs 4,999 INR.\n")
    assert (
        shvya("kb", "add", str(tmp_path / "pricing.md"), database_url=database_url).returncode == 0
    )
    [line, _] = shvya("kb", "list", database_url=database_url).stdout.splitlines()
    document_id = line.split()[0]

    elsewhere = shvya("kb", "delete", document_id, "--company", "Globex", database_url=database_url)
    assert elsewhere.returncode == 1  # another company's document does not exist for Globex
    assert f"document {document_id} not found" in elsewhere.stderr
    deleted = shvya("kb", "delete", document_id, database_url=database_url)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted document {document_id} (pricing)" in deleted.stdout
    assert "0 document(s)" in shvya("kb", "list", database_url=database_url).stdout
    found = shvya("kb", "search", "premium plan", database_url=database_url)
    assert "no passage matches" in found.stdout

    again = shvya("kb", "delete", document_id, database_url=database_url)
    assert again.returncode == 1
    assert f"document {document_id} not found" in again.stderr
    malformed = shvya("kb", "delete", "not-an-id", database_url=database_url)
    assert malformed.returncode == 2
    assert "DOC_ID" in malformed.stderr


@ONE_DATABASE
def test_leads_list_and_show(database_url: str) -> None:
    assert shvya("migrate", database_url=database_url).returncode == 0
    engine = make_engine(database_url)
    acme = make_tenant(make_session_factory(engine), "Acme")
    globex = make_tenant(make_session_factory(engine), "Globex")
    engine.dispose()
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        first = post_inbound(client, acme, phone="+14155550101", text="What does premium cost?")
        post_inbound(client, acme, phone="+14155550101", text="And delivery?")
        post_inbound(client, acme, phone="+14155550102", text="Hello")
        theirs = post_inbound(client, globex, phone="+14155550103", text="Globex here")
    lead_id = first.json()["lead_id"]

    listed = shvya("leads", "list", database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3
    assert "wa_cloud:+14155550102" in lines[0]  # newest first
    assert lines[1].startswith(lead_id)
    assert "New" in lines[1]
    assert "wa_cloud:+14155550101" in lines[1]
    assert lines[2] == "leads 1-2 of 2"

    paged = shvya("leads", "list", "--limit", "1", database_url=database_url).stdout.splitlines()
    assert paged[-1] == "leads 1-1 of 2; next: --page 2"
    second = shvya("leads", "list", "--limit", "1", "--page", "2", database_url=database_url)
    assert second.stdout.splitlines()[0].startswith(lead_id)
    assert second.stdout.splitlines()[-1] == "leads 2-2 of 2"
    qualified = shvya("leads", "list", "--stage", "Qualified", database_url=database_url)
    assert qualified.stdout.strip() == "no lead on page 1; 0 lead(s) in all"
    unknown_stage = shvya("leads", "list", "--stage", "Dancing", database_url=database_url)
    assert unknown_stage.returncode == 1
    assert "Dancing" in unknown_stage.stderr
    globex_leads = shvya("leads", "list", "--company", "Globex", database_url=database_url)
    assert globex_leads.stdout.splitlines()[-1] == "leads 1-1 of 1"

    shown = shvya("leads", "show", lead_id, database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    assert f"lead      {lead_id}" in shown.stdout
    assert "stage     New" in shown.stdout
    assert "wa_cloud  +14155550101" in shown.stdout
    assert "messages (last 2 of 2)" in shown.stdout
    conversation = [line for line in shown.stdout.splitlines() if " <- " in line]
    assert [line.rsplit("received", 1)[-1].strip() for line in conversation] == [
        "What does premium cost?",
        "And delivery?",
    ]
    last_one = shvya("leads", "show", lead_id, "--messages", "1", database_url=database_url)
    assert "messages (last 1 of 2)" in last_one.stdout
    assert "And delivery?" in last_one.stdout
    assert "premium" not in last_one.stdout

    # Another company's lead, and an id that is no lead: the same answer.
    for missing in (theirs.json()["lead_id"], "0190a0a0-0000-7000-8000-000000000000"):
        refused = shvya("leads", "show", missing, database_url=database_url)
        assert refused.returncode == 1
        assert f"lead {missing} not found" in refused.stderr
        assert "Traceback" not in refused.stderr
    malformed = shvya("leads", "show", "42", database_url=database_url)
    assert malformed.returncode == 2
    assert "LEAD_ID" in malformed.stderr
