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
from shvya.deps import SettingsDep, client_address
from shvya.errors import Forbidden, Unauthorized
from shvya.ratelimit import SlidingWindowLimiter
from shvya.tenancy.models import Role
from shvya.tenancy.service import (
    AuthenticatedKey,
    AuthenticatedOperator,
    CompanyRef,
    authenticate_api_key,
    authenticate_operator_key,
    is_operator_key,
)

_bearer = HTTPBearer(auto_error=False, description="An API key: `shvya apikey create`.")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_current_key(
    request: Request, session: DbSession, credentials: BearerCredentials
) -> AuthenticatedKey:
    return authenticate_request(request, session, credentials)


def _failure_bucket(address: str, raw_key: str | None) -> str:
    """Failures are counted per client address and key prefix (the key's public part): behind
    one proxy address, a client repeating a wrong or revoked key slows down only itself."""
    prefix = "-"
    if raw_key is not None and len(raw_key) <= 100:
        parts = raw_key.split("_")
        if len(parts) == 3:
            prefix = f"{parts[0]}_{parts[1]}"
    return f"{address} {prefix}"


def authenticate_request(
    request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> AuthenticatedKey:
    """The caller's key; or 401, or 429 once this address sent too many wrong keys of this
    prefix in a minute. A correct key is always accepted: the limit never locks out the key's
    owner, and the key's 192 random bits, not the limit, are what makes guessing hopeless
    (docs/reliability.md A3)."""
    caller = _authenticate(request, session, credentials)
    if isinstance(caller, AuthenticatedOperator):
        raise Forbidden(
            "an operator key reads only install-wide figures "
            "(GET /queue/stats?all_companies=true); a company's data needs its own API key"
        )
    return caller


def _authenticate(
    request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> AuthenticatedKey | AuthenticatedOperator:
    limiter: SlidingWindowLimiter = request.app.state.auth_limiter
    clock: Clock = request.app.state.clock
    raw_key: str | None = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        raw_key = credentials.credentials.strip()
        caller: AuthenticatedKey | AuthenticatedOperator | None
        if is_operator_key(raw_key):
            caller = authenticate_operator_key(session, raw_key=raw_key, now=clock.now())
        else:
            caller = authenticate_api_key(session, raw_key=raw_key, now=clock.now())
        if caller is not None:
            return caller
    bucket = _failure_bucket(client_address(request), raw_key)
    # Checked before this failure is counted, and a refused attempt is not counted: the
    # block ends a minute after the failures that caused it.
    limiter.refuse_when_over(
        bucket, "too many failed authentications with this key from this address; wait and retry"
    )
    limiter.record(bucket)
    if raw_key is None:
        raise Unauthorized("send your API key as `Authorization: Bearer <key>`")
    raise Unauthorized("the API key is unknown or revoked")


CurrentKey = Annotated[AuthenticatedKey, Depends(get_current_key)]


def get_caller(
    request: Request, session: DbSession, credentials: BearerCredentials
) -> AuthenticatedKey | AuthenticatedOperator:
    """A company's key or the installation's operator key (`shvya apikey create --operator`),
    for the few routes that serve both."""
    return _authenticate(request, session, credentials)


CompanyKeyOrOperator = Annotated[AuthenticatedKey | AuthenticatedOperator, Depends(get_caller)]


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
