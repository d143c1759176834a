"""Validated types shared by every domain's request schemas.

Whatever passes these is safe to store on both databases: PostgreSQL refuses NUL characters
and lone surrogates, and JSONB refuses NaN and Infinity, each as a 500 if they got that far.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

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
