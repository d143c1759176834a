"""Request dependencies that every router shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shvya.clock import Clock
from shvya.config import Settings


# `async` on purpose: they only read app state, and FastAPI runs a plain `def` dependency in
# the thread pool, one hop per dependency per request.
async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
