"""AI providers behind one small protocol (docs/architecture.md rule 7). Only the modules in
this package import an SDK; the rest of SHVYA sees CompletionRequest in, Completion out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol


class AITask(StrEnum):
    engage = "engage"
    bumpup = "bumpup"
    summary = "summary"
    extract = "extract"
    # A lead's question rewritten into the knowledge base's language before retrieval
    # (docs/ai.md 5.6); unconfigured, it takes the extract task's model (ai.service).
    rewrite = "rewrite"


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    task: AITask
    system: str
    messages: list[ChatMessage]
    model: str = ""
    max_tokens: int = 512
    temperature: float = 0.3
    # Structured output: the reply must be a JSON object valid against this JSON Schema.
    json_schema: dict[str, Any] | None = None
    schema_name: str = "result"
    # What the prompt was built from (passages, stage policy, the lead's words): LLMs read it
    # in the prompt; the offline provider works from it directly.
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    latency_ms: int
    data: dict[str, Any] | None = None  # the parsed object, for structured output


class ProviderErrorKind(StrEnum):
    rate_limited = "rate_limited"  # 429: retry after the backoff (or Retry-After)
    unavailable = "unavailable"  # 5xx, overloaded, timeouts, connection errors: retry
    auth = "auth"  # a bad or revoked key: nothing works until a person fixes it
    bad_request = "bad_request"  # this request can never succeed as it is
    bad_response = "bad_response"  # an answer we cannot use (not JSON, not the schema)


class ProviderError(Exception):
    def __init__(
        self, kind: ProviderErrorKind, message: str, *, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after_seconds = retry_after_seconds

    @property
    def is_retryable(self) -> bool:
        return self.kind in (
            ProviderErrorKind.rate_limited,
            ProviderErrorKind.unavailable,
            ProviderErrorKind.bad_response,
        )


class TextProvider(Protocol):
    name: str

    def complete(self, request: CompletionRequest) -> Completion: ...
