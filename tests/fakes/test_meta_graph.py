"""The fake Graph server itself, through plain httpx: what SHVYA's tests will rely on."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.fakes.meta_graph import FakeMetaGraph

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
# Clients below use verify=False: plain http, and loading CA certificates costs ~20 ms each.
USER = "14155550100"


class ManualClock:
    def __init__(self) -> None:
        self.current = T0

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class RecordingPoster:
    """A webhook_client that keeps what it was given and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
        self.posts.append((url, content, headers))
        return httpx.Response(self.status)

    def payload(self, index: int = -1) -> Any:
        return json.loads(self.posts[index][1])


class WebhookReceiver(ThreadingHTTPServer):
    """A real endpoint for URL deliveries: keeps the raw bytes and headers."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def poster() -> RecordingPoster:
    return RecordingPoster()


@pytest.fixture
def fake(clock: ManualClock, poster: RecordingPoster) -> Iterator[FakeMetaGraph]:
    with FakeMetaGraph(
        now=clock.now, webhook_url="/webhooks/whatsapp", webhook_client=poster
    ) as server:
        yield server


@pytest.fixture
def graph(fake: FakeMetaGraph) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.graph_url,
        headers={"Authorization": f"Bearer {fake.access_token}"},
        timeout=5.0,
        trust_env=False,
        verify=False,
    ) as client:
        yield client


def text_body(text: str = "Hi Ana, here is the price list.", to: str = USER) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": text},
    }


def template_body(
    name: str = "lead_followup", language: str = "en_US", params: int = 2, to: str = USER
) -> dict[str, Any]:
    components = [
        {"type": "body", "parameters": [{"type": "text", "text": f"v{i}"} for i in range(params)]}
    ]
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {
            "name": name,
            "language": {"policy": "deterministic", "code": language},
            "components": components,
        },
    }


def send(graph: httpx.Client, fake: FakeMetaGraph, body: dict[str, Any]) -> httpx.Response:
    return graph.post(f"/{fake.phone_number_id}/messages", json=body)


def error_code(response: httpx.Response) -> int:
    code: int = response.json()["error"]["code"]
    return code


# --- server ----------------------------------------------------------------------------------


def test_starts_fast_on_an_ephemeral_port_and_stops_cleanly() -> None:
    started = time.perf_counter()
    with FakeMetaGraph() as fake:
        assert time.perf_counter() - started < 1.0
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert fake.graph_url == f"{fake.base_url}/v25.0"
        base_url = fake.base_url
        with httpx.Client(trust_env=False, verify=False) as client:
            assert client.get(f"{base_url}/v25.0/x").status_code == 401  # keep-alive left open
            stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/v25.0/x", trust_env=False, verify=False)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v25.0/106540352242922/messages"),
        ("GET", "/v25.0/102290129340398/message_templates"),
        ("POST", "/v25.0/102290129340398/message_templates"),
        ("GET", "/v21.0/media-1"),
        ("GET", "/media-files/media-1?token=abc"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "EAAG-test"])
def test_every_endpoint_answers_190_without_the_bearer_token(
    fake: FakeMetaGraph, method: str, path: str, authorization: str | None
) -> None:
    fake.add_media("media-1", b"x", "image/png")
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.request(
        method,
        fake.base_url + path,
        json=text_body(),
        headers=headers,
        trust_env=False,
        verify=False,
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 190
    assert error["type"] == "OAuthException"
    assert error["fbtrace_id"]
    assert fake.sent_messages == []


def test_unknown_ids_and_paths_answer_graph_errors(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    other_number = graph.post("/999/messages", json=text_body())
    assert other_number.status_code == 400
    assert other_number.json()["error"]["code"] == 100
    assert other_number.json()["error"]["type"] == "GraphMethodException"
    assert error_code(graph.get("/no-such-media")) == 100
    assert error_code(graph.get(f"{fake.base_url}/106540352242922/messages")) == 2500


# --- sends -----------------------------------------------------------------------------------


def test_a_text_send_answers_a_unique_wamid_and_is_recorded(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote(USER)
    first = send(graph, fake, text_body())
    second = send(graph, fake, text_body("And the brochure."))

    assert first.status_code == 200
    answer = first.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": USER, "wa_id": USER}]
    wamid = answer["messages"][0]["id"]
    assert wamid.startswith("wamid.")
    assert second.json()["messages"][0]["id"] != wamid
    sent = fake.sent_messages
    assert (sent[0].wamid, sent[0].to, sent[0].type) == (wamid, USER, "text")
    assert sent[1].body["text"]["body"] == "And the brochure."
    recorded = fake.requests_to("/messages")
    assert len(recorded) == 2
    assert recorded[0].json["to"] == USER
    assert recorded[0].headers["authorization"] == "Bearer EAAG-test"
    assert recorded[0].status == 200


def test_sends_to_a_business_scoped_user_id_and_to_an_aliased_number(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote("US.13491208655302741918")
    body = text_body()
    del body["to"]
    body["recipient"] = "US.13491208655302741918"
    assert send(graph, fake, body).json()["contacts"][0]["user_id"] == "US.13491208655302741918"

    fake.alias_wa_id("5511987654321", "551187654321")
    fake.user_wrote("551187654321")
    answer = send(graph, fake, text_body(to="5511987654321")).json()
    assert answer["contacts"] == [{"input": "5511987654321", "wa_id": "551187654321"}]


def test_free_form_outside_the_window_is_131047_until_the_user_writes(
    fake: FakeMetaGraph, graph: httpx.Client, clock: ManualClock
) -> None:
    fake.add_template("lead_followup", "en_US", "MARKETING", body_params=2)
    refused = send(graph, fake, text_body())
    assert refused.status_code == 400
    assert error_code(refused) == 131047
    assert "24 hours" in refused.json()["error"]["error_data"]["details"]
    assert send(graph, fake, template_body()).status_code == 200  # templates need no window

    fake.deliver_inbound(USER, "How much is the pro plan?", name="Ana")
    assert send(graph, fake, text_body()).status_code == 200

    clock.advance(hours=23, minutes=59)
    assert send(graph, fake, text_body()).status_code == 200
    clock.advance(minutes=1)
    assert error_code(send(graph, fake, text_body())) == 131047


def test_the_window_counts_from_the_message_timestamp_not_the_delivery(
    fake: FakeMetaGraph, graph: httpx.Client, clock: ManualClock
) -> None:
    fake.deliver_inbound(USER, "late redelivery", timestamp=T0 - timedelta(hours=25))
    assert error_code(send(graph, fake, text_body())) == 131047
    fake.user_wrote(USER, at=T0 - timedelta(hours=1))
    assert send(graph, fake, text_body()).status_code == 200


def test_window_misses_can_arrive_as_failed_statuses(
    fake: FakeMetaGraph, graph: httpx.Client, poster: RecordingPoster
) -> None:
    fake.window_errors_async = True
    wamid = send(graph, fake, text_body()).json()["messages"][0]["id"]
    fake.deliver_statuses()
    status = poster.payload()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert (status["id"], status["status"]) == (wamid, "failed")
    assert status["errors"][0]["code"] == 131047


def test_more_sends_per_second_than_the_throughput_is_130429(
    fake: FakeMetaGraph, graph: httpx.Client, clock: ManualClock
) -> None:
    fake.throughput_per_second = 3
    for n in range(5):
        fake.user_wrote(f"1415555010{n}")
    answers = [send(graph, fake, text_body(to=f"1415555010{n}")) for n in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 400]
    assert error_code(answers[3]) == 130429
    clock.advance(seconds=1)
    assert send(graph, fake, text_body(to="14155550104")).status_code == 200


def test_one_recipient_faster_than_the_pair_rate_is_131056(
    fake: FakeMetaGraph, graph: httpx.Client, clock: ManualClock
) -> None:
    fake.pair_burst = 2
    fake.pair_interval_seconds = 6.0
    fake.user_wrote(USER)
    fake.user_wrote("14155550199")
    codes = [send(graph, fake, text_body()).status_code for _ in range(3)]
    assert codes == [200, 200, 400]
    assert error_code(send(graph, fake, text_body())) == 131056
    assert send(graph, fake, text_body(to="14155550199")).status_code == 200  # other user
    clock.advance(seconds=6)
    assert send(graph, fake, text_body()).status_code == 200
    assert error_code(send(graph, fake, text_body())) == 131056


def test_the_default_pair_burst_allows_a_short_conversation(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote(USER)
    assert all(send(graph, fake, text_body()).status_code == 200 for _ in range(10))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"messaging_product": "sms", "to": USER, "type": "text", "text": {"body": "x"}}, 100),
        ({"to": USER, "type": "text", "text": {"body": "x"}}, 100),
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, 131008),
        (text_body(to="+14155550100"), 100),
        (text_body(to="1 415 555 0100"), 100),
        (text_body("x" * 4097), 100),
        ({"messaging_product": "whatsapp", "to": USER, "type": "fax", "fax": {}}, 100),
        ({"messaging_product": "whatsapp", "to": USER, "type": "text"}, 131008),
        (
            {
                "messaging_product": "whatsapp",
                "to": USER,
                "type": "image",
                "image": {"link": "https://x/y.png", "id": "1"},
            },
            131008,
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": USER,
                "type": "audio",
                "audio": {"id": "1", "caption": "no"},
            },
            100,
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": USER,
                "type": "image",
                "image": {"id": "1", "filename": "a.png"},
            },
            100,
        ),
    ],
)
def test_invalid_sends_are_refused_like_meta(
    fake: FakeMetaGraph, graph: httpx.Client, body: dict[str, Any], code: int
) -> None:
    fake.user_wrote(USER)
    response = send(graph, fake, body)
    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["error"]["error_data"]["details"]
    assert fake.sent_messages == []


def buttons_body(titles: list[str]) -> dict[str, Any]:
    buttons = [
        {"type": "reply", "reply": {"id": f"b{i}", "title": t}} for i, t in enumerate(titles)
    ]
    return {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Want a demo this week?"},
            "action": {"buttons": buttons},
        },
    }


def list_body(rows: int) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "list",
            "header": {"type": "text", "text": "Plans"},
            "body": {"text": "Pick a plan"},
            "action": {
                "button": "See plans",
                "sections": [
                    {
                        "title": "Monthly",
                        "rows": [{"id": f"r{i}", "title": f"Plan {i}"} for i in range(rows)],
                    }
                ],
            },
        },
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (buttons_body(["Yes", "Not now", "Later"]), 200),
        (buttons_body(["1", "2", "3", "4"]), 400),
        (buttons_body(["x" * 21]), 400),
        (buttons_body(["Same", "Same"]), 400),
        (list_body(10), 200),
        (list_body(11), 400),
        (
            {
                "messaging_product": "whatsapp",
                "to": USER,
                "type": "document",
                "document": {"link": "https://x/q.pdf", "caption": "Quote", "filename": "q.pdf"},
            },
            200,
        ),
    ],
)
def test_interactive_and_media_limits(
    fake: FakeMetaGraph, graph: httpx.Client, body: dict[str, Any], status: int
) -> None:
    fake.user_wrote(USER)
    response = send(graph, fake, body)
    assert response.status_code == status
    if status == 400:
        assert error_code(response) == 131009


def test_mark_read_answers_success_and_is_recorded_apart(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.deliver_inbound(USER, "hi", wamid="wamid.INBOUND1")
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.INBOUND1"}
    assert send(graph, fake, read).json() == {"success": True}
    typing = {**read, "message_id": "wamid.OTHER", "typing_indicator": {"type": "text"}}
    assert send(graph, fake, typing).json() == {"success": True}

    receipts = fake.read_receipts
    assert [(r.message_id, r.is_typing, r.is_known_inbound) for r in receipts] == [
        ("wamid.INBOUND1", False, True),
        ("wamid.OTHER", True, False),
    ]
    assert fake.sent_messages == []


# --- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        ("APPROVED", template_body(name="no_such_template"), 132001),
        ("APPROVED", template_body(name="Lead_Followup"), 132001),  # names are case-sensitive
        ("APPROVED", template_body(language="pt_BR"), 132001),
        ("APPROVED", template_body(params=1), 132000),
        ("APPROVED", template_body(params=3), 132000),
        ("PAUSED", template_body(), 132015),
        ("DISABLED", template_body(), 132016),
        ("PENDING", template_body(), 132001),
        ("REJECTED", template_body(), 132001),
    ],
)
def test_template_sends_are_checked_against_the_catalog(
    fake: FakeMetaGraph, graph: httpx.Client, status: str, body: dict[str, Any], code: int
) -> None:
    fake.add_template("lead_followup", "en_US", "MARKETING", status=status, body_params=2)
    response = send(graph, fake, body)
    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["error"]["error_data"]["details"]


def test_an_approved_template_send_is_accepted_and_recorded(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.add_template("lead_followup", "en_US", "MARKETING", body_params=2)
    answer = send(graph, fake, template_body()).json()
    assert answer["messages"][0]["message_status"] == "accepted"
    [sent] = fake.sent_messages
    assert (sent.type, sent.template, sent.category) == (
        "template",
        ("lead_followup", "en_US"),
        "MARKETING",
    )


def test_template_header_and_button_parameters(fake: FakeMetaGraph, graph: httpx.Client) -> None:
    fake.add_template("with_image", "en", body_params=0, header="IMAGE")
    fake.add_template("with_link", "en", body_params=0, quick_replies=1, url_buttons=1)
    image_body = template_body(name="with_image", language="en", params=0)
    assert error_code(send(graph, fake, image_body)) == 132012
    image_body["template"]["components"].insert(
        0,
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x/y.png"}}]},
    )
    assert send(graph, fake, image_body).status_code == 200

    link_body = template_body(name="with_link", language="en", params=0)
    assert error_code(send(graph, fake, link_body)) == 131008  # the URL button needs its value
    url_button = {
        "type": "button",
        "sub_type": "url",
        "index": "0",
        "parameters": [{"type": "text", "text": "abc"}],
    }
    link_body["template"]["components"].append(url_button)
    assert error_code(send(graph, fake, link_body)) == 131009  # index 0 is the quick reply
    url_button["index"] = "1"
    assert send(graph, fake, link_body).status_code == 200


def test_template_listing_pages_through_paging_next(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    for n in range(7):
        fake.add_template(f"template_{n}", "en_US", "UTILITY", body_params=n % 3)
    url: str | None = f"/{fake.waba_id}/message_templates?limit=3"
    pages: list[list[dict[str, Any]]] = []
    while url:
        body = graph.get(url).json()
        pages.append(body["data"])
        assert set(body["paging"]["cursors"]) == {"before", "after"}
        url = body["paging"].get("next")
        if url:
            assert url.startswith(f"{fake.base_url}/v25.0/{fake.waba_id}/message_templates?")
    assert [len(page) for page in pages] == [3, 3, 1]
    names = [t["name"] for page in pages for t in page]
    assert names == [f"template_{n}" for n in range(7)]
    first = pages[0][1]
    assert set(first) >= {"id", "name", "language", "status", "category", "components"}
    assert first["status"] == "APPROVED"
    assert first["components"][0] == {
        "type": "BODY",
        "text": "Hi, thanks for your interest. {{1}}",
        "example": {"body_text": [["value1"]]},
    }
    assert len(graph.get(f"/{fake.waba_id}/message_templates").json()["data"]) == 7


def test_a_created_template_is_pending_until_meta_decides(
    fake: FakeMetaGraph, graph: httpx.Client, poster: RecordingPoster
) -> None:
    definition = {
        "name": "price_update",
        "language": "en_US",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hi {{1}}, the new price is {{2}}."}],
    }
    created = graph.post(f"/{fake.waba_id}/message_templates", json=definition)
    assert created.status_code == 200
    assert created.json() == {
        "id": created.json()["id"],
        "status": "PENDING",
        "category": "UTILITY",
    }
    duplicate = graph.post(f"/{fake.waba_id}/message_templates", json=definition)
    assert error_code(duplicate) == 100
    bad_name = graph.post(
        f"/{fake.waba_id}/message_templates", json={**definition, "name": "Price Update"}
    )
    assert error_code(bad_name) == 100
    assert error_code(send(graph, fake, template_body(name="price_update"))) == 132001

    fake.set_template_status("price_update", "en_US", "APPROVED", deliver=True)
    entry = poster.payload()["entry"][0]
    assert entry["id"] == fake.waba_id
    assert entry["time"] == int(T0.timestamp())
    change = entry["changes"][0]
    assert change["field"] == "message_template_status_update"
    assert change["value"] == {
        "event": "APPROVED",
        "message_template_id": int(created.json()["id"]),
        "message_template_name": "price_update",
        "message_template_language": "en_US",
        "reason": None,
        "message_template_category": "UTILITY",
    }
    assert send(graph, fake, template_body(name="price_update")).status_code == 200

    fake.set_template_status("price_update", "en_US", "REJECTED", reason="PROMOTIONAL")
    [listed] = graph.get(f"/{fake.waba_id}/message_templates?status=REJECTED").json()["data"]
    assert listed["rejected_reason"] == "PROMOTIONAL"


# --- phone numbers and their WABA ------------------------------------------------------------


def test_a_phone_number_answers_the_fields_asked_for(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    asked = graph.get(f"/{fake.phone_number_id}", params={"fields": "display_phone_number"})
    assert asked.json() == {
        "id": fake.phone_number_id,
        "display_phone_number": fake.display_phone_number,
    }
    default = graph.get(f"/{fake.phone_number_id}").json()
    assert set(default) == {
        "id",
        "display_phone_number",
        "verified_name",
        "quality_rating",
        "code_verification_status",
    }
    unknown = graph.get(f"/{fake.phone_number_id}", params={"fields": "id,owner"})
    assert (unknown.status_code, error_code(unknown)) == (400, 100)
    assert "nonexisting field (owner)" in unknown.json()["error"]["message"]


def test_a_waba_lists_its_own_numbers_page_by_page(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.add_phone_number("200000000000001", waba_id=fake.waba_id)
    fake.add_phone_number("300000000000001", waba_id="300000000000009")
    first = graph.get(f"/{fake.waba_id}/phone_numbers", params={"limit": 1}).json()
    assert [n["id"] for n in first["data"]] == [fake.phone_number_id]
    second = graph.get(first["paging"]["next"]).json()
    assert [n["id"] for n in second["data"]] == ["200000000000001"]
    assert "next" not in second["paging"]
    other = graph.get("/300000000000009/phone_numbers", params={"fields": "id"}).json()
    assert other["data"] == [{"id": "300000000000001"}]
    assert graph.get("/300000000000001").json()["id"] == "300000000000001"


def test_unknown_ids_and_wrong_tokens_get_graphs_errors(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    missing = graph.get("/999999999999999/phone_numbers")
    assert (missing.status_code, error_code(missing)) == (400, 100)
    assert missing.json()["error"]["type"] == "GraphMethodException"
    assert missing.json()["error"]["error_subcode"] == 33
    refused = httpx.get(
        f"{fake.graph_url}/{fake.phone_number_id}",
        headers={"Authorization": "Bearer EAAG-wrong"},
        trust_env=False,
    )
    assert (refused.status_code, error_code(refused)) == (401, 190)


# --- media -----------------------------------------------------------------------------------


def test_media_url_then_bytes_with_the_token(
    fake: FakeMetaGraph, graph: httpx.Client, clock: ManualClock
) -> None:
    content = b"\x89PNG\r\n\x1a\nfake image"
    fake.add_media("1037543291543636", content, "image/png")
    info = graph.get("/1037543291543636").json()
    assert info["mime_type"] == "image/png"
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert info["file_size"] == len(content)
    assert info["id"] == "1037543291543636"
    assert info["messaging_product"] == "whatsapp"
    assert info["url"].startswith(f"{fake.base_url}/media-files/1037543291543636?")

    download = graph.get(info["url"])
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "image/png"
    assert httpx.get(info["url"], trust_env=False, verify=False).status_code == 401
    clock.advance(minutes=5)
    assert graph.get(info["url"]).status_code == 404  # Meta's URLs expire


# --- fault injection -------------------------------------------------------------------------


def test_fail_next_answers_graph_errors_then_recovers(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote(USER)
    fake.fail_next(2, code=130429)
    fake.fail_next(code=4)
    answers = [send(graph, fake, text_body()) for _ in range(4)]
    assert [a.status_code for a in answers] == [400, 400, 429, 200]
    assert [error_code(a) for a in answers[:3]] == [130429, 130429, 4]
    assert "too many messages" in answers[0].json()["error"]["error_data"]["details"]
    assert len(fake.sent_messages) == 1


def test_fail_next_raw_body_and_path_filter(fake: FakeMetaGraph, graph: httpx.Client) -> None:
    fake.user_wrote(USER)
    fake.add_media("m1", b"x", "image/jpeg")
    fake.fail_next(http_status=502, raw_body="<html>Bad Gateway</html>", path_contains="/messages")
    assert graph.get("/m1").status_code == 200  # not a /messages request: untouched
    answer = send(graph, fake, text_body())
    assert (answer.status_code, answer.text) == (502, "<html>Bad Gateway</html>")
    assert send(graph, fake, text_body()).status_code == 200


def test_delay_next_times_the_client_out_after_accepting(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote(USER)
    fake.delay_next(2.0)
    with pytest.raises(httpx.ReadTimeout):
        graph.post(f"/{fake.phone_number_id}/messages", json=text_body(), timeout=0.2)
    assert len(fake.sent_messages) == 1  # Meta took it; only the answer was late
    assert send(graph, fake, text_body()).status_code == 200


@pytest.mark.parametrize("is_processed", [True, False])
def test_drop_next_closes_the_connection_without_an_answer(
    fake: FakeMetaGraph, graph: httpx.Client, is_processed: bool
) -> None:
    fake.user_wrote(USER)
    fake.drop_next(is_processed=is_processed)
    with pytest.raises(httpx.RemoteProtocolError):
        send(graph, fake, text_body())
    assert len(fake.sent_messages) == int(is_processed)
    assert fake.requests[-1].status is None
    assert send(graph, fake, text_body()).status_code == 200


def test_wait_for_requests_sees_sends_from_another_thread(
    fake: FakeMetaGraph, graph: httpx.Client
) -> None:
    fake.user_wrote(USER)
    worker = threading.Thread(target=lambda: [send(graph, fake, text_body()) for _ in range(3)])
    worker.start()
    assert len(fake.wait_for_requests(3, path_contains="/messages", timeout_seconds=5)) == 3
    worker.join()
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(4, timeout_seconds=0.05)


# --- webhooks --------------------------------------------------------------------------------


def test_webhooks_are_signed_over_the_exact_escaped_bytes() -> None:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        with FakeMetaGraph() as fake:
            host, port = receiver.server_address[:2]
            fake.webhook_url = f"http://{host!s}:{port}/webhooks/whatsapp"
            response = fake.deliver_inbound(USER, "Olá, quanto custa? ✓", name="José")
            assert response.status_code == 200
            fake.redeliver()
    finally:
        receiver.shutdown()
        receiver.server_close()

    (body, headers), (again, again_headers) = receiver.received
    assert b'"name":"Jos\\u00e9"' in body  # escaped like Meta, compact separators
    assert body.isascii()
    expected = hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"
    assert (again, again_headers["X-Hub-Signature-256"]) == (body, headers["X-Hub-Signature-256"])
    re_encoded = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert hmac.new(b"app-secret", re_encoded, hashlib.sha256).hexdigest() != expected

    payload = json.loads(body)
    assert payload["object"] == "whatsapp_business_account"
    [entry] = payload["entry"]
    assert entry["id"] == "102290129340398"
    [change] = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["metadata"] == {
        "display_phone_number": "15550783881",
        "phone_number_id": "106540352242922",
    }
    assert value["contacts"] == [{"profile": {"name": "José"}, "wa_id": USER}]
    [message] = value["messages"]
    assert message["from"] == USER
    assert message["type"] == "text"
    assert message["text"] == {"body": "Olá, quanto custa? ✓"}
    assert isinstance(message["timestamp"], str) and message["timestamp"].isdigit()


def test_deliveries_and_redeliveries_are_recorded(
    fake: FakeMetaGraph, poster: RecordingPoster
) -> None:
    poster.status = 500
    assert fake.deliver_inbound(USER, "hi", wamid="wamid.ONE").status_code == 500
    poster.status = 200
    fake.redeliver(0)
    first, second = fake.deliveries
    assert first.body == second.body
    assert (first.status_code, second.status_code, second.redelivery_of) == (500, 200, 0)
    assert first.payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == "wamid.ONE"
    assert poster.posts[0][0] == "/webhooks/whatsapp"


def test_deliver_raw_sends_forged_unsigned_and_malformed_bodies(
    fake: FakeMetaGraph, poster: RecordingPoster
) -> None:
    fake.deliver_raw(b'{"object":"whatsapp_business_account","entry":[]}')
    fake.deliver_raw(b"{not json", signature="sha256=" + "0" * 64)
    fake.deliver_raw("{}", signature=None)
    (_, body, signed), (_, _, forged), (_, _, unsigned) = poster.posts
    assert signed["X-Hub-Signature-256"] == fake.sign(body)
    assert forged["X-Hub-Signature-256"] == "sha256=" + "0" * 64
    assert "X-Hub-Signature-256" not in unsigned


@pytest.mark.parametrize(
    ("kind", "key", "expected"),
    [
        ("button", "button", {"payload": "BOOK_DEMO", "text": "Book demo"}),
        (
            "interactive_button",
            "interactive",
            {"type": "button_reply", "button_reply": {"id": "BOOK_DEMO", "title": "Book demo"}},
        ),
        (
            "interactive_list",
            "interactive",
            {"type": "list_reply", "list_reply": {"id": "BOOK_DEMO", "title": "Book demo"}},
        ),
        ("location", "location", {"latitude": 38.7223, "longitude": -9.1393, "name": "Book demo"}),
    ],
)
def test_inbound_reply_shapes(
    fake: FakeMetaGraph, poster: RecordingPoster, kind: str, key: str, expected: dict[str, Any]
) -> None:
    fake.deliver_inbound(USER, "Book demo", type=kind, reply_id="BOOK_DEMO")
    message = poster.payload()["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message[key] == expected
    assert message["type"] == ("interactive" if kind.startswith("interactive") else kind)


def test_inbound_media_unsupported_and_usernames(
    fake: FakeMetaGraph, poster: RecordingPoster
) -> None:
    media = fake.add_media("media-9", b"%PDF-1.7", "application/pdf")
    fake.deliver_inbound(USER, "the quote", type="document", media_id="media-9", filename="q.pdf")
    document = poster.payload()["entry"][0]["changes"][0]["value"]["messages"][0]["document"]
    assert document == {
        "id": "media-9",
        "mime_type": "application/pdf",
        "sha256": media.sha256,
        "caption": "the quote",
        "filename": "q.pdf",
    }
    fake.deliver_inbound(USER, type="unsupported")
    unsupported = poster.payload()["entry"][0]["changes"][0]["value"]["messages"][0]
    assert unsupported["errors"][0]["code"] == 131051
    fake.deliver_inbound(None, "hi", user_id="US.134912", extra={"referral": {"ctwa_clid": "c"}})
    value = poster.payload()["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Test User"}, "user_id": "US.134912"}]
    assert value["messages"][0]["referral"] == {"ctwa_clid": "c"}


def test_statuses_name_our_sends_and_fail_async_arrives_later(
    fake: FakeMetaGraph, graph: httpx.Client, poster: RecordingPoster
) -> None:
    fake.user_wrote(USER)
    fake.user_wrote("14155550111")
    fake.fail_async("14155550111", code=131026)
    ok = send(graph, fake, text_body()).json()["messages"][0]["id"]
    failing = send(graph, fake, text_body(to="14155550111"))
    assert failing.status_code == 200
    failing_wamid = failing.json()["messages"][0]["id"]
    assert poster.posts == []  # nothing arrives until the test says so

    fake.deliver_status(ok, "read")
    fake.deliver_status(ok, "delivered")  # out of order: the test chooses
    assert len(fake.deliver_statuses()) == 1
    read, delivered, failed = (
        poster.payload(i)["entry"][0]["changes"][0]["value"]["statuses"][0] for i in range(3)
    )
    assert (read["id"], read["status"], read["recipient_id"]) == (ok, "read", USER)
    assert delivered["pricing"]["pricing_model"] == "PMP"
    assert (failed["id"], failed["status"]) == (failing_wamid, "failed")
    assert failed["errors"][0]["code"] == 131026
    assert set(failed["errors"][0]) == {"code", "title", "message", "error_data", "href"}
    assert fake.pending_statuses == []


def test_a_marketing_opt_out_fails_marketing_templates_later(
    fake: FakeMetaGraph, graph: httpx.Client, poster: RecordingPoster
) -> None:
    fake.add_template("promo", "en_US", "MARKETING", body_params=0)
    fake.deliver_user_preference(USER, "stop")
    value = poster.payload()["entry"][0]["changes"][0]["value"]
    assert poster.payload()["entry"][0]["changes"][0]["field"] == "user_preferences"
    assert value["user_preferences"][0]["value"] == "stop"
    assert value["user_preferences"][0]["category"] == "marketing_messages"

    assert send(graph, fake, template_body(name="promo", params=0)).status_code == 200
    fake.deliver_statuses()
    status = poster.payload()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert status["errors"][0]["code"] == 131050


def test_a_batch_of_1000_items_across_entries(fake: FakeMetaGraph, poster: RecordingPoster) -> None:
    items = [fake.inbound_item(f"1415555{n:04d}", f"message {n}") for n in range(600)]
    fake.user_wrote(USER)
    items += [fake.status_item(f"wamid.S{n}", recipient_id=USER) for n in range(400)]
    fake.deliver_batch(items, items_per_change=50, changes_per_entry=2)
    payload = poster.payload()
    assert len(payload["entry"]) == 10
    values = [c["value"] for e in payload["entry"] for c in e["changes"]]
    assert sum(len(v.get("messages", [])) for v in values) == 600
    assert sum(len(v.get("statuses", [])) for v in values) == 400
    with pytest.raises(ValueError, match="1000"):
        fake.deliver_batch(items + items[:1])
