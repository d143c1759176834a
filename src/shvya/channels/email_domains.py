"""DKIM keys per sending domain, and the signer the email composer calls (docs/email-domains.md).

A company stores one RSA private key per (domain, selector) it sends from; the key is kept
encrypted with SHVYA_SECRET_KEY and never returned. What the company publishes in DNS is the
public half, as the TXT record `<selector>._domainkey.<domain>`: `v=DKIM1; k=rsa; p=<base64>`.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shvya.config import Settings
from shvya.crypto import decrypt_secret, encrypt_secret
from shvya.db.base import Base, IdMixin, utcnow
from shvya.errors import Conflict, InvalidInput, NotFound

# docs/email-domains.md 1.3: 2048 bits is what receivers expect today. RFC 8301 still lets
# verifiers accept 1024, but factoring 1024-bit keys is within reach, so we take none below 2048.
KEY_BITS = 2048
MIN_KEY_BITS = 2048
DEFAULT_SELECTOR = "shvya"

# docs/email-domains.md 1.1: every header a receiver or a person relies on, and the two of
# RFC 8058, which must be covered for a one-click unsubscribe to be honoured. A header named
# here but absent from the message is simply not signed (dkimpy signs only those present).
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
DOMAIN_PATTERN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
SELECTOR_PATTERN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class EmailDomain(IdMixin, Base):
    """A sending domain of a company and the DKIM key its mail is signed with."""

    __tablename__ = "email_domains"
    __table_args__ = (UniqueConstraint("company_id", "domain"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    # Lower-case, without a trailing dot.
    domain: Mapped[str] = mapped_column(String(253))
    selector: Mapped[str] = mapped_column(String(63))
    # The PKCS#8 PEM private key, encrypted with shvya.crypto.encrypt_secret.
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    # Base64 DER SubjectPublicKeyInfo: the p= of the DNS record.
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailDomainNotFound(NotFound):
    code = "email_domain_not_found"


class EmailDomainExists(Conflict):
    code = "email_domain_exists"


class InvalidEmailDomain(InvalidInput):
    code = "invalid_email_domain"


def normalise_domain(domain: str) -> str:
    value = domain.strip().lower().rstrip(".")
    if len(value) > 253 or not DOMAIN_PATTERN.match(value):
        raise InvalidEmailDomain(
            f"{domain!r} is not a domain name: give the part after @ of the From address, "
            "e.g. mail.example.com (letters, digits and hyphens, dot-separated)"
        )
    return value


def check_selector(selector: str) -> str:
    value = selector.strip().lower()
    if not SELECTOR_PATTERN.match(value):
        raise InvalidEmailDomain(
            f"selector {selector!r} is not valid: use letters, digits and hyphens "
            "(e.g. shvya or s2026), at most 63 characters per label"
        )
    return value


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def record_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidEmailDomain(
            "private_key_pem is not an unencrypted PEM private key: paste the whole "
            "-----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY) block, without a passphrase"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidEmailDomain("private_key_pem must be an RSA key (DKIM's k=rsa)")
    if key.key_size < MIN_KEY_BITS:
        raise InvalidEmailDomain(
            f"the RSA key has {key.key_size} bits; SHVYA takes DKIM keys of at least "
            f"{MIN_KEY_BITS} bits (shorter ones are weak and refused by some receivers)"
        )
    return key


def public_key_base64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def add_domain(
    session: Session,
    *,
    company_id: uuid.UUID,
    domain: str,
    selector: str,
    private_key_pem: str | None,
    settings: Settings,
    now: datetime,
) -> EmailDomain:
    name = normalise_domain(domain)
    chosen = check_selector(selector)
    if private_key_pem is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    else:
        key = _load_private_key(private_key_pem)
    if find_domain(session, company_id=company_id, domain=name) is not None:
        raise EmailDomainExists(
            f"{name} already has a DKIM key; delete it first to replace the key or selector"
        )
    row = EmailDomain(
        company_id=company_id,
        domain=name,
        selector=chosen,
        private_key_encrypted=encrypt_secret(
            _pem(key), secret_key=settings.secret_key.get_secret_value()
        ),
        public_key=public_key_base64(key),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def find_domain(session: Session, *, company_id: uuid.UUID, domain: str) -> EmailDomain | None:
    return session.scalars(
        select(EmailDomain).where(
            EmailDomain.company_id == company_id, EmailDomain.domain == domain.lower()
        )
    ).first()


def list_domains(session: Session, *, company_id: uuid.UUID) -> Sequence[EmailDomain]:
    return session.scalars(
        select(EmailDomain).where(EmailDomain.company_id == company_id).order_by(EmailDomain.domain)
    ).all()


def domains_named(session: Session, *, domain: str) -> Sequence[EmailDomain]:
    """Every company's key for this domain: what `shvya email check-domain` compares DNS to."""
    return session.scalars(select(EmailDomain).where(EmailDomain.domain == domain.lower())).all()


def delete_domain(session: Session, *, company_id: uuid.UUID, domain: str) -> None:
    row = find_domain(session, company_id=company_id, domain=domain.strip().lower().rstrip("."))
    if row is None:
        raise EmailDomainNotFound(f"no DKIM key for {domain}")
    session.delete(row)
    session.flush()


def make_signer(*, domain: str, selector: str, private_key_pem: str) -> Callable[[bytes], bytes]:
    """A function from a whole message's bytes to the DKIM-Signature header to prepend.

    relaxed/relaxed so that a relay re-folding whitespace does not break it; no l= (a body
    length limit lets anyone append content under our signature: docs/email-domains.md 1.2).
    """
    key = private_key_pem.encode()
    selector_bytes, domain_bytes = selector.encode(), domain.encode()

    def sign(message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message,
            selector_bytes,
            domain_bytes,
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=list(SIGNED_HEADERS),
        )
        return signature

    return sign


def dkim_signer(
    session: Session, *, company_id: uuid.UUID, from_domain: str, settings: Settings
) -> Callable[[bytes], bytes] | None:
    """The signer for mail the company sends From this domain, or None when it has no key."""
    row = find_domain(session, company_id=company_id, domain=from_domain.strip().rstrip("."))
    if row is None:
        return None
    pem = decrypt_secret(
        row.private_key_encrypted, secret_key=settings.secret_key.get_secret_value()
    )
    return make_signer(domain=row.domain, selector=row.selector, private_key_pem=pem)
