"""Request dependencies that every router shares."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from shvya.clock import Clock
from shvya.config import IPNetwork, Settings
from shvya.schemas import PAGE_LIMIT_DEFAULT, LimitQuery, OffsetQuery, PageRequest, clamp_limit


def client_address(request: Request) -> str:
    """The client's address: the direct peer's; or, when the peer is a reverse proxy named in
    SHVYA_TRUSTED_PROXIES, the address X-Forwarded-For gives for the client, read from the
    right (each proxy appends the address it heard from) past every trusted proxy. From any
    other peer the header is ignored: a client could write anything there."""
    peer = request.client.host if request.client else "unknown"
    settings: Settings = request.app.state.settings
    trusted = settings.trusted_proxy_networks
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    address = peer
    for hop in reversed(hops):
        if not _is_address(hop):
            break  # not an address: whatever is left of it was not written by our proxies
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


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


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The query parameters a route takes: its own and its dependencies' (`limit` and `offset`
    of Paging), by the name a client writes (an alias such as `hub.mode`). A walk of a few
    objects, made only for a request with a query string: not worth a cache."""
    names: set[str] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(field.alias for field in dependant.query_params)
        pending.extend(dependant.dependencies)
    return frozenset(names)


def unknown_query_params(request: Request) -> list[str]:
    """The request's query parameters its route does not take, in the order given: a typo
    (`?ai_pasued=true`) or a filter the route lacks would otherwise be ignored in silence and
    answer as if no filter had been asked for."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return []
    declared = declared_query_params(route)
    return [name for name in dict.fromkeys(request.query_params.keys()) if name not in declared]
