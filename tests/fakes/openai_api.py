"""A fake OpenAI API (chat completions and embeddings) for SHVYA's tests.

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread, so SHVYA's adapter
goes through the official `openai` SDK (checked against 3.57), sockets and timeouts exactly as
against api.openai.com. Point the SDK at it with
`openai.OpenAI(base_url=fake.base_url + "/v1", api_key=fake.api_key, max_retries=0)`.

Replies come from a queue the test fills (`reply`, `reply_json`, `refuse`), else a
deterministic default. Token counts are an approximation, not tiktoken: see
`approximate_tokens`. Embeddings are a hashed bag of words: see `embed_text`.

The server plumbing (`FakeAPIServer`, `RecordedRequest`, schema helpers) also serves
anthropic_api.py: it lives here only because the fakes were asked to stay in these files.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import socket
import threading
import time
import traceback
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

try:  # a full Draft 2020-12 validator; schemathesis (a dev dependency) brings it
    import jsonschema_rs
except ImportError:  # pragma: no cover - only without the dev dependencies
    jsonschema_rs = None  # type: ignore[assignment]

DEFAULT_EMBEDDING_DIMENSIONS = 64
DEFAULT_REPLY_PREFIX = "echo: "  # the default reply: this, then the last user message
SCHEMA_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
WORD_RE = re.compile(r"\w+")
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
USER_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})

MalformedKind = Literal["invalid_json", "missing_fields", "html"]


# --- Helpers both fakes use ------------------------------------------------------------------


def approximate_tokens(text: str) -> int:
    """ceil(words * 4 / 3), words split on whitespace: deterministic, so tests can assert usage.

    OpenAI's rule of thumb (a token is about 3/4 of an English word); never tiktoken's count.
    """
    return (4 * len(text.split()) + 2) // 3


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Why `instance` does not validate against `schema`; empty when it does.

    Uses jsonschema_rs (full JSON Schema) when installed; without it, only a recursive check
    of `required` keys, `properties` and `additionalProperties: false`.
    """
    if jsonschema_rs is not None:
        validator = jsonschema_rs.validator_for(schema)
        return [
            f"{'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]
    return _required_key_errors(instance, schema, schema, "(root)")


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None."""
    if not isinstance(schema, dict):
        return "a schema must be an object"
    if jsonschema_rs is None:
        return None
    try:
        jsonschema_rs.validator_for(schema)
    except (ValueError, jsonschema_rs.ValidationError) as error:
        return str(error).splitlines()[0]
    return None


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """The smallest plausible instance: a deterministic default structured reply.

    First enum value or const, required properties only, empty arrays unless minItems, ""
    and 0 unless a minimum says otherwise. Callers validate it: exotic schemas may defeat it.
    """
    root = schema if root is None else root
    if "$ref" in schema:
        return example_for_schema(_resolve_ref(schema["$ref"], root), root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for keyword in ("anyOf", "oneOf", "allOf"):
        if schema.get(keyword):
            return example_for_schema(schema[keyword][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: example_for_schema(properties.get(name, {}), root)
            for name in schema.get("required", [])
        }
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, dict) else {}
        return [example_for_schema(items, root) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#"):
        raise ScriptError(f"the fake resolves only local $refs, not {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return dict(node)


def _required_key_errors(
    instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str
) -> list[str]:
    if "$ref" in schema:
        schema = _resolve_ref(schema["$ref"], root)
    if not isinstance(instance, dict) or "properties" not in schema:
        return []
    properties = schema["properties"]
    errors = [
        f"{where}: {name!r} is a required property"
        for name in schema.get("required", [])
        if name not in instance
    ]
    if schema.get("additionalProperties") is False:
        errors += [
            f"{where}: {name!r} was unexpected" for name in instance if name not in properties
        ]
    for name, value in instance.items():
        if isinstance(properties.get(name), dict):
            errors += _required_key_errors(value, properties[name], root, f"{where}/{name}")
    return errors


def text_of_content(content: Any) -> str:
    """The text a message carries: a string, or its text parts (tool results included)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "tool_result":
            texts.append(text_of_content(part.get("content")))
        elif part.get("type") == "tool_use":
            texts.append(json.dumps(part.get("input")))
    return " ".join(texts)


def truncate_to_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut `text` to what fits in `max_tokens` by approximate_tokens; True when it was cut."""
    if approximate_tokens(text) <= max_tokens:
        return text, False
    return " ".join(text.split()[: max_tokens * 3 // 4]), True


# --- What the fakes record -------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON
    status: int | None = None  # set as the answer goes out; None for dropped connections


@dataclass(frozen=True)
class ChatCall:
    """One answered chat completion: what was asked and what the fake said."""

    model: str
    messages: list[dict[str, Any]]
    response_format: Literal["text", "json_object", "json_schema"]
    schema_name: str | None
    schema: dict[str, Any] | None
    is_strict: bool
    content: str | None
    refusal: str | None
    finish_reason: str
    usage: dict[str, int]
    body: dict[str, Any]  # the whole request, for parameters not listed here


@dataclass(frozen=True)
class EmbeddingCall:
    model: str
    inputs: list[str]
    dimensions: int
    encoding_format: Literal["float", "base64"]


@dataclass(frozen=True)
class ScriptedReply:
    kind: Literal["text", "json", "refusal"]
    text: str | None = None
    payload: Any = None
    is_schema_checked: bool = True
    tool_name: str | None = None  # FakeAnthropic: the tool whose input `payload` is


class ProviderError(Exception):
    """An error answer in the provider's own shape; raised anywhere in request handling."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers

    def response(self) -> FakeResponse:
        return FakeResponse(self.status, json.dumps(self.body).encode(), headers=self.headers)


class ScriptError(Exception):
    """The test scripted something the request cannot carry: a test bug, raised on exit."""


@dataclass(frozen=True)
class FakeResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(payload: Any, status: int = 200) -> FakeResponse:
    return FakeResponse(status, json.dumps(payload).encode())


@dataclass
class _Fault:
    kind: Literal["fail", "delay", "drop", "malformed"]
    path_contains: str | None
    status: int = 500
    error_kind: str | None = None  # OpenAI's `code` or Anthropic's error `type`
    message: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    is_processed: bool = True
    malformed: MalformedKind = "invalid_json"


def retry_after_header(seconds: float | None) -> tuple[tuple[str, str], ...]:
    if seconds is None:
        return ()
    value = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    return (("retry-after", value),)


# --- The HTTP server -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeAPIServer) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs pool connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track_connection(self.connection, is_open=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track_connection(self.connection, is_open=False)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep pytest output clean; fake.requests is the log


class FakeAPIServer:
    """What FakeOpenAI and FakeAnthropic share: thread, recordings, faults, scripted replies."""

    provider = "API"
    request_id_header = "x-request-id"

    def __init__(self, *, api_key: str, models: Iterable[str] | None = None) -> None:
        self.api_key = api_key
        self.models = None if models is None else frozenset(models)  # None: any model
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._ids = itertools.count(1)
        # Called in the server's thread with each request before it is answered: a test can
        # look at the world as it is while the client waits (e.g. its open transactions).
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._clear_state()

    def _clear_state(self) -> None:
        with self._lock:
            self._requests: list[RecordedRequest] = []
            self._faults: list[_Fault] = []
            self._replies: deque[ScriptedReply] = deque()
            self.server_errors: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # how long stop() waits for the loop
            name=f"fake-{self.provider.lower()}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes delay_next waits
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive sockets would hold handler threads
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None and self.server_errors:
            # A bug in the fake or in the test's script must not pass as a provider outage.
            raise AssertionError(
                f"the fake {self.provider} server failed:\n" + "\n".join(self.server_errors)
            )

    def reset(self) -> None:
        """Forget requests, calls, faults and scripted replies; keep key and models."""
        self._clear_state()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the fake {self.provider} server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _track_connection(self, connection: socket.socket, *, is_open: bool) -> None:
        with self._lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}fake{next(self._ids):06d}"

    # --- recordings --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(
        self, path_contains: str, *, method: str | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._requests
                if path_contains in r.path and (method is None or r.method == method.upper())
            ]

    def wait_for_requests(
        self, count: int, *, path_contains: str = "", timeout_seconds: float = 5.0
    ) -> list[RecordedRequest]:
        """Wait (bounded, no sleeping) for `count` answered requests: tests with workers."""

        def answered() -> list[RecordedRequest]:
            return [r for r in self._requests if path_contains in r.path and r.status is not None]

        with self._changed:
            if not self._changed.wait_for(lambda: len(answered()) >= count, timeout_seconds):
                raise TimeoutError(
                    f"{len(answered())} of {count} requests to {path_contains!r} "
                    f"within {timeout_seconds} s"
                )
            return answered()

    # --- scripted replies --------------------------------------------------------------------

    def reply(self, text: str) -> None:
        """The next answer's text, sent verbatim whatever format was asked: a model gone astray."""
        self._script(ScriptedReply("text", text=text))

    def reply_json(self, payload: Any, *, check_schema: bool = True) -> None:
        """The next answer is this JSON, validated against the request's schema.

        A mismatch is a test bug (500, raised on exit); `check_schema=False` sends it anyway.
        """
        self._script(ScriptedReply("json", payload=payload, is_schema_checked=check_schema))

    def refuse(self, text: str = "I'm sorry, I can't help with that.") -> None:
        """The next answer is a safety refusal."""
        self._script(ScriptedReply("refusal", text=text))

    @property
    def pending_replies(self) -> int:
        """Scripted replies no request has consumed yet."""
        with self._lock:
            return len(self._replies)

    def _script(self, reply: ScriptedReply) -> None:
        with self._lock:
            self._replies.append(reply)

    def _take_reply(self) -> ScriptedReply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def _check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise self._unknown_model(model)

    # --- fault injection ---------------------------------------------------------------------

    def _add_faults(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend(_Fault(**vars(fault)) for _ in range(n))

    def _add_failures(
        self,
        n: int,
        *,
        status: int,
        error_kind: str | None,
        message: str | None,
        retry_after: float | None,
        path_contains: str | None,
    ) -> None:
        fault = _Fault(
            "fail",
            path_contains,
            status=status,
            error_kind=error_kind,
            message=message,
            retry_after=retry_after,
        )
        self._add_faults(n, fault)

    def delay_next(self, seconds: float, n: int = 1, *, path_contains: str | None = None) -> None:
        """The next `n` requests are processed at once but answered `seconds` later.

        A client that times out meanwhile has still used up the scripted reply: as a real
        provider bills the tokens of an answer nobody read.
        """
        self._add_faults(n, _Fault("delay", path_contains, seconds=seconds))

    def drop_next(
        self, n: int = 1, *, is_processed: bool = True, path_contains: str | None = None
    ) -> None:
        """The next `n` requests are read, then the connection closes with no answer."""
        self._add_faults(n, _Fault("drop", path_contains, is_processed=is_processed))

    def malformed_next(
        self,
        n: int = 1,
        *,
        kind: MalformedKind = "invalid_json",
        path_contains: str | None = None,
    ) -> None:
        """The next `n` requests get a 200 the SDK cannot use, without being processed.

        `invalid_json`: truncated JSON labelled application/json; `missing_fields`: valid
        JSON without the answer's fields; `html`: a proxy's HTML page labelled text/html.
        """
        self._add_faults(n, _Fault("malformed", path_contains, malformed=kind))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path_contains is None or fault.path_contains in path:
                    return self._faults.pop(index)
        return None

    def _malformed_response(self, fault: _Fault, path: str) -> FakeResponse:
        if fault.malformed == "missing_fields":
            return json_response(self._stub_for(path))
        if fault.malformed == "html":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return FakeResponse(200, page, content_type="text/html")
        return FakeResponse(200, json.dumps(self._stub_for(path)).encode()[:-3])

    # --- provider hooks ----------------------------------------------------------------------

    def _route(self, record: RecordedRequest) -> FakeResponse:
        raise NotImplementedError

    def _failure(
        self, status: int, *, error_kind: str | None, message: str | None, retry_after: float | None
    ) -> ProviderError:
        raise NotImplementedError

    def _unknown_model(self, model: str) -> ProviderError:
        raise NotImplementedError

    def _stub_for(self, path: str) -> dict[str, Any]:
        """A 200 body with an id and type but none of the fields an answer needs."""
        raise NotImplementedError

    # --- serving -----------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        record = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=dict(parse_qsl(split.query)),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=raw,
            json=_parse_json(raw),
        )
        with self._changed:
            self._requests.append(record)
        if self.on_request is not None:
            self.on_request(record)
        fault = self._take_fault(split.path)
        if fault is None or fault.kind == "delay":
            response = self._answer(record)
        elif fault.kind == "fail":
            error = self._failure(
                fault.status,
                error_kind=fault.error_kind,
                message=fault.message,
                retry_after=fault.retry_after,
            )
            response = error.response()
        elif fault.kind == "malformed":
            response = self._malformed_response(fault, split.path)
        else:  # drop
            if fault.is_processed:
                self._answer(record)
            handler.close_connection = True
            return
        if fault is not None and fault.kind == "delay" and self._stopping.wait(fault.seconds):
            handler.close_connection = True
            return
        with self._changed:  # before the bytes leave: the client may look at once
            record.status = response.status
            self._changed.notify_all()
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.send_header(self.request_id_header, self._next_id("req_"))
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:
            handler.close_connection = True  # the client gave up (timed out) meanwhile

    def _answer(self, record: RecordedRequest) -> FakeResponse:
        try:
            return self._route(record)
        except ProviderError as error:
            return error.response()
        except ScriptError as error:
            message = str(error)
        except Exception:
            message = traceback.format_exc()
        with self._lock:
            self.server_errors.append(message)
        return self._failure(500, error_kind=None, message=message, retry_after=None).response()


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --- Embeddings ------------------------------------------------------------------------------


def embed_text(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """A hashed bag of words, L2-normalised, rounded to float32.

    Each lower-cased word adds +-1 at an index taken from its BLAKE2b hash, so texts sharing
    words have a higher cosine similarity than texts that share none. Text without words
    hashes whole. float32 so that the float and base64 encodings carry the same numbers.
    """
    vector = [0.0] * dimensions
    for word in WORD_RE.findall(text.lower()) or [text]:
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        vector[digest % dimensions] += 1.0 if digest >> 63 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every word cancelled out
        vector[0], norm = 1.0, 1.0
    return array("f", [x / norm for x in vector]).tolist()


def _base64_floats(vector: list[float]) -> str:
    """Little-endian float32s, base64: what the SDK decodes with array("f") or numpy."""
    packed = array("f", vector)
    if packed.itemsize != 4:  # pragma: no cover - every platform CPython runs on
        raise RuntimeError("float32 arrays are not 4 bytes here")
    if not _IS_LITTLE_ENDIAN:  # pragma: no cover
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


_IS_LITTLE_ENDIAN = array("H", [1]).tobytes()[0] == 1


# --- OpenAI ----------------------------------------------------------------------------------


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> ProviderError:
    """OpenAI's error body: the SDK reads `error.code/type/param` into the exception."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return ProviderError(status, body, headers)


def _missing(param: str) -> ProviderError:
    return openai_error(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid_type(param: str, expected: str, value: Any) -> ProviderError:
    return openai_error(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _invalid_value(param: str, value: Any, supported: Iterable[str]) -> ProviderError:
    allowed = ", ".join(f"'{s}'" for s in supported)
    return openai_error(
        400,
        f"Invalid value: {json.dumps(value)}. Supported values are: {allowed}.",
        param=param,
        code="invalid_value",
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# (status) -> (type, code, message) as api.openai.com answers them
_OPENAI_FAILURES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM). Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_INSUFFICIENT_QUOTA = "You exceeded your current quota, please check your plan and billing details."


@dataclass(frozen=True)
class _Format:
    kind: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    is_strict: bool = False


class FakeOpenAI(FakeAPIServer):
    """api.openai.com's POST /v1/chat/completions and POST /v1/embeddings, Bearer auth."""

    provider = "OpenAI"
    request_id_header = "x-request-id"

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        models: Iterable[str] | None = None,
        embedding_dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS,
    ) -> None:
        self.embedding_dimensions = embedding_dimensions  # when the request sends none
        super().__init__(api_key=api_key, models=models)

    def _clear_state(self) -> None:
        with self._lock:
            super()._clear_state()
            self._chat_calls: list[ChatCall] = []
            self._embedding_calls: list[EmbeddingCall] = []

    @property
    def chat_calls(self) -> list[ChatCall]:
        with self._lock:
            return list(self._chat_calls)

    @property
    def embedding_calls(self) -> list[EmbeddingCall]:
        with self._lock:
            return list(self._embedding_calls)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 429,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next `n` requests fail unprocessed with OpenAI's error body for `status`.

        `code` defaults to OpenAI's for the status (429: rate_limit_exceeded; pass
        "insufficient_quota" for the 429 that retrying never fixes). `retry_after` adds
        the `retry-after` header, in seconds.
        """
        self._add_failures(
            n,
            status=status,
            error_kind=code,
            message=message,
            retry_after=retry_after,
            path_contains=path_contains,
        )

    def _failure(
        self, status: int, *, error_kind: str | None, message: str | None, retry_after: float | None
    ) -> ProviderError:
        error_type, code, default_message = _OPENAI_FAILURES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        if error_kind == "insufficient_quota":
            error_type, default_message = "insufficient_quota", _INSUFFICIENT_QUOTA
        return openai_error(
            status,
            message or default_message,
            error_type=error_type,
            code=error_kind or code,
            headers=retry_after_header(retry_after),
        )

    def _unknown_model(self, model: str) -> ProviderError:
        return openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _stub_for(self, path: str) -> dict[str, Any]:
        if path.endswith("/embeddings"):
            return {"object": "list", "model": "unknown"}
        return {"id": self._next_id("chatcmpl-"), "object": "chat.completion"}

    # --- routing -----------------------------------------------------------------------------

    def _route(self, record: RecordedRequest) -> FakeResponse:
        self._check_auth(record.headers.get("authorization", ""))
        route = (record.method, record.path)
        if route not in (("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")):
            raise openai_error(404, f"Invalid URL ({record.method} {record.path})")
        if not isinstance(record.json, dict):
            raise openai_error(
                400,
                "We could not parse the JSON body of your request. The OpenAI API expects a "
                "JSON payload, but what was sent was not valid JSON.",
            )
        if record.path == "/v1/embeddings":
            return self._embeddings(record.json)
        return self._chat(record.json)

    def _check_auth(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        if not key.strip():
            raise openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            masked = key.strip()[:3] + "*" * 4 + key.strip()[-4:]
            raise openai_error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # --- POST /v1/chat/completions -----------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> FakeResponse:
        """Answers a `chat.completion`: one choice, message{role, content, refusal}, usage."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise openai_error(400, "you must provide a model parameter")
        self._check_model(model)
        if "messages" not in body:
            raise _missing("messages")
        messages = body["messages"]
        _check_chat_messages(messages)
        if body.get("stream"):
            raise openai_error(400, "The fake OpenAI server does not stream.", param="stream")
        if body.get("n") not in (None, 1):
            raise openai_error(400, "The fake OpenAI server answers one choice (n=1).", param="n")
        _check_number(body, "temperature", 0, 2)
        _check_number(body, "top_p", 0, 1)
        if body.get("tool_choice") not in (None, "auto", "none"):
            raise openai_error(
                400, "The fake OpenAI server does not call tools.", param="tool_choice"
            )
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise _invalid_type("max_completion_tokens", "an integer", limit)
        fmt = _response_format(body.get("response_format"), messages)

        reply = self._take_reply()
        content, refusal = self._chat_content(fmt, messages, reply)
        finish_reason = "stop"
        if limit is not None and content is not None and fmt.kind == "text":
            content, is_cut = truncate_to_tokens(content, limit)
            finish_reason = "length" if is_cut else "stop"
        prompt_tokens = sum(approximate_tokens(text_of_content(m.get("content"))) for m in messages)
        completion_tokens = approximate_tokens(content or refusal or "")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        with self._lock:
            self._chat_calls.append(
                ChatCall(
                    model=model,
                    messages=messages,
                    response_format=fmt.kind,
                    schema_name=fmt.name,
                    schema=fmt.schema,
                    is_strict=fmt.is_strict,
                    content=content,
                    refusal=refusal,
                    finish_reason=finish_reason,
                    usage=usage,
                    body=body,
                )
            )
        return json_response(
            {
                "id": self._next_id("chatcmpl-"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": refusal,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    **usage,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )

    def _chat_content(
        self, fmt: _Format, messages: list[dict[str, Any]], reply: ScriptedReply | None
    ) -> tuple[str | None, str | None]:
        """(content, refusal); structured replies are checked here, before answering."""
        if reply is not None and reply.kind == "refusal":
            return None, reply.text
        if reply is not None and reply.kind == "text":
            return reply.text, None
        last_user = next(
            (text_of_content(m.get("content")) for m in reversed(messages) if m["role"] == "user"),
            "",
        )
        if reply is not None:
            payload = reply.payload
            if reply.is_schema_checked:
                _check_scripted(payload, fmt)
        elif fmt.kind == "json_schema":
            payload = example_for_schema(fmt.schema or {})
            if schema_errors(payload, fmt.schema or {}):
                raise ScriptError(
                    f"the fake cannot invent JSON for schema {fmt.name!r}; script it with "
                    "reply_json()"
                )
        elif fmt.kind == "json_object":
            payload = {"echo": last_user}
        else:
            return DEFAULT_REPLY_PREFIX + last_user, None
        return json.dumps(payload, ensure_ascii=False), None

    # --- POST /v1/embeddings -----------------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> FakeResponse:
        """Answers {object: list, data: [{object: embedding, index, embedding}], model, usage}.

        `embedding` is a list of floats, or with encoding_format=base64 (what the SDK sends
        unless told otherwise) a base64 string of little-endian float32s.
        """
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _missing("model")
        self._check_model(model)
        if "input" not in body:
            raise _missing("input")
        inputs = _embedding_inputs(body["input"])
        dimensions = body.get("dimensions")
        if dimensions is None:
            dimensions = self.embedding_dimensions
        elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise _invalid_type("dimensions", "a positive integer", dimensions)
        elif not model.startswith("text-embedding-3"):
            raise openai_error(400, "This model does not support specifying dimensions.")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _invalid_value("encoding_format", encoding, ("float", "base64"))
        vectors = [embed_text(text, dimensions) for text in inputs]
        tokens = sum(approximate_tokens(text) for text in inputs)
        with self._lock:
            self._embedding_calls.append(EmbeddingCall(model, inputs, dimensions, encoding))
        return json_response(
            {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "index": index,
                        "embedding": _base64_floats(vector) if encoding == "base64" else vector,
                    }
                    for index, vector in enumerate(vectors)
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


# --- request checks --------------------------------------------------------------------------


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid_type(name, "a decimal", value)
    if not low <= value <= high:
        raise openai_error(
            400,
            f"Invalid '{name}': decimal out of range. Expected a value between {low} and "
            f"{high}, but got {value} instead.",
            param=name,
            code="decimal_out_of_range",
        )


def _check_chat_messages(messages: Any) -> None:
    """Roles, contents, and tool replies that answer exactly the preceding tool_calls."""
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise openai_error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    open_tool_calls: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid_type(where, "an object", message)
        if "role" not in message:
            raise _missing(f"{where}.role")
        role = message["role"]
        if role not in CHAT_ROLES:
            raise _invalid_value(f"{where}.role", role, CHAT_ROLES)
        if role != "tool" and open_tool_calls:
            raise _unanswered_tool_calls(open_tool_calls, where)
        content = message.get("content")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if content is None and not calls and not message.get("function_call"):
                raise _missing(f"{where}.content")
            if content is not None:
                _check_chat_content(content, where, frozenset({"text", "refusal"}))
            open_tool_calls = {c["id"] for c in calls if isinstance(c, dict) and "id" in c}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _missing(f"{where}.tool_call_id")
            if call_id not in open_tool_calls:
                raise openai_error(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"{where}.role",
                )
            open_tool_calls.discard(call_id)
            if "content" not in message:
                raise _missing(f"{where}.content")
            _check_chat_content(content, where, frozenset({"text"}))
        else:
            if "content" not in message:
                raise _missing(f"{where}.content")
            allowed = USER_PART_TYPES if role == "user" else frozenset({"text"})
            _check_chat_content(content, where, allowed)
    if open_tool_calls:
        raise _unanswered_tool_calls(open_tool_calls, "messages")


def _unanswered_tool_calls(ids: set[str], param: str) -> ProviderError:
    return openai_error(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(sorted(ids)),
        param=param,
    )


def _check_chat_content(content: Any, where: str, allowed_parts: frozenset[str]) -> None:
    param = f"{where}.content"
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid_type(param, "one of a string or array of objects", content)
    if not content:
        raise openai_error(
            400,
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param=param,
            code="empty_array",
        )
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _invalid_type(part_param, "an object", part)
        if part.get("type") not in allowed_parts:
            raise _invalid_value(f"{part_param}.type", part.get("type"), sorted(allowed_parts))
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _missing(f"{part_param}.text")
        if part["type"] == "image_url" and not isinstance(
            (part.get("image_url") or {}).get("url"), str
        ):
            raise _missing(f"{part_param}.image_url.url")


def _response_format(value: Any, messages: list[dict[str, Any]]) -> _Format:
    """text, json_object (which needs "json" in the messages) or json_schema{name, schema}."""
    if value is None:
        return _Format("text")
    if not isinstance(value, dict):
        raise _invalid_type("response_format", "an object", value)
    kind = value.get("type")
    if kind == "text":
        return _Format("text")
    if kind == "json_object":
        if not any("json" in text_of_content(m.get("content")).lower() for m in messages):
            raise openai_error(
                400,
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                param="messages",
            )
        return _Format("json_object")
    if kind != "json_schema":
        raise _invalid_value("response_format.type", kind, ("json_object", "json_schema", "text"))
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _missing("response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str):
        raise _missing("response_format.json_schema.name")
    if not SCHEMA_NAME_RE.fullmatch(name):
        raise openai_error(
            400,
            f"Invalid 'response_format.json_schema.name': string does not match pattern. "
            f"Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$', got '{name}'.",
            param="response_format.json_schema.name",
            code="invalid_value",
        )
    schema = spec.get("schema", {})
    is_strict = spec.get("strict") is True
    problem = schema_problem(schema)
    if problem is None and is_strict:
        problem = _strict_schema_problem(schema, schema, ())
    if problem is not None:
        raise openai_error(
            400,
            f"Invalid schema for response_format '{name}': {problem}",
            param="response_format",
        )
    return _Format("json_schema", name, schema, is_strict)


def _strict_schema_problem(
    schema: Any, root: dict[str, Any], context: tuple[str, ...]
) -> str | None:
    """Structured Outputs' strict subset: a root object, every object closed and all-required."""
    if not isinstance(schema, dict):
        return None
    if not context and schema.get("type") != "object":
        got = schema.get("type")
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
    kinds = schema.get("type")
    is_object = (
        "properties" in schema
        or kinds == "object"
        or (isinstance(kinds, list) and "object" in kinds)
    )
    if is_object:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={context}, 'additionalProperties' is required to be supplied and "
                "to be false."
            )
        properties = schema.get("properties") or {}
        missing = [name for name in properties if name not in (schema.get("required") or [])]
        if missing:
            return (
                f"In context={context}, 'required' is required to be supplied and to be an "
                f"array including every key in properties. Missing '{missing[0]}'."
            )
        for name, sub in properties.items():
            problem = _strict_schema_problem(sub, root, (*context, "properties", name))
            if problem:
                return problem
    children: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(schema.get("items"), dict):
        children.append(((*context, "items"), schema["items"]))
    for keyword in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(keyword) or []):
            children.append(((*context, keyword, str(i)), sub))
    for keyword in ("$defs", "definitions"):
        for name, sub in (schema.get(keyword) or {}).items():
            children.append(((*context, keyword, name), sub))
    for sub_context, sub in children:
        problem = _strict_schema_problem(sub, root, sub_context)
        if problem:
            return problem
    return None


def _check_scripted(payload: Any, fmt: _Format) -> None:
    if fmt.kind == "json_object" and not isinstance(payload, dict):
        raise ScriptError("reply_json(): json_object mode answers a JSON object")
    if fmt.kind == "json_schema" and fmt.schema is not None:
        errors = schema_errors(payload, fmt.schema)
        if errors:
            raise ScriptError(
                f"reply_json() payload does not match response_format schema {fmt.name!r}: "
                + "; ".join(errors)
            )


def _embedding_inputs(value: Any) -> list[str]:
    """A string or a list of strings; token arrays are real OpenAI input the fake refuses."""
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs:
        raise openai_error(400, "'$.input' is invalid. Please check the API reference.")
    if not all(isinstance(item, str) for item in inputs):
        raise openai_error(
            400, "The fake OpenAI server embeds strings, not token arrays.", param="input"
        )
    if len(inputs) > 2048 or any(not item for item in inputs):
        raise openai_error(400, "'$.input' is invalid. Please check the API reference.")
    return list(inputs)


__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_REPLY_PREFIX",
    "ChatCall",
    "EmbeddingCall",
    "FakeAPIServer",
    "FakeOpenAI",
    "RecordedRequest",
    "approximate_tokens",
    "embed_text",
    "example_for_schema",
    "schema_errors",
]
