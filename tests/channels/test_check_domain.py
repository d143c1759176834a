"""`shvya email check-domain` against a DNS server on 127.0.0.1 serving TXT records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shvya import cli
from shvya.channels import dns_check
from shvya.config import Settings
from tests.fakes.dns_server import FakeDns, fake_dns
from tests.support import Tenant
from tests.test_cli import shvya

# DNS and the command's words are what these prove: the same on either database.
pytestmark = pytest.mark.one_database

DOMAIN = "mail.acme.test"
SPF = "v=spf1 include:_spf.example.net ~all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@mail.acme.test"


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    with fake_dns(FakeDns()) as server:
        yield server


def _settings(dns: FakeDns) -> Settings:
    return Settings(dns_nameserver=dns.nameserver, dns_timeout_seconds=1.0)


def _published(client: TestClient, tenant: Tenant, dns: FakeDns) -> dict[str, str]:
    record: dict[str, str] = client.post(
        "/channels/email/domains", json={"domain": DOMAIN}, headers=tenant.admin
    ).json()["dns_record"]
    dns.txt[DOMAIN] = ["google-site-verification=abc", SPF]
    dns.txt[record["name"]] = [record["value"]]  # 392 characters: split into two strings
    dns.txt[f"_dmarc.{DOMAIN}"] = [DMARC]
    return record


def test_all_three_published_exits_0(
    client: TestClient, acme: Tenant, dns: FakeDns, database_url: str
) -> None:
    record = _published(client, acme, dns)
    done = shvya(
        "email",
        "check-domain",
        DOMAIN,
        database_url=database_url,
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"DKIM   ok       {record['name']}" in done.stdout
    assert "matches SHVYA's key" in done.stdout  # the selector came from the database
    assert "DMARC  ok" in done.stdout and "p=quarantine" in done.stdout
    assert "SPF    ok" in done.stdout and SPF in done.stdout
    assert "SPF, DKIM and DMARC are published" in done.stdout


def test_missing_records_exit_1_and_say_what_to_publish(
    client: TestClient, acme: Tenant, dns: FakeDns, database_url: str
) -> None:
    record = _published(client, acme, dns)
    del dns.txt[f"_dmarc.{DOMAIN}"]
    dns.txt[DOMAIN] = ["google-site-verification=abc"]
    done = shvya(
        "email",
        "check-domain",
        DOMAIN,
        database_url=database_url,
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SPF    missing" in done.stdout
    assert f"DMARC  missing  _dmarc.{DOMAIN}" in done.stdout
    assert f"publish TXT _dmarc.{DOMAIN}: v=DMARC1; p=none" in done.stdout
    assert f"DKIM   ok       {record['name']}" in done.stdout
    assert "Gmail and Yahoo require SPF, DKIM and DMARC" in done.stdout


def test_a_dkim_record_that_is_not_shvyas_key_is_wrong(
    client: TestClient, acme: Tenant, dns: FakeDns, database_url: str
) -> None:
    record = _published(client, acme, dns)
    other = client.post(
        "/channels/email/domains", json={"domain": "other.test"}, headers=acme.admin
    ).json()["dns_record"]
    dns.txt[record["name"]] = [other["value"]]  # an old key left in DNS after a rotation
    done = shvya(
        "email",
        "check-domain",
        DOMAIN,
        database_url=database_url,
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert done.returncode == 1
    assert f"DKIM   wrong    {record['name']}: p= is not the public key SHVYA" in done.stdout
    assert f"publish TXT {record['name']}: {record['value']}" in done.stdout


def test_dns_failures_exit_2(dns: FakeDns, tmp_path: Path) -> None:
    absent_db = f"sqlite:///{tmp_path / 'none.db'}"
    dns.txt[DOMAIN] = [SPF]
    dns.servfail.add(f"_dmarc.{DOMAIN}")
    done = shvya(
        "email",
        "check-domain",
        DOMAIN,
        "--selector",
        "s1",
        database_url=absent_db,
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "DNS failed" in done.stderr and f"_dmarc.{DOMAIN}" in done.stderr
    assert not (tmp_path / "none.db").exists()  # the check never creates a database

    dns.servfail.clear()
    dns.silent.add(DOMAIN)
    done = shvya(
        "email",
        "check-domain",
        DOMAIN,
        database_url=absent_db,
        SHVYA_DNS_NAMESERVER=dns.nameserver,
        SHVYA_DNS_TIMEOUT_SECONDS="0.5",
    )
    assert done.returncode == 2
    assert "timed out" in done.stderr


def test_without_a_database_the_given_selectors_are_checked(dns: FakeDns, tmp_path: Path) -> None:
    dns.txt[DOMAIN] = [SPF]
    dns.txt[f"s1._domainkey.{DOMAIN}"] = ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"]
    dns.txt[f"_dmarc.{DOMAIN}"] = [DMARC]
    done = shvya(
        "email",
        "check-domain",
        DOMAIN.upper(),
        "--selector",
        "s1",
        database_url=f"sqlite:///{tmp_path / 'none.db'}",
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database not reachable" in done.stdout
    assert f"DKIM   ok       s1._domainkey.{DOMAIN}" in done.stdout

    no_selector = shvya(
        "email",
        "check-domain",
        DOMAIN,
        database_url=f"sqlite:///{tmp_path / 'none.db'}",
        SHVYA_DNS_NAMESERVER=dns.nameserver,
    )
    assert no_selector.returncode == 1
    assert "give --selector" in no_selector.stdout


@pytest.mark.parametrize(
    ("records", "check", "words"),
    [
        ({DOMAIN: [SPF, "v=spf1 -all"]}, "SPF", "2 SPF records"),
        ({f"_dmarc.{DOMAIN}": ["v=DMARC1; rua=mailto:x@y.test"]}, "DMARC", "p=(missing)"),
        ({f"_dmarc.{DOMAIN}": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}, "DMARC", "keep one"),
        ({f"s1._domainkey.{DOMAIN}": ["v=DKIM1; k=rsa; p="]}, "DKIM", "revoked"),
        ({f"s1._domainkey.{DOMAIN}": ["v=DKIM2; p=abc"]}, "DKIM", "not DKIM1"),
        ({f"s1._domainkey.{DOMAIN}": ["k=rsa; p=abc"]}, "DKIM", "no v=DKIM1"),
    ],
)
def test_malformed_records_are_wrong(
    dns: FakeDns, records: dict[str, list[str]], check: str, words: str
) -> None:
    dns.txt.update({DOMAIN: [SPF], f"_dmarc.{DOMAIN}": [DMARC]})
    dns.txt.update(records)
    findings = dns_check.check_domain(_settings(dns), DOMAIN, {"s1": []})
    wrong = [f for f in findings if f.state is dns_check.State.wrong]
    assert [f.check for f in wrong] == [check]
    assert words in wrong[0].detail and wrong[0].publish


def test_an_invalid_domain_is_refused(tmp_path: Path) -> None:
    done = shvya(
        "email", "check-domain", "not a domain", database_url=f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert done.returncode == 1
    assert "not a domain name" in done.stderr


def test_dkim_add_and_list_from_the_command_line(database_url: str, acme: Tenant) -> None:
    added = shvya(
        "email",
        "dkim",
        "add",
        "News.Acme.test",
        "--company",
        "acme",
        "--selector",
        "s2026",
        database_url=database_url,
    )
    assert added.returncode == 0, added.stderr
    assert "s2026._domainkey.news.acme.test" in added.stdout
    assert "v=DKIM1; k=rsa; p=" in added.stdout and "PRIVATE" not in added.stdout
    listed = shvya("email", "dkim", "list", "--company", "acme", database_url=database_url)
    assert listed.stdout.startswith("news.acme.test s2026._domainkey.news.acme.test v=DKIM1")
    again = shvya(
        "email", "dkim", "add", "news.acme.test", "--company", "acme", database_url=database_url
    )
    assert again.returncode == 1 and "already has a DKIM key" in again.stderr


def test_check_domain_help_names_the_selector_option_and_the_bulk_sender_rules() -> None:
    """Every command's help is checked in tests/test_cli.py; this one's words matter here."""
    result = CliRunner().invoke(
        cli.app, ["email", "check-domain", "--help"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "--selector" in result.output and "February 2024" in result.output
