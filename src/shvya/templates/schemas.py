from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shvya.schemas import JsonObject, Page, RowOut, SafeStr, StrictInput


class TemplateDraftIn(StrictInput):
    channel: Literal["wa_cloud"] = "wa_cloud"
    name: SafeStr = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language: SafeStr = Field(default="en", min_length=2, max_length=16)
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"] = "MARKETING"
    body: SafeStr = Field(min_length=1, max_length=1024, description="With {{1}}, {{2}}...")
    components: list[JsonObject] = Field(
        default_factory=list,
        max_length=10,
        description="Extra Graph components (HEADER, FOOTER, BUTTONS), as Meta takes them.",
    )


class TemplateOut(RowOut):
    channel: str
    name: str
    language: str
    category: str
    body: str
    components: dict[str, Any]
    status: str = Field(description="draft, submitted, approved, rejected, paused or disabled")
    rejection_reason: str | None
    external_id: str | None
    created_at: datetime
    updated_at: datetime
    # Email templates (docs/email-domains.md 3): the Jinja2 subject and HTML part; body is
    # the text part.
    subject: str | None = None
    html: str | None = None


class TemplatePage(Page):
    items: list[TemplateOut]
