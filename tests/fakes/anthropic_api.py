"""A fake Anthropic Messages API for SHVYA's tests.

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread, so SHVYA's adapter
goes through the official `anthropic` SDK (checked against 2.14) exactly as against
api.anthropic.com. Point the SDK at it with
`anthropic.Anthropic(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)`.

Structured output comes two ways, both validated against the request's schema: a forced tool
(`tool_choice={"type": "tool", "name": ...}`: the answer is a `tool_use` block whose `input`
is the scripted JSON), or `output_config={"format": {"type": "json_schema", "schema": ...}}`
(the answer is a text block holding the JSON). Token counts use `approximate_tokens` from
openai_api.py, whose server plumbing this fake shares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.fakes.openai_api import (
    DEFAULT_REPLY_PREFIX,
    FakeAPIServer,
    FakeResponse,
    ProviderError,
    RecordedRequest,
    ScriptedReply,
    ScriptError,
    approximate_tokens,
    example_for_schema,
    json_response,
    retry_after_header,
    schema_errors,
    schema_problem,
    text_of_content,
    truncate_to_tokens,
)

TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,128}")
VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
USER_BLOCK_TYPES = frozenset({"text", "image", "document", "tool_result", "search_result"})
ASSISTANT_BLOCK_TYPES = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")

# status -> (error type, message) as api.anthropic.com answers them
_FAILURES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. Please try again later.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(
    status: int, error_type: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> ProviderError:
    """Anthropic's error body: the SDK reads `error.type` and `error.message` into the exception."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return ProviderError(status, body, headers)


def _invalid(message: str) -> ProviderError:
    return anthropic_error(400, "invalid_request_error", message)


@dataclass(frozen=True)
class MessageCall:
    """One answered POST /v1/messages: what was asked and what the fake said."""

    model: str
    system: str  # the system prompt's text, "" without one
    messages: list[dict[str, Any]]
    tool_names: list[str]
    tool_choice: dict[str, Any] | None
    output_schema: dict[str, Any] | None  # output_config.format.schema
    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]
    body: dict[str, Any]  # the whole request, for parameters not listed here


class FakeAnthropic(FakeAPIServer):
    """api.anthropic.com's POST /v1/messages (no streaming, no server tools)."""

    provider = "Anthropic"
    request_id_header = "request-id"

    def __init__(
        self, *, api_key: str = "sk-ant-test", models: Iterable[str] | None = None
    ) -> None:
        super().__init__(api_key=api_key, models=models)

    def _clear_state(self) -> None:
        with self._lock:
            super()._clear_state()
            self._message_calls: list[MessageCall] = []

    @property
    def message_calls(self) -> list[MessageCall]:
        with self._lock:
            return list(self._message_calls)

    def reply_json(
        self, payload: Any, *, tool_name: str | None = None, check_schema: bool = True
    ) -> None:
        """The next answer is this JSON: a tool's input when the request offers tools.

        `tool_name` picks the tool (default: the forced one, else the first offered);
        without tools it is a text block. Checked against the tool's input_schema or the
        output_config schema: a mismatch is a test bug (500, raised on exit).
        """
        self._script(
            ScriptedReply(
                "json", payload=payload, is_schema_checked=check_schema, tool_name=tool_name
            )
        )

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 429,
        retry_after: float | None = None,
        error_type: str | None = None,
        message: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next `n` requests fail unprocessed with Anthropic's error body for `status`.

        `error_type` defaults to Anthropic's for the status (429 rate_limit_error, 500
        api_error, 529 overloaded_error, ...). `retry_after` adds `retry-after`, in seconds.
        """
        self._add_failures(
            n,
            status=status,
            error_kind=error_type,
            message=message,
            retry_after=retry_after,
            path_contains=path_contains,
        )

    def _failure(
        self, status: int, *, error_kind: str | None, message: str | None, retry_after: float | None
    ) -> ProviderError:
        default_type, default_message = _FAILURES.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
        )
        return anthropic_error(
            status,
            error_kind or default_type,
            message or default_message,
            retry_after_header(retry_after),
        )

    def _unknown_model(self, model: str) -> ProviderError:
        return anthropic_error(404, "not_found_error", f"model: {model}")

    def _stub_for(self, path: str) -> dict[str, Any]:
        return {"id": self._next_id("msg_"), "type": "message"}

    # --- routing -----------------------------------------------------------------------------

    def _route(self, record: RecordedRequest) -> FakeResponse:
        self._check_auth(record.headers)
        if (record.method, record.path) != ("POST", "/v1/messages"):
            raise anthropic_error(404, "not_found_error", "Not Found")
        version = record.headers.get("anthropic-version")
        if version is None:
            raise _invalid("anthropic-version: header is required")
        if not VERSION_RE.fullmatch(version):
            raise _invalid(f"anthropic-version: invalid version {version!r}")
        if not isinstance(record.json, dict):
            raise _invalid("There was an error parsing the body of your request as JSON.")
        return self._messages(record.json)

    def _check_auth(self, headers: dict[str, str]) -> None:
        """x-api-key as the API documents it, or Bearer: how the 2.14 SDK sends api_key."""
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        keys = {headers.get("x-api-key"), bearer.strip() if scheme.lower() == "bearer" else None}
        if self.api_key not in keys:
            raise anthropic_error(401, "authentication_error", "invalid x-api-key")

    # --- POST /v1/messages -------------------------------------------------------------------

    def _messages(self, body: dict[str, Any]) -> FakeResponse:
        """Answers a Message: {id, type, role, model, content[], stop_reason, usage}."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid("model: Field required")
        self._check_model(model)
        max_tokens = body.get("max_tokens")
        if "max_tokens" not in body:
            raise _invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise _invalid("max_tokens: Input should be a valid integer >= 0")
        if "messages" not in body:
            raise _invalid("messages: Field required")
        messages = body["messages"]
        _check_messages(messages)
        system = _system_text(body.get("system"))
        if body.get("stream"):
            raise _invalid("stream: the fake Anthropic server does not stream")
        temperature = body.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, int | float) or not 0 <= temperature <= 1
        ):
            raise _invalid("temperature: Input should be a number between 0 and 1")
        tools = _check_tools(body.get("tools"))
        tool_choice = _check_tool_choice(body.get("tool_choice"), tools)
        output_schema = _output_schema(body.get("output_config"))

        content, stop_reason = self._compose(
            messages=messages,
            max_tokens=max_tokens,
            tools=tools,
            tool_choice=tool_choice,
            output_schema=output_schema,
        )
        input_tokens = approximate_tokens(system) + sum(
            approximate_tokens(text_of_content(m.get("content"))) for m in messages
        )
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": approximate_tokens(text_of_content(content)),
        }
        with self._lock:
            self._message_calls.append(
                MessageCall(
                    model=model,
                    system=system,
                    messages=messages,
                    tool_names=list(tools),
                    tool_choice=tool_choice,
                    output_schema=output_schema,
                    content=content,
                    stop_reason=stop_reason,
                    usage=usage,
                    body=body,
                )
            )
        return json_response(
            {
                "id": self._next_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    **usage,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "service_tier": "standard",
                },
            }
        )

    def _compose(
        self,
        *,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: dict[str, dict[str, Any]],
        tool_choice: dict[str, Any] | None,
        output_schema: dict[str, Any] | None,
    ) -> tuple[list[dict[str, Any]], str]:
        """(content blocks, stop_reason) from the scripted reply or the default."""
        if max_tokens == 0:  # a cache warm-up: nothing generated, nothing consumed
            return [], "max_tokens"
        choice = (tool_choice or {}).get("type", "auto")
        usable = {} if choice == "none" else tools
        reply = self._take_reply()
        if reply is not None and reply.kind == "refusal":
            return [{"type": "text", "text": reply.text or ""}], "refusal"
        is_tool_use = choice in ("tool", "any") or (
            bool(usable) and reply is not None and reply.kind == "json" and output_schema is None
        )
        if is_tool_use:
            return [self._tool_use(reply, usable, tool_choice or {})], "tool_use"
        if reply is not None and reply.kind == "text":
            text = reply.text or ""
        elif reply is not None:
            if output_schema is not None and reply.is_schema_checked:
                _check_against(reply.payload, output_schema, "output_config.format.schema")
            text = json.dumps(reply.payload, ensure_ascii=False)
        elif output_schema is not None:
            text = json.dumps(_invented(output_schema, "output_config.format.schema"))
        else:
            last_user = next(
                (text_of_content(m["content"]) for m in reversed(messages) if m["role"] == "user"),
                "",
            )
            text = DEFAULT_REPLY_PREFIX + last_user
        text, is_cut = truncate_to_tokens(text, max_tokens)
        return [{"type": "text", "text": text}], "max_tokens" if is_cut else "end_turn"

    def _tool_use(
        self,
        reply: ScriptedReply | None,
        tools: dict[str, dict[str, Any]],
        tool_choice: dict[str, Any],
    ) -> dict[str, Any]:
        forced = tool_choice.get("name") if tool_choice.get("type") == "tool" else None
        if reply is not None and reply.kind != "json":
            raise ScriptError(
                "the request forces a tool call; script its input with reply_json(), not reply()"
            )
        name = (reply.tool_name if reply else None) or forced or next(iter(tools))
        if forced is not None and name != forced:
            raise ScriptError(f"reply_json(tool_name={name!r}) but the request forces {forced!r}")
        if name not in tools:
            raise ScriptError(f"reply_json(tool_name={name!r}): the request offers no such tool")
        schema = tools[name]["input_schema"]
        where = f"tool {name!r} input_schema"
        if reply is None:
            payload = _invented(schema, where)
        else:
            payload = reply.payload
            if reply.is_schema_checked:
                _check_against(payload, schema, where)
        if not isinstance(payload, dict):
            raise ScriptError(f"a tool's input is a JSON object, not {type(payload).__name__}")
        return {"type": "tool_use", "id": self._next_id("toolu_"), "name": name, "input": payload}


# --- request checks --------------------------------------------------------------------------


def _check_messages(messages: Any) -> None:
    """Turns alternate user/assistant from a user; tool_use ids meet their tool_result next.

    Stricter than the API, which merges consecutive same-role turns: an adapter that passes
    here is well-formed anywhere. role "system" messages (the 2.14 SDK knows them) are
    accepted and take no turn.
    """
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    previous_role: str | None = None
    open_tool_uses: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise _invalid(f"{where}.role: Input should be 'user', 'assistant' or 'system'")
        if "content" not in message:
            raise _invalid(f"{where}.content: Field required")
        allowed = {
            "user": USER_BLOCK_TYPES,
            "assistant": ASSISTANT_BLOCK_TYPES,
            "system": frozenset({"text"}),
        }[role]
        blocks = _content_blocks(message["content"], f"{where}.content", allowed)
        if role == "system":
            continue
        if previous_role is None and role != "user":
            raise _invalid('messages: first message must use the "user" role')
        if role == previous_role:
            raise _invalid(
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        if role == "user":
            results = {b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"}
            if open_tool_uses - results:
                raise _invalid(
                    f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(sorted(open_tool_uses - results))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
            if results - open_tool_uses:
                raise _invalid(
                    f"{where}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{', '.join(sorted(map(str, results - open_tool_uses)))}. Each "
                    "`tool_result` block must have a corresponding `tool_use` block in the "
                    "previous message."
                )
            open_tool_uses = set()
        else:
            open_tool_uses = {b["id"] for b in blocks if b["type"] == "tool_use"}
        previous_role = role


def _content_blocks(content: Any, where: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if not content:
            raise _invalid(f"{where}: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(f"{where}: Input should be a valid string or list of content blocks")
    for index, block in enumerate(content):
        block_where = f"{where}.{index}"
        if not isinstance(block, dict) or block.get("type") not in allowed:
            tag = block.get("type") if isinstance(block, dict) else None
            raise _invalid(
                f"{block_where}: Input tag '{tag}' found using 'type' does not match any of the "
                f"expected tags: {', '.join(sorted(allowed))}"
            )
        kind = block["type"]
        if kind == "text" and not (isinstance(block.get("text"), str) and block["text"]):
            raise _invalid(f"{block_where}.text: text content blocks must be non-empty")
        if kind == "tool_use" and not (
            isinstance(block.get("id"), str)
            and isinstance(block.get("name"), str)
            and isinstance(block.get("input"), dict)
        ):
            raise _invalid(f"{block_where}: tool_use blocks need id, name and an input object")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _invalid(f"{block_where}.tool_use_id: Field required")
    return content


def _system_text(system: Any) -> str:
    """A string or a list of text blocks."""
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        return text_of_content(system)
    raise _invalid("system: Input should be a valid string or a list of text blocks")


def _check_tools(tools: Any) -> dict[str, dict[str, Any]]:
    """Client tools by name: {name, description?, input_schema{type: object}}."""
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    by_name: dict[str, dict[str, Any]] = {}
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(f"{where}.type: the fake Anthropic server runs no server tools")
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.fullmatch(name):
            raise _invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema: Field required")
        if schema.get("type") != "object":
            raise _invalid(f"{where}.input_schema.type: Input should be 'object'")
        if schema_problem(schema) is not None:
            raise _invalid(f"{where}.input_schema: JSON schema is invalid")
        if name in by_name:
            raise _invalid("tools: Tool names must be unique.")
        by_name[name] = tool
    return by_name


def _check_tool_choice(choice: Any, tools: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICE_TYPES:
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] != "none" and not tools:
        raise _invalid("tool_choice: tool_choice may only be specified while providing tools")
    if choice["type"] == "tool" and choice.get("name") not in tools:
        raise _invalid(f"tool_choice.name: tool {choice.get('name')!r} is not among tools")
    return choice


def _output_schema(config: Any) -> dict[str, Any] | None:
    """output_config.format = {type: json_schema, schema}: structured output without a tool."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _invalid("output_config: Input should be a valid dictionary")
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _invalid("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    problem = schema_problem(schema)
    if problem is not None or not isinstance(schema, dict):
        raise _invalid(f"output_config.format.schema: {problem}")
    return schema


def _check_against(payload: Any, schema: dict[str, Any], where: str) -> None:
    errors = schema_errors(payload, schema)
    if errors:
        raise ScriptError(f"reply_json() payload does not match {where}: " + "; ".join(errors))


def _invented(schema: dict[str, Any], where: str) -> Any:
    payload = example_for_schema(schema)
    if schema_errors(payload, schema):
        raise ScriptError(f"the fake cannot invent JSON for {where}; script it with reply_json()")
    return payload


__all__ = ["FakeAnthropic", "MessageCall"]
