"""The fake OpenAI and Anthropic servers, driven by the official SDKs SHVYA's adapters use.

If an SDK upgrade changes the wire protocol, these tests fail before any adapter test does.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Literal

import anthropic
import httpx
import openai
import pydantic
import pytest

from tests.fakes import openai_api
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    FakeOpenAI,
    approximate_tokens,
    embed_text,
    schema_errors,
)

OPENAI_KEY = "sk-test"
ANTHROPIC_KEY = "sk-ant-test"
CHAT_MODEL = "gpt-test"  # made up: no SDK deprecation warning, ever
EMBEDDING_MODEL = "text-embedding-3-small"
CLAUDE = "claude-test"
QUESTION = [{"role": "user", "content": "How much is the premium plan?"}]
LEAD_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["buy", "browse", "support"]},
        "budget_usd": {"type": ["number", "null"]},
    },
    "required": ["intent", "budget_usd"],
    "additionalProperties": False,
}
LEAD_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "lead", "schema": LEAD_SCHEMA, "strict": True},
}
LEAD_TOOL = {
    "name": "record_lead",
    "description": "Record what the lead wants.",
    "input_schema": LEAD_SCHEMA,
}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
def openai_client(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=fake_openai.base_url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=2.0
    ) as client:
        yield client


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture
def claude(fake_anthropic: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_anthropic.base_url, api_key=ANTHROPIC_KEY, max_retries=0, timeout=2.0
    ) as client:
        yield client


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


# --- lifecycle -------------------------------------------------------------------------------


def test_fakes_start_fast_and_stop_cleanly() -> None:
    for fake in (FakeOpenAI(), FakeAnthropic()):
        started = time.perf_counter()
        with fake:
            assert time.perf_counter() - started < 0.2
            assert fake.base_url.startswith("http://127.0.0.1:")
            thread = fake._thread
        assert thread is not None and not thread.is_alive()
        with pytest.raises(RuntimeError, match="not running"):
            _ = fake.base_url


# --- OpenAI: chat completions ----------------------------------------------------------------


def test_chat_completion_answers_the_scripted_text_with_usage(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.reply("Premium is 49 dollars a month.")
    messages = [{"role": "system", "content": "You sell SHVYA."}, *QUESTION]

    completion = openai_client.chat.completions.create(model=CHAT_MODEL, messages=messages)

    choice = completion.choices[0]
    assert choice.message.content == "Premium is 49 dollars a month."
    assert (choice.finish_reason, choice.message.refusal) == ("stop", None)
    prompt = approximate_tokens("You sell SHVYA.") + approximate_tokens(QUESTION[0]["content"])
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, 8)
    assert completion.usage.total_tokens == prompt + 8
    assert completion.model == CHAT_MODEL and completion._request_id is not None
    (sent,) = fake_openai.requests_to("/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.json["messages"] == messages and sent.status == 200
    assert fake_openai.pending_replies == 0


def test_chat_completion_defaults_to_an_echo_of_the_last_user_message(
    openai_client: openai.OpenAI,
) -> None:
    completion = openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    assert completion.choices[0].message.content == "echo: How much is the premium plan?"


def test_max_completion_tokens_cuts_the_text_with_finish_reason_length(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.reply("one two three four five six seven eight")
    completion = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, max_completion_tokens=4
    )
    assert completion.choices[0].message.content == "one two three"
    assert completion.choices[0].finish_reason == "length"


def test_json_schema_output_is_parsed_from_the_content(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.reply_json({"intent": "buy", "budget_usd": 49})

    completion = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, response_format=LEAD_FORMAT
    )

    assert json.loads(completion.choices[0].message.content or "") == {
        "intent": "buy",
        "budget_usd": 49,
    }
    (call,) = fake_openai.chat_calls
    assert (call.response_format, call.schema_name, call.is_strict) == ("json_schema", "lead", True)
    assert fake_openai.requests[0].json["response_format"] == LEAD_FORMAT


def test_sdk_parse_with_a_pydantic_model_gets_a_valid_default(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    class Budget(pydantic.BaseModel):
        amount: float
        currency: Literal["USD", "EUR"]

    class Lead(pydantic.BaseModel):
        intent: Literal["buy", "browse"]
        budget: Budget | None
        tags: list[str]

    parsed = (
        openai_client.chat.completions.parse(
            model=CHAT_MODEL, messages=QUESTION, response_format=Lead
        )
        .choices[0]
        .message.parsed
    )
    assert parsed == Lead(intent="buy", budget=Budget(amount=0, currency="USD"), tags=[])
    fake_openai.refuse("I can't judge that.")
    message = (
        openai_client.chat.completions.parse(
            model=CHAT_MODEL, messages=QUESTION, response_format=Lead
        )
        .choices[0]
        .message
    )
    assert (message.parsed, message.refusal) == (None, "I can't judge that.")


def test_a_strict_schema_must_close_every_object(openai_client: openai.OpenAI) -> None:
    open_schema = {**LEAD_SCHEMA, "additionalProperties": True}
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "lead", "schema": open_schema, "strict": True},
            },
        )
    assert caught.value.param == "response_format"
    assert "'additionalProperties' is required" in caught.value.message


def test_json_object_mode_needs_the_word_json_in_the_messages(
    openai_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        openai_client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, response_format={"type": "json_object"}
        )
    completion = openai_client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Answer in JSON: hi"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "Answer in JSON: hi"}


def test_scripted_json_that_breaks_the_schema_fails_the_test() -> None:
    fake = FakeOpenAI().start()
    with openai.OpenAI(base_url=fake.base_url + "/v1", api_key="sk-test", max_retries=0) as c:
        fake.reply_json({"intent": "maybe"})
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(
                model=CHAT_MODEL, messages=QUESTION, response_format=LEAD_FORMAT
            )
    with pytest.raises(AssertionError, match="does not match response_format schema 'lead'"):
        fake.__exit__(None, None, None)


def test_tool_messages_must_answer_the_preceding_tool_calls(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="preceeding message with 'tool_calls'"):
        openai_client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[*QUESTION, {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
        )


def test_unknown_model_is_not_found() -> None:
    with (
        FakeOpenAI(models=[CHAT_MODEL]) as fake,
        openai.OpenAI(base_url=fake.base_url + "/v1", api_key="sk-test", max_retries=0) as client,
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-9", messages=QUESTION)
        assert caught.value.code == "model_not_found"


def test_without_jsonschema_rs_only_keys_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_api, "jsonschema_rs", None)
    assert schema_errors({"intent": "maybe", "extra": 1}, LEAD_SCHEMA) == [
        "(root): 'budget_usd' is a required property",
        "(root): 'extra' was unexpected",
    ]


# --- OpenAI: embeddings ----------------------------------------------------------------------


def test_embeddings_through_the_sdk_default_base64(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    texts = [
        "What is the price of the premium plan?",
        "premium plan price per month",
        "Can I bring my dog to the office?",
    ]

    response = openai_client.embeddings.create(model=EMBEDDING_MODEL, input=texts)

    vectors = [item.embedding for item in response.data]
    assert [len(v) for v in vectors] == [DEFAULT_EMBEDDING_DIMENSIONS] * 3
    assert vectors[0] == embed_text(texts[0])  # float32 round-trips exactly
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert response.usage.prompt_tokens == sum(approximate_tokens(t) for t in texts)
    assert fake_openai.requests[0].json["encoding_format"] == "base64"  # the SDK's default
    assert fake_openai.embedding_calls[0].inputs == texts


def test_embeddings_as_floats_with_dimensions(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    response = openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input="hello", dimensions=16, encoding_format="float"
    )
    assert response.data[0].embedding == embed_text("hello", 16)
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        openai_client.embeddings.create(model=EMBEDDING_MODEL, input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        openai_client.embeddings.create(model="text-embedding-ada-002", input="hi", dimensions=8)


# --- OpenAI: failures ------------------------------------------------------------------------


def test_rate_limit_carries_retry_after_to_the_exception(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.reply("after the limit")
    fake_openai.fail_next(status=429, retry_after=2)

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)

    assert caught.value.response.headers["retry-after"] == "2"
    assert (caught.value.code, caught.value.type) == ("rate_limit_exceeded", "requests")
    completion = openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    assert completion.choices[0].message.content == "after the limit"  # not consumed by the 429


def test_insufficient_quota_is_a_429_with_its_own_code(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.fail_next(status=429, code="insufficient_quota")
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.embeddings.create(model=EMBEDDING_MODEL, input="hi")
    assert (caught.value.code, caught.value.type) == ("insufficient_quota", "insufficient_quota")
    assert "retry-after" not in caught.value.response.headers


def test_server_error_and_authentication_errors(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    fake_openai.fail_next(status=401)
    with pytest.raises(openai.AuthenticationError):
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    with (
        openai.OpenAI(
            base_url=fake_openai.base_url + "/v1", api_key="sk-wrong-key", max_retries=0
        ) as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    assert caught.value.body == {
        "message": "Incorrect API key provided: sk-****-key. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_a_late_answer_times_the_client_out(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.delay_next(2.0)
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, timeout=0.2)
    assert time.perf_counter() - started < 1.0
    assert len(fake_openai.chat_calls) == 1  # processed: the answer was only late


def test_malformed_answers_surface_as_the_sdk_shows_them(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    fake_openai.malformed_next(kind="invalid_json")
    with pytest.raises(json.JSONDecodeError):  # not wrapped in an openai exception
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    fake_openai.malformed_next(kind="missing_fields")
    completion = openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    assert completion.choices is None  # the SDK does not validate: the adapter must
    fake_openai.malformed_next(kind="html")
    page = openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
    assert isinstance(page, str)  # a non-JSON content type comes back as text
    fake_openai.drop_next()
    with pytest.raises(openai.APIConnectionError):
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)


def test_concurrent_requests_each_take_one_scripted_reply(
    fake_openai: FakeOpenAI, openai_client: openai.OpenAI
) -> None:
    for index in range(8):
        fake_openai.reply(f"reply {index}")
    answers: list[str | None] = []

    def ask() -> None:
        completion = openai_client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION)
        answers.append(completion.choices[0].message.content)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(answers) == sorted(f"reply {index}" for index in range(8))
    assert len(fake_openai.wait_for_requests(8, path_contains="/chat/completions")) == 8


# --- Anthropic -------------------------------------------------------------------------------


def test_messages_create_answers_text_with_usage(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.reply("Premium is 49 dollars a month.")

    message = claude.messages.create(
        model=CLAUDE, max_tokens=256, system="You sell SHVYA.", messages=QUESTION
    )

    (block,) = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == "Premium is 49 dollars a month."
    assert (message.stop_reason, message.role, message.model) == ("end_turn", "assistant", CLAUDE)
    prompt = approximate_tokens("You sell SHVYA.") + approximate_tokens(QUESTION[0]["content"])
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, 8)
    assert message.id.startswith("msg_") and message._request_id is not None
    (sent,) = fake_anthropic.requests_to("/v1/messages")
    assert sent.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"  # the 2.14 SDK's way
    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION


def test_a_forced_tool_returns_the_scripted_input(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.reply_json({"intent": "buy", "budget_usd": 49})

    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        messages=QUESTION,
        tools=[LEAD_TOOL],
        tool_choice={"type": "tool", "name": "record_lead"},
    )

    (block,) = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock) and message.stop_reason == "tool_use"
    assert (block.name, block.input) == ("record_lead", {"intent": "buy", "budget_usd": 49})
    assert block.id.startswith("toolu_")
    unscripted = claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        messages=QUESTION,
        tools=[LEAD_TOOL],
        tool_choice={"type": "tool", "name": "record_lead"},
    )
    invented = unscripted.content[0]
    assert isinstance(invented, anthropic.types.ToolUseBlock)
    assert schema_errors(invented.input, LEAD_SCHEMA) == []


def test_output_config_json_schema_answers_json_text(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.reply_json({"intent": "browse", "budget_usd": None})
    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        messages=QUESTION,
        output_config={"format": {"type": "json_schema", "schema": LEAD_SCHEMA}},
    )
    (block,) = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert json.loads(block.text) == {
        "intent": "browse",
        "budget_usd": None,
    }
    assert fake_anthropic.message_calls[0].output_schema == LEAD_SCHEMA


def test_turns_must_alternate_and_tool_uses_meet_their_results(
    claude: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=[*QUESTION, *QUESTION])
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "record_lead", "input": {}}
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result` blocks"):
        claude.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=[*QUESTION, {"role": "assistant", "content": [tool_use]}, *QUESTION],
        )


def test_max_tokens_cuts_the_text(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.reply("one two three four five six seven eight")
    message = claude.messages.create(model=CLAUDE, max_tokens=4, messages=QUESTION)
    (block,) = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert (block.text, message.stop_reason) == ("one two three", "max_tokens")


def test_anthropic_failures_raise_the_sdk_exceptions(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.fail_next(status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.type == "rate_limit_error"

    fake_anthropic.fail_next(status=529)
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    assert isinstance(overloaded.value, anthropic.InternalServerError)
    assert overloaded.value.type == "overloaded_error"

    fake_anthropic.fail_next(status=500)
    with pytest.raises(anthropic.InternalServerError) as crashed:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    assert crashed.value.type == "api_error"

    with (
        anthropic.Anthropic(
            base_url=fake_anthropic.base_url, api_key="sk-ant-wrong", max_retries=0
        ) as wrong,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        wrong.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }


def test_anthropic_timeout_and_malformed_answers(
    fake_anthropic: FakeAnthropic, claude: anthropic.Anthropic
) -> None:
    fake_anthropic.delay_next(2.0)
    with pytest.raises(anthropic.APITimeoutError):
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION, timeout=0.2)
    fake_anthropic.malformed_next(kind="invalid_json")
    with pytest.raises(json.JSONDecodeError):
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    fake_anthropic.malformed_next(kind="missing_fields")
    assert claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION).content is None


def test_anthropic_accepts_x_api_key_and_requires_a_version(fake_anthropic: FakeAnthropic) -> None:
    url = fake_anthropic.base_url + "/v1/messages"
    body = {"model": CLAUDE, "max_tokens": 64, "messages": QUESTION}
    with httpx.Client(verify=False) as client:
        ok = client.post(
            url, json=body, headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        )
        unversioned = client.post(url, json=body, headers={"x-api-key": ANTHROPIC_KEY})
    assert ok.status_code == 200 and ok.json()["content"][0]["text"].startswith("echo: ")
    assert ok.headers["request-id"].startswith("req_")
    assert unversioned.status_code == 400
    assert unversioned.json()["error"]["message"] == "anthropic-version: header is required"
