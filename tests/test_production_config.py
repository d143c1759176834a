"""A production deployment is locked down by default (docs/reliability.md A12)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from shvya.app import create_app
from shvya.config import DEV_SECRET_KEY, Settings
from tests.support import FakeClock, Tenant

SETTINGS_ENV = ("SHVYA_ENV", "SHVYA_SECRET_KEY", "SHVYA_EXPOSE_DOCS", "DATABASE_URL")


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell (or CI) must not decide what these tests see."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


def production_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="production",
        secret_key=secrets.token_urlsafe(32),
        database_url=database_url,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def production_client(database_url: str, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(production_settings(database_url), engine=engine, clock=clock)
    with TestClient(app) as client:
        yield client


def test_docs_and_schema_are_not_served_in_production(
    production_client: TestClient, acme: Tenant
) -> None:
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        for headers in ({}, acme.admin):
            response = production_client.get(path, headers=headers)
            assert response.status_code == 404, (path, response.text)
            assert "openapi" not in response.text.lower()
    # The API itself is up.
    assert production_client.get("/health").status_code == 200
    assert production_client.get("/me", headers=acme.agent).status_code == 200


def test_docs_are_served_in_production_only_when_asked_for(
    database_url: str, engine: Engine, clock: FakeClock
) -> None:
    settings = production_settings(database_url, expose_docs=True)
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "secret_key",
    [
        pytest.param(None, id="not-set"),
        pytest.param(DEV_SECRET_KEY, id="development-default"),
        pytest.param("", id="empty"),
        pytest.param("changeme", id="short"),
        pytest.param("x" * 31, id="31-characters"),
    ],
)
def test_production_refuses_a_default_or_short_secret_key(secret_key: str | None) -> None:
    kwargs = {} if secret_key is None else {"secret_key": secret_key}
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, env="production", **kwargs)  # type: ignore[call-arg]
    assert "SHVYA_SECRET_KEY" in str(raised.value)
    assert "32" in str(raised.value)


def test_a_refused_configuration_does_not_repeat_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `shvya serve --workers N` builds Settings in each worker; its traceback goes to the logs.
    monkeypatch.setenv("SHVYA_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://shvya:Db-Pa55word@db.internal/shvya")
    monkeypatch.setenv("SHVYA_SECRET_KEY", "tooShortSecret")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "SHVYA_SECRET_KEY" in str(raised.value)
    for secret in ("tooShortSecret", "Db-Pa55word"):
        assert secret not in str(raised.value)
        assert secret not in repr(raised.value)


def test_production_read_from_the_environment_refuses_the_default_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHVYA_ENV", "production")
    with pytest.raises(ValidationError, match="SHVYA_SECRET_KEY"):
        Settings(_env_file=None)  # type: ignore[call-arg]

    key = secrets.token_urlsafe(32)
    monkeypatch.setenv("SHVYA_SECRET_KEY", key)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.secret_key.get_secret_value() == key
    assert key not in repr(settings) and key not in str(settings)
    assert settings.docs_enabled is False


def test_development_still_starts_with_the_default_key() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env == "development"
    assert settings.docs_enabled is True


@pytest.mark.parametrize("env", ["development", "production"])
def test_no_cross_origin_access_is_granted(
    env: str, database_url: str, engine: Engine, clock: FakeClock, acme: Tenant
) -> None:
    settings = (
        production_settings(database_url)
        if env == "production"
        else Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    )
    origin = "https://evil.example"
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        responses = [
            client.get("/health", headers={"Origin": origin}),
            client.get("/me", headers={**acme.agent, "Origin": origin}),
            client.get("/leads", headers={**acme.agent, "Origin": "null"}),
            client.post(
                "/inbound-message",
                json={"channel": "wa_cloud", "from": "+14155550100", "text": "hi"},
                headers={**acme.agent, "Origin": origin},
            ),
        ]
        for path, method in (("/leads", "POST"), ("/me", "GET"), ("/api-keys", "DELETE")):
            responses.append(
                client.options(
                    path,
                    headers={
                        "Origin": origin,
                        "Access-Control-Request-Method": method,
                        "Access-Control-Request-Headers": "authorization, content-type",
                    },
                )
            )
    for response in responses:
        request = f"{response.request.method} {response.request.url.path}"
        allowed = response.headers.get("Access-Control-Allow-Origin")
        assert allowed not in ("*", origin, "null"), (request, allowed)
        assert response.headers.get("Access-Control-Allow-Credentials") is None, request
        assert response.headers.get("Access-Control-Allow-Methods") is None, request
        assert response.headers.get("Access-Control-Allow-Headers") is None, request
        assert response.status_code < 500, (request, response.text)


def test_health_in_production_does_not_tell_where_the_database_is() -> None:
    # Unauthenticated callers reach /health; the database's host, port, name and user are
    # for the logs of whoever runs the server, not for them.
    url = "postgresql+psycopg://shvya_owner@127.0.0.1:9/crm_production"
    settings = production_settings(url)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "error", "database": "unreachable"}
    for secret in ("127.0.0.1", "shvya_owner", "crm_production", "port 9", "psycopg"):
        assert secret not in health.text
