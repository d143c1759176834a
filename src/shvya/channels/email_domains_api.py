"""POST/GET/DELETE /channels/email/domains: a company's DKIM keys (docs/email-domains.md)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from shvya.channels import email_domains
from shvya.db.session import DbSession
from shvya.deps import ClockDep, SettingsDep
from shvya.schemas import AUTH_ERRORS, SafeStr, StrictInput, error_responses
from shvya.tenancy.auth import AdminKey

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_FIELD = rf"^{_LABEL}(?:\.{_LABEL})+\.?$"
SELECTOR_FIELD = rf"^{_LABEL}(?:\.{_LABEL})*$"

router = APIRouter(tags=["channels"], responses=error_responses(*AUTH_ERRORS))


class EmailDomainIn(StrictInput):
    domain: SafeStr = Field(
        min_length=1,
        max_length=253,
        pattern=DOMAIN_FIELD,
        description="The domain of the From address",
    )
    selector: SafeStr = Field(
        default=email_domains.DEFAULT_SELECTOR,
        min_length=1,
        max_length=63,
        pattern=SELECTOR_FIELD,
        description="The DKIM selector: the record is <selector>._domainkey.<domain>",
    )
    private_key_pem: SafeStr | None = Field(
        default=None,
        max_length=20_000,
        description="An RSA private key (PEM) to use; without it SHVYA makes a 2048-bit key",
    )


class DnsRecordOut(BaseModel):
    type: str = "TXT"
    name: str
    value: str


class EmailDomainOut(BaseModel):
    domain: str
    selector: str
    created_at: datetime
    dns_record: DnsRecordOut = Field(description="The TXT record to publish (the public key)")


def _out(row: email_domains.EmailDomain) -> EmailDomainOut:
    return EmailDomainOut(
        domain=row.domain,
        selector=row.selector,
        created_at=row.created_at,
        dns_record=DnsRecordOut(
            name=email_domains.record_name(row.selector, row.domain),
            value=email_domains.record_value(row.public_key),
        ),
    )


@router.post(
    "/channels/email/domains",
    status_code=201,
    summary=(
        "Add a sending domain's DKIM key (admin): SHVYA makes an RSA-2048 key unless one is "
        "given, stores it encrypted, and answers the DNS TXT record to publish"
    ),
    responses=error_responses(403, 409, 422),
)
def add_email_domain(
    body: EmailDomainIn, session: DbSession, key: AdminKey, settings: SettingsDep, clock: ClockDep
) -> EmailDomainOut:
    row = email_domains.add_domain(
        session,
        company_id=key.company.id,
        domain=body.domain,
        selector=body.selector,
        private_key_pem=body.private_key_pem,
        settings=settings,
        now=clock.now(),
    )
    return _out(row)


@router.get(
    "/channels/email/domains",
    summary="The company's sending domains and the DKIM record each must publish (admin)",
    responses=error_responses(403),
)
def list_email_domains(session: DbSession, key: AdminKey) -> list[EmailDomainOut]:
    return [_out(row) for row in email_domains.list_domains(session, company_id=key.company.id)]


@router.delete(
    "/channels/email/domains/{domain}",
    status_code=204,
    summary="Delete a sending domain's DKIM key (admin); its mail goes out unsigned after",
    responses=error_responses(403, 404),
)
def delete_email_domain(domain: str, session: DbSession, key: AdminKey) -> Response:
    email_domains.delete_domain(session, company_id=key.company.id, domain=domain)
    return Response(status_code=204)
