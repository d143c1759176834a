"""Connecting a WhatsApp number: Meta is asked with the given token before anything is stored
(docs/whatsapp.md 1.14), a WABA belongs to one company, and the webhooks that name only a
WABA reach that company alone."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.db.phases import commit_between_phases, run_phases
from shvya.errors import InvalidInput
from shvya.events.models import Event
from shvya.tenancy.models import ChannelAccount, WhatsAppBusinessAccount
from tests.channels.conftest import ACCESS_TOKEN, PHONE_NUMBER_ID, WABA_ID, connect_number
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant

# Meta's side of connecting is what these prove: the same on either database (the stored
# rows are the same code as every other channel's).
pytestmark = pytest.mark.one_database

OTHER_NUMBER = "200000000000001"
OTHER_WABA = "200000000000099"


def stored(factory: sessionmaker[Session]) -> dict[str, int]:
    """Rows a connection writes: accounts, WABA owners and ChannelAccountConnected events."""
    with factory() as session:
        return {
            "accounts": session.scalar(select(func.count()).select_from(ChannelAccount)) or 0,
            "wabas": session.scalar(select(func.count()).select_from(WhatsAppBusinessAccount)) or 0,
            "events": session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.type == "ChannelAccountConnected")
            )
            or 0,
        }


NOTHING = {"accounts": 0, "wabas": 0, "events": 0}


def test_a_number_meta_confirms_is_connected_with_what_meta_says(
    fake_meta: FakeMetaGraph, client: TestClient, acme: Tenant
) -> None:
    response = connect_number(client, acme)
    assert response.status_code == 201, response.text
    account = response.json()
    assert account["external_id"] == PHONE_NUMBER_ID
    assert account["config"] == {
        "waba_id": WABA_ID,
        "display_phone_number": fake_meta.display_phone_number,
        "verified_name": fake_meta.verified_name,
    }
    assert account["token_hint"].endswith(ACCESS_TOKEN[-4:])
    assert account["needs_attention"] is None
    [number] = fake_meta.requests_to(f"/{PHONE_NUMBER_ID}", method="GET")
    [listing] = fake_meta.requests_to(f"/{WABA_ID}/phone_numbers", method="GET")
    for request in (number, listing):
        assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert client.get("/channels/accounts", headers=acme.admin).json() == [account]


def test_a_number_that_is_not_in_the_given_waba_is_422_and_stores_nothing(
    fake_meta: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    # Another WABA the token can read, whose numbers do not include this one.
    fake_meta.add_phone_number(OTHER_NUMBER, waba_id=OTHER_WABA)
    response = connect_number(client, acme, waba_id=OTHER_WABA)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "whatsapp_number_not_in_waba"
    assert PHONE_NUMBER_ID in body["detail"] and OTHER_WABA in body["detail"]
    assert body["errors"][0]["field"] == "waba_id"
    assert stored(session_factory) == NOTHING


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone_number_id": "999999999999999"}, "phone_number_id"),
        ({"waba_id": "888888888888888"}, "waba_id"),
    ],
)
def test_a_number_or_waba_meta_does_not_know_is_422_naming_it(
    fake_meta: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    fields: dict[str, str],
    field: str,
) -> None:
    response = connect_number(client, acme, **fields)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "whatsapp_not_found"
    assert body["errors"][0]["field"] == field
    assert fields[field] in body["detail"]
    assert stored(session_factory) == NOTHING


def test_a_token_meta_refuses_is_422_naming_the_token(
    fake_meta: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    response = connect_number(client, acme, access_token="EAAG-expired-token-0000")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "whatsapp_token_refused"
    assert body["errors"][0]["field"] == "access_token"
    assert "190" in body["detail"]
    assert stored(session_factory) == NOTHING


@pytest.mark.parametrize(
    "token",
    [
        "EAAG-t\u00f6ken-1234",  # a letter outside ASCII
        "EAAG\u2013token\u20131234",  # a typographic dash from a word processor
        "EAAG token 1234",  # a space
        "EAAG-token-1234\n",  # a line break from the copy
        "EAAG-\u200btoken-1234",  # an invisible zero-width space
    ],
)
def test_a_token_that_is_not_printable_ascii_is_422_at_the_door(
    fake_meta: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    token: str,
) -> None:
    response = connect_number(client, acme, access_token=token)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    [error] = body["errors"]
    assert error["field"] == "access_token"
    assert "printable ASCII" in error["message"]
    assert fake_meta.requests == []  # refused before Meta was asked
    assert stored(session_factory) == NOTHING


def test_meta_unreachable_or_failing_is_502_and_stores_nothing(
    fake_meta: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    fake_meta.fail_next(code=2, path_contains="/phone_numbers")  # Graph's 503, "service down"
    down = connect_number(client, acme)
    assert down.status_code == 502
    assert down.json()["error"] == "graph_unavailable"
    assert "nothing was stored" in down.json()["detail"]
    fake_meta.drop_next(path_contains=PHONE_NUMBER_ID)  # the connection closes, no answer
    assert connect_number(client, acme).status_code == 502
    fake_meta.stop()  # nothing listens any more
    gone = connect_number(client, acme)
    assert gone.status_code == 502
    assert gone.json()["error"] == "graph_unavailable"
    assert stored(session_factory) == NOTHING


def test_a_waba_of_another_company_is_409_and_stores_nothing(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    # A second number in Acme's WABA, with a token that may use both: Meta says yes, and
    # still the WABA is Acme's.
    whatsapp.add_phone_number(OTHER_NUMBER, waba_id=WABA_ID)
    before = stored(session_factory)
    response = connect_number(client, globex, phone_number_id=OTHER_NUMBER)
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "whatsapp_business_account_taken"
    assert body["errors"][0]["field"] == "waba_id"
    assert stored(session_factory) == before
    assert client.get("/channels/accounts", headers=globex.admin).json() == []
    # Acme itself may connect the WABA's second number.
    assert connect_number(client, acme, phone_number_id=OTHER_NUMBER).status_code == 201
    assert len(client.get("/channels/accounts", headers=acme.admin).json()) == 2


def _template_status(whatsapp: FakeMetaGraph, waba_id: str, event: str) -> int:
    envelope = whatsapp.envelope([whatsapp.template_status_item("lead_followup", "en_US", event)])
    envelope["entry"][0]["id"] = waba_id
    return whatsapp.deliver_raw(json.dumps(envelope).encode()).status_code


def test_a_template_status_for_a_waba_changes_only_its_companys_template(
    whatsapp: FakeMetaGraph, client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    whatsapp.add_phone_number(OTHER_NUMBER, waba_id=OTHER_WABA)
    connected = connect_number(client, globex, phone_number_id=OTHER_NUMBER, waba_id=OTHER_WABA)
    assert connected.status_code == 201, connected.text
    ids = {}
    for tenant in (acme, globex):
        created = client.post(
            "/templates",
            json={"name": "lead_followup", "language": "en_US", "body": "Hi {{1}}"},
            headers=tenant.admin,
        )
        assert created.status_code == 201, created.text
        ids[tenant.name] = created.json()["id"]

    def status(tenant: Tenant) -> str:
        return str(
            client.get(f"/templates/{ids[tenant.name]}", headers=tenant.agent).json()["status"]
        )

    assert _template_status(whatsapp, OTHER_WABA, "APPROVED") == 200
    assert (status(acme), status(globex)) == ("draft", "approved")
    assert _template_status(whatsapp, WABA_ID, "REJECTED") == 200
    assert (status(acme), status(globex)) == ("rejected", "approved")
    assert _template_status(whatsapp, "777777777777777", "PAUSED") == 200  # nobody's WABA
    assert (status(acme), status(globex)) == ("rejected", "approved")


def test_a_preference_named_by_waba_alone_reaches_only_its_company(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    from shvya.crm.models import LeadContact

    whatsapp.add_phone_number(OTHER_NUMBER, waba_id=OTHER_WABA)
    assert (
        connect_number(client, globex, phone_number_id=OTHER_NUMBER, waba_id=OTHER_WABA).status_code
        == 201
    )
    wa_id = "16315551181"
    for tenant in (acme, globex):
        response = client.post(
            "/inbound-message",
            json={"channel": "wa_cloud", "from": f"+{wa_id}", "text": "hi"},
            headers=tenant.agent,
        )
        assert response.status_code == 201, response.text
    envelope = whatsapp.envelope([whatsapp.user_preference_item(wa_id, "stop")])
    envelope["entry"][0]["id"] = OTHER_WABA
    del envelope["entry"][0]["changes"][0]["value"]["metadata"]  # named by the WABA alone
    assert whatsapp.deliver_raw(json.dumps(envelope).encode()).status_code == 200
    with session_factory() as session:
        consent = {
            contact.company_id: contact.marketing_consent
            for contact in session.scalars(select(LeadContact))
        }
    assert consent == {acme.company_id: None, globex.company_id: "stop"}


def test_the_number_from_the_environment_is_checked_with_meta_too(
    fake_meta: FakeMetaGraph,
    settings: Settings,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """META_PHONE_NUMBER_ID, META_WHATSAPP_TOKEN and META_WABA_ID at `shvya serve`."""
    from shvya.channels import service as channels

    def connect(token: str) -> ChannelAccount | None:
        configured = settings.model_copy(
            update={
                "meta_phone_number_id": PHONE_NUMBER_ID,
                "meta_whatsapp_token": SecretStr(token),
                "meta_waba_id": WABA_ID,
            }
        )
        with session_factory() as session:
            account = run_phases(
                channels.connect_whatsapp_from_environment(
                    session, company_id=acme.company_id, settings=configured, now=clock.now()
                ),
                session=session,
                end_prepare=commit_between_phases(session),
            )
            session.commit()
            return account

    with pytest.raises(channels.WhatsAppCheckFailed) as refused:
        connect("EAAG-expired-token-0000")
    assert refused.value.code == "whatsapp_token_refused"
    assert stored(session_factory) == NOTHING
    with pytest.raises(InvalidInput, match="printable ASCII"):
        connect("EAAG token with spaces")
    assert connect(ACCESS_TOKEN) is not None
    assert stored(session_factory) == {"accounts": 1, "wabas": 1, "events": 1}
    asked = len(fake_meta.requests)
    assert connect(ACCESS_TOKEN) is not None  # connected already with this token: not asked
    assert len(fake_meta.requests) == asked
