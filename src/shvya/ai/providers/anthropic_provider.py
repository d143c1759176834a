"""Anthropic's Messages API through the official SDK. Structured output is a forced tool call:
the model must answer with the tool's input, which the schema describes."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from shvya.ai.providers import (
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
)
from shvya.ai.providers.sdk_errors import SDKErrors
from shvya.config import Settings

ANTHROPIC_ERRORS = SDKErrors(
    base=anthropic.AnthropicError,
    status=anthropic.APIStatusError,
    connection=anthropic.APIConnectionError,
)


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self, client: anthropic.Anthropic, *, default_model: str = "claude-sonnet-5"
    ) -> None:
        self._client = client
        self._default_model = default_model

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicProvider:
        if settings.anthropic_api_key is None:
            raise ProviderError(ProviderErrorKind.auth, "ANTHROPIC_API_KEY is not set")
        client = anthropic.Anthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            timeout=settings.ai_timeout_seconds,
            max_retries=0,  # the job queue retries, with its backoff
        )
        return cls(client)

    def complete(self, request: CompletionRequest) -> Completion:
        model = request.model or self._default_model
        arguments: dict[str, Any] = {
            "model": model,
            "system": request.system,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            # No temperature: this SDK (2.x) no longer takes one; the model sets its own.
        }
        if request.json_schema is not None:
            arguments["tools"] = [
                {
                    "name": request.schema_name,
                    "description": "Report the result in this exact structure.",
                    "input_schema": request.json_schema,
                }
            ]
            arguments["tool_choice"] = {"type": "tool", "name": request.schema_name}
        started = time.perf_counter()
        with ANTHROPIC_ERRORS.mapped():
            response = self._client.messages.create(**arguments)
            if response.content is None or response.usage is None:
                raise ValueError("a message without content or usage")
            blocks = list(response.content)
            usage = response.usage
            answered_model = str(response.model or model)
        latency_ms = int((time.perf_counter() - started) * 1000)
        text_parts: list[str] = []
        data: dict[str, Any] | None = None
        for block in blocks:
            kind = getattr(block, "type", None)
            if kind == "text":
                text_parts.append(str(getattr(block, "text", "")))
            elif kind == "tool_use" and getattr(block, "name", None) == request.schema_name:
                value = getattr(block, "input", None)
                if isinstance(value, dict):
                    data = value
        if request.json_schema is not None and data is None:
            raise ProviderError(ProviderErrorKind.bad_response, "no structured answer came back")
        return Completion(
            text="".join(text_parts),
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            model=answered_model,
            latency_ms=latency_ms,
            data=data,
        )
