from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class Role(StrEnum):
    admin = "admin"
    agent = "agent"
    supervisor = "supervisor"


class Company(IdMixin, Base):
    __tablename__ = "companies"

    # Names need not be unique: telling one tenant that another has a name would leak it.
    name: Mapped[str] = mapped_column(String(200))
    # Unique, made from the name at creation and never changed: how the `shvya` command names
    # the company (besides its id).
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    plan: Mapped[str] = mapped_column(String(32), default="free")
    # ISO 3166 region used to read national-format phone numbers ("9876543210" in IN).
    phone_region: Mapped[str | None] = mapped_column(String(2))
    # What the AI may say about the company: what it sells, hours, contact.
    company_card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # ISO 4217: the currency a lead's budget is read in when they name none.
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    # ISO 639-1: the AI's language when a lead's own cannot be told.
    default_language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    ai_enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Sent when a conversation is handed to a person; a default in the lead's language if unset.
    handoff_message: Mapped[str | None] = mapped_column(Text)
    # Opt-out words, channel pacing, summary cadence...: see tenancy.schemas.CompanyPatchIn.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The installation's default company (the first one created): the sandbox page chats with
    # it and CLI commands without --company act on it. A flag, so a rename changes nothing.
    is_default: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# At most one default company in an installation.
Index(
    "uq_companies_default",
    Company.is_default,
    unique=True,
    sqlite_where=Company.is_default,
    postgresql_where=Company.is_default,
)


class User(IdMixin, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("company_id", "email"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16), default=Role.agent.value)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(IdMixin, Base):
    """A bearer key. Only a SHA-256 of the key is kept; the key itself is shown once."""

    __tablename__ = "api_keys"

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    # The person the key belongs to, if any: the key then acts as `user:<id>` (the actor of
    # what it writes). A key without one is named by itself, `api_key:<id>`.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The non-secret part of the key, used to find the row without scanning hashes.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class OperatorKey(IdMixin, Base):
    """A key of the installation's operator, made only by `shvya apikey create --operator`.
    It belongs to no company: it reads install-wide figures (`GET /queue/stats?all_companies=
    true`) and no company's data. Only a SHA-256 of the key is kept."""

    __tablename__ = "operator_keys"

    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class ChannelAccount(IdMixin, Base):
    """A company's connected number or mailbox; inbound webhooks are routed by it."""

    __tablename__ = "channel_accounts"
    __table_args__ = (
        # A provider id (Meta phone_number_id, a mailbox) belongs to exactly one company.
        UniqueConstraint("channel", "external_id"),
        Index(None, "company_id", "channel"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    external_id: Mapped[str] = mapped_column(String(255))
    # Tokens and passwords, encrypted with SHVYA_SECRET_KEY; never returned by the API.
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Why a person must act: the provider refused the account's credentials (Meta's 190,
    # docs/whatsapp.md 1.4), or its WABA was another company's (1.14). Connecting the account
    # again clears it.
    needs_attention: Mapped[str | None] = mapped_column(String(500))
    needs_attention_since: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WhatsAppBusinessAccount(IdMixin, Base):
    """A WhatsApp Business Account (WABA) and the one company it belongs to. Template-status
    and consent webhooks name only the WABA, so two companies never share one
    (docs/whatsapp.md 1.14); the unique index decides when two connect it at once."""

    __tablename__ = "whatsapp_business_accounts"

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    waba_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
