"""Who is calling: the API key in `Authorization: Bearer`, its company and role.

Keys are read from the header only, never from the query string (URLs end up in logs).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shvya.clock import Clock
from shvya.db.session import DbSession
from shvya.deps import SettingsDep
from shvya.errors import Forbidden, Unauthorized
from shvya.ratelimit import SlidingWindowLimiter
from shvya.tenancy.models import Role
from shvya.tenancy.service import AuthenticatedKey, CompanyRef, authenticate_api_key

_bearer = HTTPBearer(auto_error=False, description="An API key: `shvya apikey create`.")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_current_key(
    request: Request, session: DbSession, credentials: BearerCredentials
) -> AuthenticatedKey:
    return authenticate_request(request, session, credentials)


def authenticate_request(
    request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> AuthenticatedKey:
    """The caller's key, or 401 (429 after too many failures from one address)."""
    limiter: SlidingWindowLimiter = request.app.state.auth_limiter
    clock: Clock = request.app.state.clock
    address = client_address(request)
    limiter.refuse_when_over(
        address, "too many failed authentications from this address; wait and retry"
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        limiter.record(address)
        raise Unauthorized("send your API key as `Authorization: Bearer <key>`")
    key = authenticate_api_key(session, raw_key=credentials.credentials.strip(), now=clock.now())
    if key is None:
        limiter.record(address)
        raise Unauthorized("the API key is unknown or revoked")
    return key


CurrentKey = Annotated[AuthenticatedKey, Depends(get_current_key)]


async def get_current_company(key: CurrentKey) -> CompanyRef:
    return key.company


CurrentCompany = Annotated[CompanyRef, Depends(get_current_company)]


async def require_admin(key: CurrentKey) -> AuthenticatedKey:
    if key.role is not Role.admin:
        raise Forbidden(f"this needs an admin key; yours is {key.role.value}")
    return key


AdminKey = Annotated[AuthenticatedKey, Depends(require_admin)]


async def get_phone_region(key: CurrentKey, settings: SettingsDep) -> str:
    """The region national-format phone numbers are read in: the company's, else the default."""
    return key.company.phone_region or settings.default_phone_region


PhoneRegion = Annotated[str, Depends(get_phone_region)]
