"""`shvya email check-domain`: are SPF, DKIM and DMARC published for a sending domain?

docs/email-domains.md 2: since February 2024 Gmail and Yahoo require all three of bulk senders
(5,000+ messages a day to their users); without them mail is throttled or refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import dns.exception
import dns.resolver

from shvya.channels.email_domains import record_name, record_value
from shvya.config import Settings


class State(StrEnum):
    ok = "ok"
    missing = "missing"
    wrong = "wrong"


@dataclass(frozen=True)
class Finding:
    check: str  # SPF, DKIM or DMARC
    name: str  # the DNS name looked up
    state: State
    detail: str
    publish: str | None = None  # what to publish (a TXT record's value) when not ok


class DnsFailure(Exception):
    """DNS itself did not answer (timeout, SERVFAIL): nothing can be said about the records."""


def make_resolver(settings: Settings) -> dns.resolver.Resolver:
    if settings.dns_nameserver:
        host, _, port = settings.dns_nameserver.partition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = int(port or 53)
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = settings.dns_timeout_seconds
    resolver.lifetime = settings.dns_timeout_seconds
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at `name` (each record's strings joined, as RFC 7208 3.3 says); empty
    when the name or the record does not exist."""
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.resolver.NoNameservers as exc:
        raise DnsFailure(
            f"no DNS server answered for {name} (SERVFAIL or refused): {exc}"
        ) from None
    except dns.exception.Timeout:
        raise DnsFailure(f"DNS timed out looking up {name}") from None
    return [
        b"".join(rdata.strings).decode("utf-8", errors="replace")
        for rdata in answer
        if hasattr(rdata, "strings")
    ]


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def check_spf(resolver: dns.resolver.Resolver, domain: str) -> Finding:
    spf = [r for r in txt_records(resolver, domain) if r.lower().startswith("v=spf1")]
    publish = "v=spf1 include:<your email provider's SPF domain> ~all"
    if not spf:
        return Finding("SPF", domain, State.missing, "no TXT record starting v=spf1", publish)
    if len(spf) > 1:
        return Finding(
            "SPF",
            domain,
            State.wrong,
            f"{len(spf)} SPF records: receivers treat more than one as an error; merge them",
            publish,
        )
    return Finding("SPF", domain, State.ok, spf[0])


def check_dkim(
    resolver: dns.resolver.Resolver, domain: str, selector: str, keys: Iterable[str]
) -> Finding:
    """`keys`: the base64 public keys SHVYA signs with at this selector (none: only the record's
    shape is checked)."""
    name = record_name(selector, domain)
    known = [k for k in keys if k]
    publish = record_value(known[0]) if known else "v=DKIM1; k=rsa; p=<your public key>"
    records = [
        r for r in txt_records(resolver, name) if "v=dkim1" in r.lower() or "p=" in r.lower()
    ]
    if not records:
        return Finding("DKIM", name, State.missing, "no DKIM record at this selector", publish)
    tags = _tags(records[0])
    if tags.get("v", "DKIM1").upper() != "DKIM1":
        return Finding("DKIM", name, State.wrong, f"v={tags['v']}, not DKIM1", publish)
    if "v" not in tags:
        return Finding("DKIM", name, State.wrong, "the record has no v=DKIM1", publish)
    if not tags.get("p"):
        return Finding("DKIM", name, State.wrong, "p= is missing or empty (a revoked key)", publish)
    if known and tags["p"] not in known:
        return Finding(
            "DKIM",
            name,
            State.wrong,
            "p= is not the public key SHVYA signs with for this selector",
            publish,
        )
    matched = " and matches SHVYA's key" if known else ""
    return Finding("DKIM", name, State.ok, f"v=DKIM1 with a public key{matched}")


def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> Finding:
    name = f"_dmarc.{domain}"
    publish = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"
    records = [r for r in txt_records(resolver, name) if r.lower().startswith("v=dmarc1")]
    if not records:
        return Finding("DMARC", name, State.missing, "no TXT record starting v=DMARC1", publish)
    if len(records) > 1:
        return Finding(
            "DMARC", name, State.wrong, f"{len(records)} DMARC records: keep one", publish
        )
    policy = _tags(records[0]).get("p", "").lower()
    if policy not in {"none", "quarantine", "reject"}:
        return Finding(
            "DMARC",
            name,
            State.wrong,
            f"p={policy or '(missing)'}: the policy must be none, quarantine or reject",
            publish,
        )
    return Finding("DMARC", name, State.ok, f"policy p={policy}")


def check_domain(
    settings: Settings, domain: str, selectors: Mapping[str, Iterable[str]]
) -> list[Finding]:
    """SPF, DKIM at each selector (with the keys SHVYA holds for it), DMARC. Raises DnsFailure."""
    resolver = make_resolver(settings)
    findings = [check_spf(resolver, domain)]
    if not selectors:
        findings.append(
            Finding(
                "DKIM",
                f"<selector>._domainkey.{domain}",
                State.missing,
                "no selector to look up: give --selector, or add a key with "
                "POST /channels/email/domains",
                "v=DKIM1; k=rsa; p=<your public key>",
            )
        )
    for selector, keys in sorted(selectors.items()):
        findings.append(check_dkim(resolver, domain, selector, keys))
    findings.append(check_dmarc(resolver, domain))
    return findings
