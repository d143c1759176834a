from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import phonenumbers
import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    model_validator,
)

from shvya.schemas import (
    NOT_A_BOOL,
    NOT_BLANK,
    RowOut,
    SafeStr,
    StrictInput,
    leave_out_or_set,
    one_of,
)
from shvya.tenancy.models import Role


class ApiKeyCreateIn(StrictInput):
    # The schema says what the validator checks: a role, a user, or both (never null).
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["role"]}, {"required": ["user_id"]}]}
    )

    name: SafeStr = Field(default="", max_length=200)
    role: Role | None = Field(
        default=None,
        description="Required for a key without a user; a user's key has theirs",
        json_schema_extra=leave_out_or_set,
    )
    user_id: uuid.UUID | None = Field(
        default=None,
        description="The person the key belongs to (POST /users): it then acts as "
        "`user:<id>`, the actor of its messages and events",
        json_schema_extra=leave_out_or_set,
    )

    @model_validator(mode="before")
    @classmethod
    def _role_or_user(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("role", "user_id"):
                if field in data and data[field] is None:
                    raise ValueError(f"{field} cannot be null: leave it out")
            if "role" not in data and "user_id" not in data:
                raise ValueError("give a role, or the user_id of the person the key belongs to")
        return data


class ApiKeyOut(RowOut):
    name: str
    role: str
    user_id: uuid.UUID | None = Field(description="The person the key belongs to, if any")
    prefix: str = Field(description="The key's public part: it starts every key of this row.")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown only in this response; store it now.")


class UserCreateIn(StrictInput):
    email: EmailStr = Field(max_length=320)
    name: SafeStr = Field(min_length=1, max_length=200, pattern=NOT_BLANK)
    role: Role


class UserOut(RowOut):
    email: str
    name: str
    role: str
    is_active: bool
    created_at: datetime


class MeOut(BaseModel):
    company_id: uuid.UUID
    company_name: str
    timezone: str
    key_id: uuid.UUID
    role: str
    user_id: uuid.UUID | None = Field(
        default=None, description="The person the key belongs to; what it does is theirs"
    )


# --- the company's own settings ---------------------------------------------------------------

MAX_OPT_OUT_KEYWORDS = 50


CURRENCIES = sorted(currency.alpha_3 for currency in pycountry.currencies)
LANGUAGES = sorted(
    language.alpha_2 for language in pycountry.languages if hasattr(language, "alpha_2")
)
TIMEZONES = sorted(available_timezones())
PHONE_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


def _check_code(code: str, known: list[str], *, what: str, capitals: bool) -> str:
    """`code` if it is one of `known`; else an error naming `what` it should be, and how to
    write it when only its case is wrong."""
    if code not in known:
        fixed = code.upper() if capitals else code.lower()
        case = "capitals" if capitals else "small letters"
        hint = f"; write it in {case}: {fixed}" if fixed in known else ""
        raise ValueError(f"{code!r} is not an {what}{hint}")
    return code


def check_region(code: str) -> str:
    return _check_code(
        code, PHONE_REGIONS, what="ISO 3166 region code (e.g. US, IN, GB)", capitals=True
    )


def check_currency(code: str) -> str:
    return _check_code(
        code, CURRENCIES, what="ISO 4217 currency code (e.g. USD, INR, EUR)", capitals=True
    )


def check_language(code: str) -> str:
    return _check_code(
        code, LANGUAGES, what="ISO 639-1 language code (e.g. en, hi, es)", capitals=False
    )


def check_timezone_name(name: str) -> str:
    if name not in TIMEZONES:
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Asia/Kolkata, UTC)")
    return name


CardText = Annotated[SafeStr, Field(max_length=2000)]


class CompanyCard(StrictInput):
    """What the AI may say about the company. Every figure in an AI reply must come from here,
    the knowledge base or the lead's own words."""

    about: CardText | None = Field(default=None, description="What the company sells, to whom")
    hours: CardText | None = Field(default=None, description="Opening or support hours")
    contact: CardText | None = Field(
        default=None, description="Phone, email, how to reach a person"
    )
    website: CardText | None = None
    address: CardText | None = None
    facts: list[Annotated[SafeStr, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=50, description="Short facts the AI may quote"
    )


LimitCount = Annotated[int, Field(ge=1, le=1_000_000), NOT_A_BOOL]
LimitedChannel = Literal["email", "wa_cloud", "wa_web", "sms"]


class SendingLimitsIn(StrictInput):
    """A channel's sending limits for sequence steps (docs/sequences-ooo-and-limits.md): a
    field left out keeps the default, null lifts that limit."""

    per_hour: LimitCount | None = Field(default=None, description="Sends per rolling hour")
    per_day: LimitCount | None = Field(default=None, description="Sends per rolling 24 hours")
    per_domain_per_day: LimitCount | None = Field(
        default=None, description="Email to one recipient domain per rolling 24 hours"
    )


class CompanyOut(BaseModel):
    id: uuid.UUID
    name: str = Field(description="Not unique: another company may have the same name")
    slug: str = Field(description="Unique, made from the name at creation; never changes")
    timezone: str
    phone_region: str | None
    currency: str
    default_language: str
    company_card: dict[str, Any]
    opt_out_keywords: list[str]
    handoff_message: str | None
    ai_enabled: bool
    summary_every: int = Field(description="An AI summary after every this many lead messages")
    ai_email_replies: bool = Field(
        description="Whether the AI sends its replies to inbound email itself (else it only "
        "suggests them for a person to send)"
    )
    sending_limits: dict[str, dict[str, int | None]] = Field(
        description="The company's own sending limits per channel, over the defaults "
        "(docs/sequences-ooo-and-limits.md); a channel not named keeps the defaults"
    )
    created_at: datetime
    updated_at: datetime


class CompanyPatchIn(StrictInput):
    """Only the fields sent change."""

    name: SafeStr | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=leave_out_or_set
    )
    timezone: Annotated[SafeStr, AfterValidator(check_timezone_name)] | None = Field(
        default=None, description="IANA time zone name", json_schema_extra=one_of(TIMEZONES)
    )
    phone_region: Annotated[SafeStr, AfterValidator(check_region)] | None = Field(
        default=None,
        description="Region for phone numbers written without +country code",
        json_schema_extra={"enum": [*PHONE_REGIONS, None]},
    )
    currency: Annotated[SafeStr, AfterValidator(check_currency)] | None = Field(
        default=None, description="ISO 4217 code", json_schema_extra=one_of(CURRENCIES)
    )
    default_language: Annotated[SafeStr, AfterValidator(check_language)] | None = Field(
        default=None, description="ISO 639-1 code", json_schema_extra=one_of(LANGUAGES)
    )
    company_card: CompanyCard | None = Field(default=None, json_schema_extra=leave_out_or_set)
    opt_out_keywords: list[Annotated[SafeStr, Field(min_length=1, max_length=40)]] | None = Field(
        default=None,
        max_length=MAX_OPT_OUT_KEYWORDS,
        description="Whole-message opt-out words in the company's languages, besides STOP etc. "
        "(a blank one is ignored)",
        json_schema_extra=leave_out_or_set,
    )
    handoff_message: SafeStr | None = Field(default=None, min_length=1, max_length=1000)
    ai_enabled: StrictBool | None = Field(default=None, json_schema_extra=leave_out_or_set)
    summary_every: Annotated[int, Field(ge=1, le=100), NOT_A_BOOL] | None = Field(
        default=None,
        description="Write the AI summary after every this many inbound messages",
        json_schema_extra=leave_out_or_set,
    )
    ai_email_replies: StrictBool | None = Field(
        default=None,
        description="Let the AI send its replies to inbound email (default false: it suggests "
        "them on the message for a person to send)",
        json_schema_extra=leave_out_or_set,
    )
    sending_limits: dict[LimitedChannel, SendingLimitsIn] | None = Field(
        default=None,
        description="Sequence steps' sending limits per channel, replacing every earlier "
        "override ({} goes back to the defaults); per channel, a field left out keeps its "
        "default and null lifts it",
        json_schema_extra=leave_out_or_set,
    )
