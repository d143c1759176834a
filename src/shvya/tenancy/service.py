from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import phonenumbers
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from shvya.db.base import UTCDateTime, table_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import Conflict, InvalidInput, NotFound
from shvya.events.service import append_company_event, append_event
from shvya.tenancy.models import (
    ApiKey,
    ChannelAccount,
    Company,
    OperatorKey,
    Role,
    User,
    WhatsAppBusinessAccount,
)
from shvya.tenancy.schemas import CompanyOut, CompanyPatchIn

DEFAULT_COMPANY_NAME = "Default"
KEY_PREFIX = "shvya"
# An operator key: `shvyaop_<prefix>_<secret>`, found in operator_keys, never in api_keys.
OPERATOR_KEY_PREFIX = "shvyaop"
# last_used_at is for humans auditing keys; writing it on every request would turn each
# read into a write, and concurrent requests of one key would queue on the row's lock.
LAST_USED_RESOLUTION = timedelta(minutes=15)


class CompanyNotFound(NotFound):
    code = "company_not_found"


class CompanyAmbiguous(Conflict):
    code = "company_ambiguous"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


@dataclass(frozen=True)
class CompanyRef:
    """What a request needs to know of the caller's company (read with the key, one query)."""

    id: uuid.UUID
    name: str
    timezone: str
    phone_region: str | None
    settings: dict[str, Any]


class UserNotFound(NotFound):
    code = "user_not_found"


class UserExists(Conflict):
    code = "user_exists"


@dataclass(frozen=True)
class AuthenticatedKey:
    key_id: uuid.UUID
    role: Role
    company: CompanyRef
    # The person the key belongs to (`shvya apikey create --user`, POST /api-keys user_id).
    user_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        """Who did it, in events and messages: the key's person, else the key itself."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return f"api_key:{self.key_id}"


# --- companies --------------------------------------------------------------------------------


def check_timezone(name: str) -> str:
    if name not in available_timezones():
        raise InvalidInput(
            f"timezone: {name!r} is not an IANA time zone name (e.g. Asia/Kolkata, UTC)",
            extra={"field": "timezone"},
        )
    return name


def check_phone_region(region: str) -> str:
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidInput(
            f"phone region: {region!r} is not an ISO 3166 region code (e.g. US, IN, GB)",
            extra={"field": "phone_region"},
        )
    return region


def create_company(
    session: Session,
    *,
    name: str,
    timezone: str = "UTC",
    phone_region: str | None = None,
    now: datetime,
) -> Company:
    """The company's row (shvya.onboarding.create_company also gives it its pipeline)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("company name must be 1 to 200 characters")
    company = Company(
        name=name,
        slug=_free_slug(session, name),
        # The first company of an installation is its default (find_default_company).
        is_default=find_default_company(session) is None,
        timezone=check_timezone(timezone),
        phone_region=check_phone_region(phone_region) if phone_region else None,
        company_card={},
        settings={},
        created_at=now,
        updated_at=now,
    )
    session.add(company)
    session.flush()
    append_company_event(
        session,
        company_id=company.id,
        type="CompanyCreated",
        data={"name": name, "slug": company.slug, "timezone": company.timezone},
        now=now,
    )
    return company


def slugify(name: str) -> str:
    """`Acme Motors, Pune` -> `acme-motors-pune`: ASCII letters, digits and hyphens."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60].strip("-")
    return slug or "company"


def _free_slug(session: Session, name: str) -> str:
    """The name's slug, or with the first free `-2`, `-3`... when another company has it.
    The unique index decides a race between two creations of the same name."""
    base = slugify(name)
    taken = set(
        session.scalars(
            select(Company.slug).where(or_(Company.slug == base, Company.slug.like(f"{base}-%")))
        )
    )
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def find_company(session: Session, *, ref: str) -> Company | None:
    """The company `ref` names: its id, its slug (exactly), or a name (any case) that only
    one company has. None when none matches; CompanyAmbiguous, listing the companies, when
    several have that name."""
    ref = ref.strip()
    try:
        by_id = session.get(Company, uuid.UUID(ref))
    except ValueError:
        by_id = None
    if by_id is not None:
        return by_id
    by_slug = session.scalars(select(Company).where(Company.slug == ref)).first()
    if by_slug is not None:
        return by_slug
    named = session.scalars(
        select(Company)
        .where(func.lower(Company.name) == ref.lower())
        .order_by(Company.created_at, Company.id)
    ).all()
    if len(named) > 1:
        choices = ", ".join(f"{c.slug} ({c.id})" for c in named)
        raise CompanyAmbiguous(
            f"{len(named)} companies are named {ref!r}: {choices}; name one by its slug or id"
        )
    return named[0] if named else None


def get_company_by_ref(session: Session, *, ref: str) -> Company:
    company = find_company(session, ref=ref)
    if company is None:
        raise CompanyNotFound(
            f"no company {ref!r} (by id, slug or name); `shvya company list` shows them"
        )
    return company


def find_default_company(session: Session) -> Company | None:
    """The installation's default company: the first one created, whatever it is called now."""
    return session.scalars(select(Company).where(Company.is_default)).first()


def get_default_company(session: Session) -> Company:
    company = find_default_company(session)
    if company is None:
        raise CompanyNotFound(
            "there is no company yet: `shvya serve` creates one on its first start, "
            "or `shvya company create NAME`"
        )
    return company


def get_company_or_default(session: Session, *, ref: str | None) -> Company:
    """The company `ref` names (find_company), or the installation's default company when it
    is None."""
    return get_default_company(session) if ref is None else get_company_by_ref(session, ref=ref)


def list_companies(session: Session) -> Sequence[Company]:
    return session.scalars(select(Company).order_by(Company.created_at)).all()


# --- API keys ---------------------------------------------------------------------------------


def _hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_user(
    session: Session,
    *,
    company_id: uuid.UUID,
    email: str,
    name: str,
    role: Role,
    actor: str,
    now: datetime,
) -> User:
    """A person of the company (an agent, a supervisor, an admin), one per e-mail address
    (lower-cased): a second with the same address is a 409, decided by the unique index."""
    email = email.strip().lower()
    user_id = insert_or_ignore(
        session,
        table_of(User),
        {
            "company_id": company_id,
            "email": email,
            "name": name,
            "role": role.value,
            "is_active": True,
            "created_at": now,
        },
        conflict_on=("company_id", "email"),
    )
    if user_id is None:
        raise UserExists(f"the company already has a user with e-mail {email}")
    append_event(
        session,
        company_id=company_id,
        entity_type="user",
        entity_id=user_id,
        type="UserCreated",
        data={"email": email, "role": role.value},
        actor=actor,
        now=now,
    )
    return session.get_one(User, user_id)


def list_users(session: Session, *, company_id: uuid.UUID) -> Sequence[User]:
    return session.scalars(
        select(User).where(User.company_id == company_id).order_by(User.created_at, User.email)
    ).all()


def get_user(
    session: Session, *, company_id: uuid.UUID, user_id: uuid.UUID | None = None, email: str = ""
) -> User:
    """A user of this company by id or e-mail; another company's is not found (404)."""
    statement = select(User).where(User.company_id == company_id)
    if user_id is not None:
        statement = statement.where(User.id == user_id)
    else:
        statement = statement.where(User.email == email.strip().lower())
    user = session.scalars(statement).first()
    if user is None:
        raise UserNotFound(f"user {user_id or email!r} not found")
    return user


def create_api_key(
    session: Session,
    *,
    company_id: uuid.UUID,
    role: Role | None,
    name: str = "",
    actor: str = "system",
    now: datetime,
    user: User | None = None,
) -> tuple[ApiKey, str]:
    """Returns the row and the key itself, which is never stored and cannot be shown again.

    A user's key has the user's role (`role` None means that role): what it does is theirs,
    and its events name them (`user:<id>`)."""
    if user is not None:
        if user.company_id != company_id:
            raise UserNotFound(f"user {user.id} not found")
        if role is not None and role.value != user.role:
            raise InvalidInput(
                f"role: a user's key has the user's role ({user.role}); leave role out",
                extra={"field": "role"},
            )
        role = Role(user.role)
    if role is None:
        raise InvalidInput("role: a key without a user needs a role", extra={"field": "role"})
    prefix = f"{KEY_PREFIX}_{secrets.token_hex(6)}"
    raw_key = f"{prefix}_{secrets.token_hex(24)}"
    key = ApiKey(
        company_id=company_id,
        name=name,
        role=role.value,
        prefix=prefix,
        key_hash=_hash_key(raw_key),
        created_at=now,
        user_id=user.id if user is not None else None,
    )
    session.add(key)
    session.flush()
    append_event(
        session,
        company_id=company_id,
        entity_type="api_key",
        entity_id=key.id,
        type="ApiKeyCreated",
        data={
            "prefix": prefix,
            "role": role.value,
            "name": name,
            **({"user_id": str(user.id)} if user is not None else {}),
        },
        actor=actor,
        now=now,
    )
    return key, raw_key


_keys = table_of(ApiKey)
_companies = table_of(Company)
# What a request knows of its company (a CompanyRef), read in the same query as the key or
# the channel account that names it.
_COMPANY_REF = (
    _companies.c.id.label("company_id"),
    _companies.c.name,
    _companies.c.timezone,
    _companies.c.phone_region,
    _companies.c.settings,
)


def _company_ref(row: Any) -> CompanyRef:
    """The CompanyRef of a row that selected _COMPANY_REF."""
    return CompanyRef(
        id=row.company_id,
        name=row.name,
        timezone=row.timezone,
        phone_region=row.phone_region,
        settings=dict(row.settings or {}),
    )


_FIND_KEY = (
    select(
        _keys.c.id,
        _keys.c.role,
        _keys.c.user_id,
        _keys.c.key_hash,
        _keys.c.revoked_at,
        _keys.c.last_used_at,
        *_COMPANY_REF,
    )
    .join(_companies, _companies.c.id == _keys.c.company_id)
    .where(_keys.c.prefix == bindparam("prefix"))
)
_TOUCH_KEY = (
    update(_keys)
    .where(
        _keys.c.id == bindparam("key_id"),
        or_(
            _keys.c.last_used_at.is_(None),
            _keys.c.last_used_at < bindparam("stale", type_=UTCDateTime()),
        ),
    )
    .values(last_used_at=bindparam("now", type_=UTCDateTime()))
)


def authenticate_api_key(
    session: Session, *, raw_key: str, now: datetime
) -> AuthenticatedKey | None:
    """The key's company and role, or None for anything not a live key. Every request makes
    this query, so it is built once and reads only the columns a request needs."""
    parts = raw_key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(raw_key) > 100:
        return None
    connection = session.connection()
    row = connection.execute(_FIND_KEY, {"prefix": f"{parts[0]}_{parts[1]}"}).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash_key(raw_key)) or row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        connection.execute(
            _TOUCH_KEY, {"key_id": row.id, "now": now, "stale": now - LAST_USED_RESOLUTION}
        )
    return AuthenticatedKey(
        key_id=row.id, role=Role(row.role), company=_company_ref(row), user_id=row.user_id
    )


# --- the installation's operator ---------------------------------------------------------------


@dataclass(frozen=True)
class AuthenticatedOperator:
    """A caller with an operator key: install-wide figures, no company's data."""

    key_id: uuid.UUID

    @property
    def actor(self) -> str:
        return f"operator_key:{self.key_id}"


def is_operator_key(raw_key: str) -> bool:
    return raw_key.startswith(f"{OPERATOR_KEY_PREFIX}_")


def create_operator_key(
    session: Session, *, name: str = "", now: datetime
) -> tuple[OperatorKey, str]:
    """Only the `shvya` command calls this: no route can make an operator key. Returns the
    row and the key itself, which is never stored."""
    prefix = f"{OPERATOR_KEY_PREFIX}_{secrets.token_hex(6)}"
    raw_key = f"{prefix}_{secrets.token_hex(24)}"
    key = OperatorKey(name=name, prefix=prefix, key_hash=_hash_key(raw_key), created_at=now)
    session.add(key)
    session.flush()
    return key, raw_key


def authenticate_operator_key(
    session: Session, *, raw_key: str, now: datetime
) -> AuthenticatedOperator | None:
    parts = raw_key.split("_")
    if len(parts) != 3 or parts[0] != OPERATOR_KEY_PREFIX or len(raw_key) > 100:
        return None
    key = session.scalars(
        select(OperatorKey).where(OperatorKey.prefix == f"{parts[0]}_{parts[1]}")
    ).first()
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_hash, _hash_key(raw_key)):
        return None
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
    return AuthenticatedOperator(key_id=key.id)


def list_operator_keys(session: Session) -> Sequence[OperatorKey]:
    return session.scalars(select(OperatorKey).order_by(OperatorKey.created_at)).all()


def find_operator_key(session: Session, *, ref: str) -> OperatorKey | None:
    """An operator key by id or prefix."""
    try:
        return session.get(OperatorKey, uuid.UUID(ref))
    except ValueError:
        return session.scalars(select(OperatorKey).where(OperatorKey.prefix == ref)).first()


def revoke_operator_key(session: Session, *, key: OperatorKey, now: datetime) -> OperatorKey:
    if key.revoked_at is None:
        key.revoked_at = now
    return key


# --- a company's keys ---------------------------------------------------------------------------


def list_api_keys(session: Session, *, company_id: uuid.UUID) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.company_id == company_id).order_by(ApiKey.created_at)
    ).all()


def find_api_key(session: Session, *, company_id: uuid.UUID | None, ref: str) -> ApiKey:
    """A key by id or by prefix; limited to one company unless company_id is None (CLI)."""
    statement = select(ApiKey)
    try:
        statement = statement.where(ApiKey.id == uuid.UUID(ref))
    except ValueError:
        statement = statement.where(ApiKey.prefix == ref)
    if company_id is not None:
        statement = statement.where(ApiKey.company_id == company_id)
    key = session.scalars(statement).first()
    if key is None:
        raise ApiKeyNotFound(f"API key {ref!r} not found")
    return key


class LastAdminKey(Conflict):
    code = "last_admin_key"


def revoke_api_key(session: Session, *, key: ApiKey, actor: str, now: datetime) -> ApiKey:
    """Revoke a key, unless it is its company's last active admin key: without one, nobody
    could manage the company's keys, settings or channels through the API (409)."""
    if key.revoked_at is None:
        if key.role == Role.admin.value:
            # FOR UPDATE (PostgreSQL) serialises two admins revoking each other's key at
            # once; SQLite lets one writer at a time anyway.
            active_admins = session.scalars(
                select(ApiKey.id)
                .where(
                    ApiKey.company_id == key.company_id,
                    ApiKey.role == Role.admin.value,
                    ApiKey.revoked_at.is_(None),
                )
                .with_for_update()
            ).all()
            if set(active_admins) <= {key.id}:
                raise LastAdminKey(
                    "this is the company's last active admin key; create another admin key first"
                )
        key.revoked_at = now
        append_event(
            session,
            company_id=key.company_id,
            entity_type="api_key",
            entity_id=key.id,
            type="ApiKeyRevoked",
            data={"prefix": key.prefix},
            actor=actor,
            now=now,
        )
    return key


def get_company(session: Session, *, company_id: uuid.UUID) -> Company:
    company = session.get(Company, company_id)
    if company is None:
        raise CompanyNotFound(f"company {company_id} not found")
    return company


DEFAULT_SUMMARY_EVERY = 5
# Fields a PATCH may set to null (back to the default); the others must have a value.
_CLEARABLE = frozenset({"phone_region", "handoff_message"})


def lead_facing_name(company: Company) -> str:
    """The company's name as a lead may read it: "" for the installation's unnamed first
    company ("Default" is our placeholder, never a name to greet a lead with)."""
    name = company.name.strip()
    return "" if name == DEFAULT_COMPANY_NAME else name


def summary_every(company: Company) -> int:
    value = company.settings.get("summary_every", DEFAULT_SUMMARY_EVERY)
    return value if isinstance(value, int) and value > 0 else DEFAULT_SUMMARY_EVERY


def ai_email_replies(company: Company) -> bool:
    """May the AI send its replies to inbound email itself (docs/email-inbound.md)?"""
    return company.settings.get("ai_email_replies") is True


def company_out(company: Company) -> CompanyOut:
    return CompanyOut(
        id=company.id,
        name=company.name,
        slug=company.slug,
        timezone=company.timezone,
        phone_region=company.phone_region,
        currency=company.currency,
        default_language=company.default_language,
        company_card=company.company_card,
        opt_out_keywords=list(company.settings.get("opt_out_keywords", [])),
        handoff_message=company.handoff_message,
        ai_enabled=company.ai_enabled,
        summary_every=summary_every(company),
        ai_email_replies=ai_email_replies(company),
        sending_limits=dict(company.settings.get("sending_limits") or {}),
        created_at=company.created_at,
        updated_at=company.updated_at,
    )


def update_company(
    session: Session, *, company_id: uuid.UUID, patch: CompanyPatchIn, actor: str, now: datetime
) -> Company:
    """Change the fields the patch sends; one CompanyUpdated event names what changed."""
    company = get_company(session, company_id=company_id)
    sent = patch.model_fields_set
    for field in sent:
        if getattr(patch, field) is None and field not in _CLEARABLE:
            raise InvalidInput(f"{field}: must not be null", extra={"field": field})
    changed: dict[str, Any] = {}

    def assign(field: str, value: Any) -> None:
        if getattr(company, field) != value:
            changed[field] = value
            setattr(company, field, value)

    if "name" in sent and patch.name is not None:
        # Another company may have the same name: answering otherwise would tell this
        # tenant another's name. The slug stays as it was made.
        assign("name", patch.name.strip())
    if "phone_region" in sent:
        assign(
            "phone_region", check_phone_region(patch.phone_region) if patch.phone_region else None
        )
    for field in ("timezone", "currency", "default_language", "ai_enabled", "handoff_message"):
        if field in sent:
            assign(field, getattr(patch, field))
    if "company_card" in sent and patch.company_card is not None:
        assign("company_card", patch.company_card.model_dump(exclude_none=True))
    settings = dict(company.settings)
    if "opt_out_keywords" in sent and patch.opt_out_keywords is not None:
        # Kept as written (deduplicated, blanks dropped); matching folds case and punctuation.
        settings["opt_out_keywords"] = list(
            dict.fromkeys(k.strip() for k in patch.opt_out_keywords if k.strip())
        )
    if "summary_every" in sent and patch.summary_every is not None:
        settings["summary_every"] = patch.summary_every
    if "ai_email_replies" in sent and patch.ai_email_replies is not None:
        settings["ai_email_replies"] = patch.ai_email_replies
    if "sending_limits" in sent and patch.sending_limits is not None:
        # What each channel names, as named: limits_for lays it over the channel's defaults.
        settings["sending_limits"] = {
            channel: limits.model_dump(exclude_unset=True)
            for channel, limits in patch.sending_limits.items()
        }
    if settings != company.settings:
        changed.update({k: v for k, v in settings.items() if company.settings.get(k) != v})
        company.settings = settings
    if changed:
        company.updated_at = now
        append_company_event(
            session,
            company_id=company.id,
            type="CompanyUpdated",
            data={"changed": sorted(changed)},
            actor=actor,
            now=now,
        )
    session.flush()
    return company


# --- channel accounts -------------------------------------------------------------------------


class ChannelAccountTaken(Conflict):
    code = "channel_account_taken"


def find_channel_account(
    session: Session, *, channel: str, external_id: str
) -> ChannelAccount | None:
    """The account a provider id (Meta's phone_number_id) belongs to, whichever company's."""
    return session.scalars(
        select(ChannelAccount).where(
            ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
        )
    ).first()


_accounts = table_of(ChannelAccount)
_COMPANY_BY_ACCOUNT = (
    select(*_COMPANY_REF)
    .join(_accounts, _accounts.c.company_id == _companies.c.id)
    .where(
        _accounts.c.channel == bindparam("channel"),
        _accounts.c.external_id == bindparam("external_id"),
    )
    .limit(1)
)


def find_channel_company(session: Session, *, channel: str, external_id: str) -> CompanyRef | None:
    """The company a provider id (Meta's phone_number_id) belongs to, in one query: what a
    webhook delivery needs of it (find_channel_account's account, read with its company)."""
    row = (
        session.connection()
        .execute(_COMPANY_BY_ACCOUNT, {"channel": channel, "external_id": external_id})
        .first()
    )
    return None if row is None else _company_ref(row)


def company_channel_account(
    session: Session, *, company_id: uuid.UUID, channel: str
) -> ChannelAccount | None:
    """The company's active account on a channel (the first connected)."""
    return session.scalars(
        select(ChannelAccount)
        .where(
            ChannelAccount.company_id == company_id,
            ChannelAccount.channel == channel,
            ChannelAccount.is_active.is_(True),
        )
        .order_by(ChannelAccount.created_at)
        .limit(1)
    ).first()


def list_channel_accounts(session: Session, *, company_id: uuid.UUID) -> Sequence[ChannelAccount]:
    return session.scalars(
        select(ChannelAccount)
        .where(ChannelAccount.company_id == company_id)
        .order_by(ChannelAccount.created_at)
    ).all()


def upsert_channel_account(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: str,
    external_id: str,
    name: str,
    credentials_encrypted: str | None,
    config: dict[str, object],
    actor: str,
    now: datetime,
) -> ChannelAccount:
    """Connect (or reconnect, with a new token) a number or mailbox to a company. A provider
    id already connected to another company is a conflict."""
    account = find_channel_account(session, channel=channel, external_id=external_id)
    if account is not None and account.company_id != company_id:
        raise ChannelAccountTaken(
            f"{channel} account {external_id} is connected to another company"
        )
    if account is None:
        account = ChannelAccount(
            company_id=company_id, channel=channel, external_id=external_id, created_at=now
        )
        session.add(account)
    account.name = name
    account.credentials_encrypted = credentials_encrypted
    account.config = {**(account.config or {}), **config}
    account.is_active = True
    # Connected again (with a new token, say): whatever needed a person is dealt with.
    account.needs_attention = None
    account.needs_attention_since = None
    session.flush()
    append_company_event(
        session,
        company_id=company_id,
        type="ChannelAccountConnected",
        data={"channel": channel, "external_id": external_id, "account_id": str(account.id)},
        actor=actor,
        now=now,
    )
    return account


def flag_channel_account(
    session: Session, *, account_id: uuid.UUID, reason: str, now: datetime
) -> bool:
    """Mark an account as needing a person (its credentials were refused); the first reason
    and time stay until it is connected again. True if this call marked it."""
    result = session.execute(
        update(ChannelAccount)
        .where(ChannelAccount.id == account_id, ChannelAccount.needs_attention.is_(None))
        .values(needs_attention=reason[:500], needs_attention_since=now)
    )
    return bool(getattr(result, "rowcount", 0))


class WhatsAppBusinessAccountTaken(Conflict):
    code = "whatsapp_business_account_taken"


_wabas = table_of(WhatsAppBusinessAccount)


def claim_whatsapp_business_account(
    session: Session, *, company_id: uuid.UUID, waba_id: str, now: datetime
) -> None:
    """Record that a WABA belongs to this company; one that is another company's is a
    conflict. The unique index decides a race, never a look-up before the insert."""
    insert_or_ignore(
        session,
        _wabas,
        {"company_id": company_id, "waba_id": waba_id, "created_at": now},
        conflict_on=("waba_id",),
    )
    owner = whatsapp_business_account_company(session, waba_id=waba_id)
    if owner != company_id:
        raise WhatsAppBusinessAccountTaken(
            f"WhatsApp Business Account {waba_id} is connected to another company: a WABA "
            "belongs to one company, since Meta's template and consent webhooks name only "
            "the WABA",
            extra={"errors": [{"field": "waba_id", "message": "connected to another company"}]},
        )


def whatsapp_business_account_company(session: Session, *, waba_id: str) -> uuid.UUID | None:
    """The company a WABA belongs to (template-status and consent webhooks name only it)."""
    if not waba_id:
        return None
    return session.scalar(
        select(WhatsAppBusinessAccount.company_id).where(WhatsAppBusinessAccount.waba_id == waba_id)
    )
