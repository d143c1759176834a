"""Request dependencies that every router shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from shvya.clock import Clock
from shvya.config import Settings
from shvya.schemas import PAGE_LIMIT_DEFAULT, LimitQuery, OffsetQuery, PageRequest, clamp_limit


# `async` on purpose: they only read app state, and FastAPI runs a plain `def` dependency in
# the thread pool, one hop per dependency per request.
async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_page_request(
    limit: Annotated[LimitQuery, Query()] = PAGE_LIMIT_DEFAULT,
    offset: Annotated[OffsetQuery, Query()] = 0,
) -> PageRequest:
    """A list endpoint's `limit` and `offset` query parameters (the limit clamped)."""
    return PageRequest(limit=clamp_limit(limit), offset=offset)


ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Paging = Annotated[PageRequest, Depends(get_page_request)]
