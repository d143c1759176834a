"""OpenAI, or any OpenAI-compatible server (llama.cpp, vLLM, Ollama), through the official SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import openai

from shvya.ai.providers import (
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
)
from shvya.ai.providers.sdk_errors import SDKErrors
from shvya.config import Settings

# Also what the OpenAI embeddings raise (knowledge/openai_embeddings.py).
OPENAI_ERRORS = SDKErrors(
    base=openai.OpenAIError, status=openai.APIStatusError, connection=openai.APIConnectionError
)


def make_client(settings: Settings) -> openai.OpenAI:
    if settings.openai_api_key is None:
        raise ProviderError(ProviderErrorKind.auth, "OPENAI_API_KEY is not set")
    return openai.OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=settings.ai_timeout_seconds,
        max_retries=0,  # the job queue retries, with its backoff
    )


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.OpenAI, *, default_model: str = "gpt-5-mini") -> None:
        self._client = client
        self._default_model = default_model
        # api.openai.com's newer models take max_completion_tokens; compatible servers
        # (llama.cpp, vLLM, Ollama) know max_tokens.
        self._official = "api.openai.com" in str(client.base_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        return cls(make_client(settings))

    def complete(self, request: CompletionRequest) -> Completion:
        model = request.model or self._default_model
        messages: list[dict[str, str]] = [{"role": "system", "content": request.system}]
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        arguments: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": request.temperature,
        }
        arguments["max_completion_tokens" if self._official else "max_tokens"] = request.max_tokens
        if request.json_schema is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.json_schema,
                    "strict": False,
                },
            }
        started = time.perf_counter()
        with OPENAI_ERRORS.mapped():
            response = self._client.chat.completions.create(**arguments)
            text = response.choices[0].message.content or ""
            usage = response.usage
        latency_ms = int((time.perf_counter() - started) * 1000)
        data = _parse_json(text) if request.json_schema is not None else None
        return Completion(
            text=text,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=response.model or model,
            latency_ms=latency_ms,
            data=data,
        )


def _parse_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise ProviderError(ProviderErrorKind.bad_response, "the reply is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderError(ProviderErrorKind.bad_response, "the reply is not a JSON object")
    return data
