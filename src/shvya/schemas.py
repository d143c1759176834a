"""Validated types shared by every domain's request schemas.

Whatever passes these is safe to store on both databases: PostgreSQL refuses NUL characters
and lone surrogates, and JSONB refuses NaN and Infinity, each as a 500 if they got that far.
What a provider sends is not refused but cleaned (`storable_text`, `storable_json`): a lead's
message is kept even when a character of it cannot be.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

MAX_JSON_DEPTH = 8
MAX_JSON_ITEMS = 1000


def check_storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (lone surrogate such as \\ud800 found)") from None
    return value


def _check_json_value(value: Any, depth: int, counter: list[int]) -> None:
    counter[0] += 1
    if counter[0] > MAX_JSON_ITEMS:
        raise ValueError(f"must hold at most {MAX_JSON_ITEMS} values in all")
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not be nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        check_storable_text(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable_text(key)
            _check_json_value(item, depth + 1, counter)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1, counter)


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    _check_json_value(value, 1, [0])
    return value


SafeStr = Annotated[str, AfterValidator(check_storable_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_object)]


def storable_text(value: str) -> str:
    """`value` as both databases store it: NUL characters removed and each unpaired surrogate
    replaced with U+FFFD (JSON can carry both, `"\\u0000"` and `"\\ud800"`). For what a provider
    sends, which is cleaned where what a person types is refused (docs/reliability.md P1)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Through UTF-16: a pair of surrogates becomes its character, a lone one U+FFFD.
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


# Deeper than this, a provider's JSON is not worth keeping (and json.dumps would recurse).
MAX_STORED_JSON_DEPTH = 16


def storable_json(value: Any, _depth: int = 0) -> Any:
    """A JSON value both databases store: every string and key through `storable_text`, NaN
    and Infinity (which JSONB refuses) as null, and anything nested deeper than
    MAX_STORED_JSON_DEPTH levels as null."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _depth >= MAX_STORED_JSON_DEPTH and isinstance(value, dict | list):
        return None
    if isinstance(value, dict):
        return {
            storable_text(key) if isinstance(key, str) else key: storable_json(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [storable_json(item, _depth + 1) for item in value]
    return value


# --- dates and times --------------------------------------------------------------------------

# A moment with its offset, and nothing else: no Unix seconds, no time without an offset.
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(RFC3339, re.ASCII)  # \d: 0-9 only, as in JSON Schema
TIMESTAMP_FORMAT = (
    "RFC 3339 with its offset, e.g. 2026-11-26T10:00:00Z or 2026-11-26T15:30:00+05:30"
)


def parse_timestamp(value: Any) -> datetime:
    """Every date and time the API reads, in a query or a body, in UTC: a string of the form
    RFC3339 that is a real moment (no 13th month, 30 February or 25th hour). Anything else is
    a 422 that says what is wrong and what is expected, never a 500."""
    if isinstance(value, datetime):  # from Python code, not from a request
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError(
                "timestamp_naive",
                "has no UTC offset; expected {expected}",
                {"expected": TIMESTAMP_FORMAT},
            )
        moment = value
    else:
        if not isinstance(value, str) or not _RFC3339.fullmatch(value):
            raise PydanticCustomError(
                "timestamp_format",
                "must be a date and time in {expected}",
                {"expected": TIMESTAMP_FORMAT},
            )
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            reason = str(exc)
            if "offset" in reason:  # Python's own words name a timedelta
                reason = "the offset must be under 24 hours"
            raise PydanticCustomError(
                "timestamp_impossible",
                "is not a real date and time ({reason}); expected {expected}",
                {"reason": reason, "expected": TIMESTAMP_FORMAT},
            ) from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "timestamp_range",
            "is out of range (years 1 to 9999 in UTC); expected {expected}",
            {"expected": TIMESTAMP_FORMAT},
        ) from None


# A date and time in a request, query or body: parsed by parse_timestamp alone.
Timestamp = Annotated[
    datetime,
    PlainValidator(parse_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339}),
]


# "Something besides blanks", as a pattern every reader agrees on. \s means different sets to
# Python (str.isspace, what str.strip() removes), the Rust regex behind Pydantic and the
# generators of JSON Schema test data, so the blanks are named one by one: exactly the
# characters str.isspace() calls whitespace.
NOT_BLANK = r"[^\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _not_a_bool(value: Any) -> Any:
    # Python's bool is an int: without this, {"limit": true} would be read as 1.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# A JSON number that must not be a boolean (23 and 23.0 are both the integer 23). Bounds go
# before NOT_A_BOOL in an Annotated, so the schema shows them as minimum and maximum.
NOT_A_BOOL = BeforeValidator(_not_a_bool)
Integer = Annotated[int, NOT_A_BOOL]
Number = Annotated[float, NOT_A_BOOL]


def leave_out_or_set(schema: dict[str, Any]) -> None:
    """json_schema_extra of a field that may be left out but not sent as null: its schema
    without the null variant, so the schema says what the validator accepts."""
    variants = [variant for variant in schema.pop("anyOf", []) if variant != {"type": "null"}]
    if len(variants) == 1:
        schema.update(variants[0])
    elif variants:
        schema["anyOf"] = variants
    schema.pop("default", None)


def one_of(values: list[str]) -> Callable[[dict[str, Any]], None]:
    """json_schema_extra of a string that may be left out, not null, and is one of `values`."""

    def extra(schema: dict[str, Any]) -> None:
        leave_out_or_set(schema)
        schema["enum"] = values

    return extra


class StrictInput(BaseModel):
    """Request bodies: unknown fields are an error, so a typo or a protected field never
    silently does nothing (mass assignment, OWASP API3)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


@dataclass(frozen=True)
class PageRequest:
    """The page a list endpoint is asked for (`deps.Paging`), its limit clamped already."""

    limit: int
    offset: int


class Page(BaseModel):
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: Sequence[Any], total: int, request: PageRequest) -> Self:
        """The page of `items` out of `total`: `items` are what the subclass lists, or the rows
        it reads them from."""
        return cls.model_validate(
            {"items": items, "total": total, "limit": request.limit, "offset": request.offset},
            from_attributes=True,
        )


class RowOut(BaseModel):
    """What the API shows of a table's row, read from its attributes."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID


PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 200
# Above this a limit is not a request for "as many as you have", it is a mistake: 422.
PAGE_LIMIT_ABSURD = 10_000
PAGE_OFFSET_MAX = 1_000_000

LimitQuery = Annotated[
    int,
    Field(
        ge=1,
        le=PAGE_LIMIT_ABSURD,
        description=f"Page size; values above {PAGE_LIMIT_MAX} are clamped to {PAGE_LIMIT_MAX}.",
    ),
]
OffsetQuery = Annotated[int, Field(ge=0, le=PAGE_OFFSET_MAX)]


def clamp_limit(limit: int) -> int:
    return min(limit, PAGE_LIMIT_MAX)


class JobAcceptedOut(BaseModel):
    job_id: uuid.UUID = Field(description="Follow it with GET /jobs/{id}")


class ErrorOut(BaseModel):
    """Every error: a stable code to branch on and a message that says what to fix."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed request",
        401: "Missing, unknown or revoked API key",
        403: "The key's role may not do this",
        404: "Not found (also another company's resource)",
        409: "Conflict with an existing resource",
        413: "Request body over the size limit",
        415: "The body is not JSON: send it with Content-Type: application/json",
        422: "Invalid input: the detail names the field",
        429: "Too many failed authentications from this address",
        502: "The provider (e.g. WhatsApp) did not answer as it should",
        503: "The database is unreachable",
    }
    return {status: {"model": ErrorOut, "description": descriptions[status]} for status in statuses}


AUTH_ERRORS = (400, 401, 413, 422, 429, 503)


def inline_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema with its `$defs` written in place, for a request body declared in
    `openapi_extra` (where `#/$defs/...` references would point nowhere)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
