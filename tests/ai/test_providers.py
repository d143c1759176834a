"""OpenAI and Anthropic through their official SDKs, against fake servers on 127.0.0.1;
and what every call costs, recorded per lead and per company."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.ai import service as ai
from shvya.ai.models import AIUsage
from shvya.ai.providers import (
    AITask,
    ChatMessage,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
)
from shvya.ai.providers.anthropic_provider import AnthropicProvider
from shvya.ai.providers.openai_provider import OpenAIProvider
from shvya.app import create_app
from shvya.config import Settings
from shvya.db.phases import Phases, run_phases
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.jobs.runner import JobContext
from shvya.jobs.service import enqueue_job
from shvya.knowledge.openai_embeddings import OpenAIEmbeddings
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI, approximate_tokens
from tests.support import FakeClock, Tenant, fake_provider_settings, post_inbound

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["price_inquiry", "other"]},
        "budget": {"type": ["string", "null"]},
    },
    "required": ["intent", "budget"],
    "additionalProperties": False,
}


def ask(task: AITask = AITask.engage, **kwargs: Any) -> CompletionRequest:
    return CompletionRequest(
        task=task,
        system="You are Acme's sales assistant.",
        messages=[ChatMessage(role="user", content="How much is the premium plan?")],
        **kwargs,
    )


def provider_settings(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        **fake_provider_settings(fake_openai, fake_anthropic),
        "ai_timeout_seconds": 2.0,
        **overrides,
    }
    return Settings(**values)


# --- OpenAI -----------------------------------------------------------------------------------


def test_openai_text_and_usage(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> None:
    provider = OpenAIProvider.from_settings(provider_settings(fake_openai, fake_anthropic))
    fake_openai.reply("The premium plan is 4,999 INR a month.")
    completion = provider.complete(ask(model="gpt-4o-mini", max_tokens=200))
    assert completion.text == "The premium plan is 4,999 INR a month."
    assert completion.input_tokens > 0
    assert completion.output_tokens > 0
    [call] = fake_openai.requests_to("/chat/completions")
    assert call.json["model"] == "gpt-4o-mini"
    assert call.json["messages"][0] == {
        "role": "system",
        "content": "You are Acme's sales assistant.",
    }
    assert (
        call.json["max_tokens"] == 200
    )  # a compatible server: max_tokens, not max_completion_tokens


def test_openai_structured_output_is_schema_checked_json(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    provider = OpenAIProvider.from_settings(provider_settings(fake_openai, fake_anthropic))
    fake_openai.reply_json({"intent": "price_inquiry", "budget": None})
    completion = provider.complete(
        ask(AITask.extract, json_schema=SCHEMA, schema_name="lead_facts")
    )
    assert completion.data == {"intent": "price_inquiry", "budget": None}
    [call] = fake_openai.requests_to("/chat/completions")
    assert call.json["response_format"]["type"] == "json_schema"
    assert call.json["response_format"]["json_schema"]["name"] == "lead_facts"
    fake_openai.reply("not json at all")
    with pytest.raises(ProviderError) as caught:
        provider.complete(ask(AITask.extract, json_schema=SCHEMA))
    assert caught.value.kind is ProviderErrorKind.bad_response


@pytest.mark.parametrize(
    ("fault", "kind", "retryable"),
    [
        ({"status": 429, "retry_after": 7}, ProviderErrorKind.rate_limited, True),
        ({"status": 500}, ProviderErrorKind.unavailable, True),
        ({"status": 503}, ProviderErrorKind.unavailable, True),
        ({"status": 401}, ProviderErrorKind.auth, False),
        ({"status": 400}, ProviderErrorKind.bad_request, False),
    ],
)
def test_openai_errors_become_retries_or_permanent_failures(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    fault: dict[str, Any],
    kind: ProviderErrorKind,
    retryable: bool,
) -> None:
    provider = OpenAIProvider.from_settings(provider_settings(fake_openai, fake_anthropic))
    fake_openai.fail_next(**fault)
    with pytest.raises(ProviderError) as caught:
        provider.complete(ask())
    assert caught.value.kind is kind
    assert caught.value.is_retryable is retryable
    if fault.get("retry_after"):
        assert caught.value.retry_after_seconds == 7


def test_openai_timeouts_and_garbage_are_retried(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    settings = provider_settings(fake_openai, fake_anthropic, ai_timeout_seconds=0.5)
    provider = OpenAIProvider.from_settings(settings)
    fake_openai.delay_next(3)
    with pytest.raises(ProviderError) as timeout:
        provider.complete(ask())
    assert timeout.value.kind is ProviderErrorKind.unavailable
    for kind in ("invalid_json", "missing_fields", "html"):
        fake_openai.malformed_next(kind=kind)
        with pytest.raises(ProviderError) as garbage:
            provider.complete(ask())
        assert garbage.value.kind is ProviderErrorKind.bad_response, kind
        assert garbage.value.is_retryable
    embeddings = OpenAIEmbeddings.from_settings(settings)
    for kind in ("invalid_json", "missing_fields", "html"):
        fake_openai.malformed_next(kind=kind, path_contains="/embeddings")
        with pytest.raises(ProviderError):
            embeddings.embed(["hello"])


def test_openai_embeddings_feed_the_knowledge_base(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    engine: Engine,
    database_url: str,
    acme: Tenant,
    clock: FakeClock,
) -> None:
    embeddings = OpenAIEmbeddings.from_settings(provider_settings(fake_openai, fake_anthropic))
    vectors = embeddings.embed(["premium plan price", "premium plan cost", "office hours"])
    assert vectors.shape[0] == 3
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5  # normalised
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])

    settings = provider_settings(
        fake_openai, fake_anthropic, database_url=database_url, embeddings="openai"
    )
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        added = client.post(
            "/kb/documents",
            json={"title": "Pricing", "content": "# Plans\nThe premium plan costs 4,999 INR."},
            headers=acme.admin,
        )
        assert added.status_code == 201, added.text
        found = client.get("/kb/search", params={"q": "premium price"}, headers=acme.agent).json()
    assert "openai:text-embedding-3-small" in found["retrieval"]
    assert found["passages"][0]["matched_by"].keys() == {"full_text", "full_text:lexicon", "dense"}
    assert fake_openai.embedding_calls


def test_every_openai_embeddings_call_records_its_usage(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    engine: Engine,
    database_url: str,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
) -> None:
    """A document's passages and a question cost tokens like a model call: one ai_usage row
    each, written after the call, with the tokens OpenAI counted."""
    settings = provider_settings(
        fake_openai, fake_anthropic, database_url=database_url, embeddings="openai"
    )
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        added = client.post(
            "/kb/documents",
            json={
                "title": "Pricing",
                "content": "# Plans\nThe premium plan costs 4,999 INR.\n\n# Hours\nWe open at 9.",
            },
            headers=acme.admin,
        )
        assert added.status_code == 201, added.text
        clock.advance(minutes=1)
        searched = client.get("/kb/search", params={"q": "premium price"}, headers=acme.agent)
        assert searched.status_code == 200, searched.text

    passages_call, question_call = fake_openai.embedding_calls
    assert question_call.inputs == ["premium price"]
    with session_factory() as session:
        rows = session.scalars(select(AIUsage).order_by(AIUsage.created_at)).all()
    assert [
        (
            r.company_id,
            r.task,
            r.provider,
            r.model,
            r.input_tokens,
            r.output_tokens,
            r.outcome,
            r.created_at,
        )
        for r in rows
    ] == [
        (
            acme.company_id,
            "kb.ingest",
            "openai",
            "text-embedding-3-small",
            sum(approximate_tokens(text) for text in passages_call.inputs),
            0,
            "ok",
            clock.now() - timedelta(minutes=1),
        ),
        (
            acme.company_id,
            "kb.search",
            "openai",
            "text-embedding-3-small",
            approximate_tokens("premium price"),
            0,
            "ok",
            clock.now(),
        ),
    ]
    assert all(r.input_tokens > 0 and r.lead_id is None for r in rows)
    # Each company sees its own calls only.
    assert globex.company_id not in {r.company_id for r in rows}


# --- Anthropic ------------------------------------------------------------------------------


def test_anthropic_text_structured_output_and_errors(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    provider = AnthropicProvider.from_settings(provider_settings(fake_openai, fake_anthropic))
    fake_anthropic.reply("Premium is 4,999 INR a month.")
    completion = provider.complete(ask(model="claude-sonnet-5"))
    assert completion.text == "Premium is 4,999 INR a month."
    assert (completion.input_tokens > 0, completion.output_tokens > 0) == (True, True)
    [call] = fake_anthropic.message_calls
    assert call.body["system"] == "You are Acme's sales assistant."

    fake_anthropic.reply_json({"intent": "other", "budget": "10,000 INR"})
    extracted = provider.complete(ask(AITask.extract, json_schema=SCHEMA, schema_name="lead_facts"))
    assert extracted.data == {"intent": "other", "budget": "10,000 INR"}
    forced = fake_anthropic.message_calls[-1].body
    assert forced["tool_choice"] == {"type": "tool", "name": "lead_facts"}

    for malformed in ("invalid_json", "missing_fields", "html"):
        fake_anthropic.malformed_next(kind=malformed)
        with pytest.raises(ProviderError) as garbage:
            provider.complete(ask())
        assert garbage.value.kind is ProviderErrorKind.bad_response, malformed
    for status, kind in (
        (429, ProviderErrorKind.rate_limited),
        (529, ProviderErrorKind.unavailable),
        (401, ProviderErrorKind.auth),
    ):
        fake_anthropic.fail_next(status=status)
        with pytest.raises(ProviderError) as caught:
            provider.complete(ask())
        assert caught.value.kind is kind, status


# --- generation, usage and jobs -------------------------------------------------------------


@pytest.fixture
def ai_settings(
    database_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> Settings:
    return provider_settings(fake_openai, fake_anthropic, database_url=database_url)


def choose(client: TestClient, tenant: Tenant, task: str, **body: Any) -> Any:
    return client.put(f"/ai/models/{task}", json=body, headers=tenant.admin)


def test_every_call_records_tokens_cost_and_latency_per_lead_and_company(
    engine: Engine,
    ai_settings: Settings,
    fake_openai: FakeOpenAI,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> None:
    with TestClient(create_app(ai_settings, engine=engine, clock=clock)) as client:
        assert [m["provider"] for m in client.get("/ai/models", headers=acme.agent).json()] == [
            "offline"
        ] * 5
        assert (
            client.put(
                "/ai/models/engage", json={"provider": "openai"}, headers=acme.agent
            ).status_code
            == 403
        )
        chosen = choose(
            client,
            acme,
            "engage",
            provider="openai",
            model="gpt-4o-mini",
            price_per_1k_input=0.15,
            price_per_1k_output=0.60,
        )
        assert chosen.status_code == 200, chosen.text
        assert choose(client, acme, "engage", provider="skynet").status_code == 422
        lead_id = uuid.UUID(post_inbound(client, acme).json()["lead_id"])
        fake_openai.reply("Premium is 4,999 INR.")
        with session_factory() as session:
            completion = run_phases(
                ai.generate(
                    session,
                    company_id=acme.company_id,
                    request=ask(),
                    settings=ai_settings,
                    now=clock.now(),
                    lead_id=lead_id,
                ),
                session=session,
                end_prepare=session.commit,
            )
            run_phases(
                ai.generate(  # a task left on the offline default
                    session,
                    company_id=acme.company_id,
                    request=ask(AITask.summary, context={"turns": []}),
                    settings=ai_settings,
                    now=clock.now(),
                    lead_id=lead_id,
                ),
                session=session,
                end_prepare=session.commit,
            )
            session.commit()
        with session_factory() as session:
            usage = session.scalars(select(AIUsage).where(AIUsage.provider == "openai")).one()
        expected = (
            Decimal(completion.input_tokens) * Decimal("0.15")
            + Decimal(completion.output_tokens) * Decimal("0.60")
        ) / 1000
        assert usage.cost == expected.quantize(Decimal("0.000001"))
        assert (usage.input_tokens, usage.output_tokens) == (
            completion.input_tokens,
            completion.output_tokens,
        )
        report = client.get("/ai/usage", headers=acme.agent).json()
        assert report["total"]["calls"] == 2
        assert set(report["by_task"]) == {"engage", "summary"}
        assert report["by_model"]["openai/gpt-4o-mini"]["input_tokens"] == completion.input_tokens
        for_lead = client.get(f"/ai/usage?lead_id={lead_id}", headers=acme.agent).json()
        assert for_lead["total"]["calls"] == 2
        other = client.get(f"/ai/usage?lead_id={uuid.uuid4()}", headers=acme.agent)
        assert other.status_code == 404


def generating_handler(ctx: JobContext) -> Phases[dict[str, Any]]:
    try:
        completion = yield from ai.generate(
            ctx.session,
            company_id=ctx.job.company_id,
            request=ask(),
            settings=ctx.settings,
            now=ctx.now,
            job_id=ctx.job.id,
        )
    except ProviderError as exc:
        raise ai.job_failure(exc) from None
    return {"text": completion.text}


def run_generating_job(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tenant: Tenant,
    factory: sessionmaker[Session],
) -> Job:
    with factory() as session:
        job_id, _ = enqueue_job(
            session, "ai.engage", {}, company_id=tenant.company_id, now=clock.now()
        )
        session.commit()
    EmbeddedWorker(
        engine, handlers={"ai.engage": generating_handler}, clock=clock, settings=settings
    ).run_until_idle()
    with factory() as session:
        return session.get_one(Job, job_id)


def test_rate_limits_retry_the_job_and_a_bad_key_fails_it_with_a_company_alert(
    engine: Engine,
    ai_settings: Settings,
    fake_openai: FakeOpenAI,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        ai.set_model(
            session,
            company_id=acme.company_id,
            task=AITask.engage,
            values={"provider": "openai", "model": "gpt-4o-mini"},
            actor="test",
            now=clock.now(),
        )
        session.commit()
    fake_openai.fail_next(status=429, retry_after=3)
    job = run_generating_job(engine, ai_settings, clock, acme, session_factory)
    assert (job.status, job.attempts) == ("queued", 1)
    assert "rate_limited" in (job.last_error or "")

    fake_openai.fail_next(status=401)
    clock.current = job.run_at
    EmbeddedWorker(
        engine, handlers={"ai.engage": generating_handler}, clock=clock, settings=ai_settings
    ).run_until_idle()
    with session_factory() as session:
        failed = session.get_one(Job, job.id)
        failures = session.scalars(select(Event).where(Event.type == "JobFailed")).all()
        alert = session.scalars(select(Event).where(Event.type == "AIProviderAuthFailed")).one()
        outcomes = session.scalars(select(AIUsage.outcome).order_by(AIUsage.created_at)).all()
    assert failed.status == "failed"
    assert failures[0].data["reason"] == "ai_auth"
    assert (alert.entity_type, alert.entity_id) == ("company", acme.company_id)
    assert alert.data["provider"] == "openai"
    assert sorted(outcomes) == ["auth", "rate_limited"]  # failed calls are accounted too
