from __future__ import annotations

import uuid

from fastapi import APIRouter

from shvya.db.session import DbSession
from shvya.deps import ClockDep
from shvya.schemas import AUTH_ERRORS, error_responses
from shvya.tenancy import service
from shvya.tenancy.auth import AdminKey, CurrentKey
from shvya.tenancy.schemas import (
    ApiKeyCreatedOut,
    ApiKeyCreateIn,
    ApiKeyOut,
    CompanyOut,
    CompanyPatchIn,
    MeOut,
    UserCreateIn,
    UserOut,
)

router = APIRouter(tags=["tenancy"], responses=error_responses(*AUTH_ERRORS))


@router.get("/me", summary="The calling key: its company, role and person (user_id)")
def get_me(key: CurrentKey) -> MeOut:
    return MeOut(
        company_id=key.company.id,
        company_name=key.company.name,
        timezone=key.company.timezone,
        key_id=key.key_id,
        role=key.role.value,
        user_id=key.user_id,
    )


@router.get(
    "/api-keys", summary="List the company's API keys (admin)", responses=error_responses(403)
)
def list_api_keys(session: DbSession, key: AdminKey) -> list[ApiKeyOut]:
    keys = service.list_api_keys(session, company_id=key.company.id)
    return [ApiKeyOut.model_validate(k) for k in keys]


@router.post(
    "/api-keys",
    status_code=201,
    summary="Create an API key (admin); the key is shown only in this response. With "
    "user_id it is that person's key: it has their role and acts as `user:<id>`",
    responses=error_responses(403, 404),
)
def create_api_key(
    body: ApiKeyCreateIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> ApiKeyCreatedOut:
    user = (
        None
        if body.user_id is None
        else service.get_user(session, company_id=key.company.id, user_id=body.user_id)
    )
    row, raw_key = service.create_api_key(
        session,
        company_id=key.company.id,
        role=body.role,
        name=body.name,
        actor=key.actor,
        now=clock.now(),
        user=user,
    )
    return ApiKeyCreatedOut(**ApiKeyOut.model_validate(row).model_dump(), key=raw_key)


@router.delete(
    "/api-keys/{key_id}",
    summary="Revoke an API key (admin); it stops working at once. The company's last active "
    "admin key cannot be revoked (409): create another admin key first",
    responses=error_responses(403, 404, 409),
)
def revoke_api_key(
    key_id: uuid.UUID, session: DbSession, key: AdminKey, clock: ClockDep
) -> ApiKeyOut:
    row = service.find_api_key(session, company_id=key.company.id, ref=str(key_id))
    service.revoke_api_key(session, key=row, actor=key.actor, now=clock.now())
    return ApiKeyOut.model_validate(row)


@router.get("/users", summary="The company's users (admin)", responses=error_responses(403))
def list_users(session: DbSession, key: AdminKey) -> list[UserOut]:
    return [
        UserOut.model_validate(u) for u in service.list_users(session, company_id=key.company.id)
    ]


@router.post(
    "/users",
    status_code=201,
    summary="Add a person to the company (admin): an agent, a supervisor or an admin, one per "
    "e-mail address. Give them a key with POST /api-keys and their user_id",
    responses=error_responses(403, 409),
)
def create_user(body: UserCreateIn, session: DbSession, key: AdminKey, clock: ClockDep) -> UserOut:
    user = service.create_user(
        session,
        company_id=key.company.id,
        email=body.email,
        name=body.name,
        role=body.role,
        actor=key.actor,
        now=clock.now(),
    )
    return UserOut.model_validate(user)


@router.get("/company", summary="The company's settings: card, currency, language, AI switch")
def get_company(session: DbSession, key: CurrentKey) -> CompanyOut:
    return service.company_out(service.get_company(session, company_id=key.company.id))


@router.patch(
    "/company",
    summary="Change the company's settings (admin); only the fields sent change",
    responses=error_responses(403, 409),
)
def patch_company(
    body: CompanyPatchIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> CompanyOut:
    company = service.update_company(
        session, company_id=key.company.id, patch=body, actor=key.actor, now=clock.now()
    )
    return service.company_out(company)
