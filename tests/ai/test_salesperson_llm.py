"""The AI salesperson on an LLM: OpenAI and Anthropic through their official SDKs against fake
servers on 127.0.0.1 that answer what each test scripts. What a model says is checked before
it leaves: invented figures never reach the lead, and decisions come from the structured
understanding, not from the reply's words."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from shvya.ai.engage import NO_DRAFT_ANSWERS
from shvya.ai.text import sentences, word_count
from shvya.config import Settings
from shvya.crm.models import Lead
from tests.ai.salesperson import Desk
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI
from tests.support import choose_model, fake_provider_settings, understanding

# What the model is told and what leaves when it misbehaves do not depend on the database;
# the tests of transactions and races here run on both (docs/architecture.md, "Tests").
ONE_DATABASE = pytest.mark.one_database


@pytest.fixture
def settings(database_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_provider_settings(fake_openai, fake_anthropic),
        ai_timeout_seconds=5.0,
    )


@pytest.fixture
def desk(desk: Desk) -> Desk:
    """The conftest's desk, set up for every test here."""
    desk.setup(company_card={"hours": "Monday to Saturday, 9:30 am to 6 pm"})
    return desk


def use(desk: Desk, task: str, provider: str, model: str) -> None:
    choose_model(desk.client, desk.tenant, task, provider, model)


# --- guardrails -------------------------------------------------------------------------------


@ONE_DATABASE
def test_a_draft_with_an_invented_price_never_leaves(desk: Desk, fake_openai: FakeOpenAI) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    invented = {"reply": "The premium plan is 3,999 INR a month.", "sources": [], "answered": True}
    fake_openai.reply_json(invented)
    fake_openai.reply_json({**invented, "reply": "Sure! Premium is just 3,999 INR per month."})
    inbound = desk.converse("What does the premium plan cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert "3,999" not in reply["text"]
    assert reply["meta"]["purpose"] == "safe_answer"
    assert "team" in reply["text"]  # it offers a person
    [blocked] = desk.events(inbound["lead_id"], "GuardrailBlocked")
    assert blocked.data["figures"] == ["3,999 INR"]
    assert len(blocked.data["drafts"]) == 2
    # The second request told the model what it had invented.
    retry = fake_openai.chat_calls[-1].messages
    assert "3,999 INR" in retry[-1]["content"]


def test_a_regenerated_grounded_draft_is_sent(desk: Desk, fake_openai: FakeOpenAI) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.reply_json(
        {"reply": "Premium is 3,999 INR, 20% off today!", "sources": [], "answered": True}
    )
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    inbound = desk.converse("What does the premium plan cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["text"] == "The premium plan costs 4,999 INR per month."
    assert desk.job(inbound["job_id"])["result"]["guardrail"] == "regenerated"


@ONE_DATABASE
def test_an_empty_draft_is_asked_again_and_never_sent_empty(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.reply_json({"reply": "  ", "sources": [], "answered": True})
    fake_openai.reply_json({"reply": "", "sources": [], "answered": True})
    inbound = desk.converse("What does the premium plan cost?")
    job = desk.job(inbound["job_id"])
    assert job["status"] == "completed", job
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "safe_answer"
    assert "no reply text" in fake_openai.chat_calls[-1].messages[-1]["content"]


@ONE_DATABASE
def test_figures_from_the_company_card_and_the_leads_words_are_allowed(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.reply_json(
        {
            "reply": "We're open 9:30 am to 6 pm, and 12 seats is fine with Premium.",
            "sources": [],
            "answered": True,
        }
    )
    inbound = desk.converse("We need 12 seats, when are you open?")
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "reply"
    assert desk.events(inbound["lead_id"], "GuardrailBlocked") == []


def test_the_reply_keeps_the_passages_the_model_cited_and_the_stage_length(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    desk.configure_stage("New", max_chars=120)
    hits = desk.client.get(
        "/kb/search", params={"q": "premium plan cost"}, headers=desk.tenant.agent
    ).json()["passages"]
    cited = hits[0]["passage_id"]
    long_reply = "The premium plan costs 4,999 INR per month. " + "It is great value. " * 20
    fake_openai.reply_json(
        {"reply": long_reply, "sources": [cited, "made-up-id"], "answered": True}
    )
    inbound = desk.converse("What does the premium plan cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["passages"] == [cited]  # ids it was not given are dropped
    assert len(reply["text"]) <= 120
    assert reply["text"].startswith("The premium plan costs 4,999 INR per month.")
    # The prompt carried the passage, its id, the company card and the reply's language.
    system = fake_openai.chat_calls[-1].messages[0]["content"]
    assert cited in system
    assert "9:30 am to 6 pm" in system
    assert "English" in system


# --- understanding as a structured output -----------------------------------------------------


def test_the_models_understanding_decides_the_handoff(
    desk: Desk, fake_anthropic: FakeAnthropic
) -> None:
    use(desk, "extract", "anthropic", "claude-sonnet-5")
    desk.setup(kb="", handoff_message="A colleague will take over here.")
    # Sarcasm the rules would miss; the model flags it.
    fake_anthropic.reply_json(
        understanding(intent="complaint", handoff=True, handoff_reason="angry")
    )
    inbound = desk.converse("Oh great, the third time I ask and still nothing. Wonderful.")
    [handoff] = desk.events(inbound["lead_id"], "HandoffRequested")
    assert handoff.data["reason"] == "angry"
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["text"] == "A colleague will take over here."
    assert desk.lead(inbound["lead_id"])["ai_paused"] is True


@ONE_DATABASE
def test_a_handoff_phrase_inside_a_reply_decides_nothing(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.reply_json(
        {
            "reply": "The premium plan costs 4,999 INR per month. I can connect you to a human "
            "agent any time.",
            "sources": [],
            "answered": True,
        }
    )
    inbound = desk.converse("What does the premium plan cost?")
    assert desk.events(inbound["lead_id"], "HandoffRequested") == []
    assert desk.lead(inbound["lead_id"])["ai_paused"] is False


def test_the_models_opt_out_and_bant_are_applied(desk: Desk, fake_openai: FakeOpenAI) -> None:
    use(desk, "extract", "openai", "gpt-4o-mini")
    fake_openai.reply_json(
        understanding(
            intent="purchase_intent",
            budget={"amount": 300000, "currency": "INR", "text": "3 lakh"},
            authority={"decision_maker": True, "role": "founder", "text": "I'm the founder"},
            need="CRM for 8 reps",
            timeline="next month",
        )
    )
    first = desk.converse("I'm the founder, 3 lakh budget, CRM for 8 reps, need it next month")
    lead = desk.lead(first["lead_id"])
    bant = lead["attributes"]["bant"]
    assert bant["budget"]["amount"] == 300000
    assert bant["authority"] == {**bant["authority"], "value": "decision_maker", "role": "founder"}
    assert (bant["timeline"]["from"], bant["timeline"]["to"]) == ("2026-12-01", "2026-12-31")
    assert lead["stage"]["name"] == "Qualified"
    fake_openai.reply_json(understanding(intent="opt_out", opt_out=True))
    second = desk.converse("I'd rather you didn't contact me again.")
    [opted] = desk.events(first["lead_id"], "OptedOut")
    # The lead asked in words: a keyword opt-out, told apart by the AI as the actor.
    assert (opted.data["source"], opted.actor) == ("keyword", "ai")
    assert desk.job(second["job_id"])["result"]["outcome"] == "opted_out"


@ONE_DATABASE
def test_an_understanding_outside_the_schema_falls_back_to_the_rules(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "extract", "openai", "gpt-4o-mini")
    fake_openai.reply("intent: price question, probably")  # not JSON at all
    inbound = desk.converse("What does the premium plan cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert "4,999 INR" in reply["text"]
    assert desk.job(inbound["job_id"])["result"]["intent"] == "price_inquiry"


def test_a_rate_limited_provider_retries_the_reply_later_and_sends_once(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.fail_next(status=429, retry_after=1)
    inbound = desk.converse("What does the premium plan cost?")
    job = desk.job(inbound["job_id"])
    assert (job["status"], job["attempts"]) == ("queued", 1)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    desk.run(after_seconds=30)
    desk.run(after_seconds=30)
    assert desk.job(inbound["job_id"])["status"] == "completed"
    assert len(desk.replies(inbound["lead_id"])) == 1


# --- bump-ups and summaries from a model ------------------------------------------------------


@ONE_DATABASE
def test_a_model_bumpup_that_repeats_or_runs_long_is_rewritten(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "bumpup", "openai", "gpt-4o-mini")
    inbound = desk.converse("We need a CRM for our sales team")
    lead_id = inbound["lead_id"]
    first = (
        "Hi there, just following up on the CRM for your sales team. Would a short call this "
        "week help you compare plans, or should I send a quick overview you can read when you "
        "have a moment?"
    )
    fake_openai.reply(first)
    desk.client.post(f"/leads/{lead_id}/bumpup", headers=desk.tenant.agent)
    desk.run(after_seconds=60)
    fake_openai.reply(first.replace("Hi there", "Hello there"))  # a near-repeat
    fake_openai.reply("Any news?")  # too short
    fresh = (
        "Hello again! Many sales teams start with a two week pilot before deciding. If that "
        "sounds useful for your CRM search, I can set one up for you. Shall I share the steps "
        "to get going?"
    )
    fake_openai.reply(fresh)
    job_id = desk.client.post(f"/leads/{lead_id}/bumpup", headers=desk.tenant.agent).json()[
        "job_id"
    ]
    desk.run(after_seconds=60)
    result = desk.job(job_id)["result"]
    assert len(result["rejected_drafts"]) == 2
    texts = [m["text"] for m in desk.replies(lead_id) if m["meta"]["purpose"] == "bumpup"]
    assert texts == [first, fresh]
    assert all(30 <= word_count(t) <= 40 for t in texts)


@ONE_DATABASE
def test_a_model_summary_of_the_wrong_length_is_replaced(
    desk: Desk, fake_anthropic: FakeAnthropic
) -> None:
    use(desk, "summary", "anthropic", "claude-sonnet-5")
    inbound = desk.converse("We need a CRM for our sales team")
    fake_anthropic.reply("Lead wants a CRM.")  # one sentence: not enough
    desk.client.post(f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent)
    desk.run()
    summary = desk.lead(inbound["lead_id"])["attributes"]["ai_summary"]
    assert 3 <= len(sentences(summary["text"])) <= 5
    good = (
        "Ravi needs a CRM for his sales team. Budget and timeline are unknown. "
        "He has asked nothing about prices yet. Next, ask about team size and budget."
    )
    fake_anthropic.reply(good)
    desk.client.post(f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent)
    desk.run()
    assert desk.lead(inbound["lead_id"])["attributes"]["ai_summary"]["text"] == good


def test_no_transaction_is_held_open_while_the_model_thinks(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    """While the model writes, the run holds no transaction: another connection writes the
    lead at once (SQLite's write lock and PostgreSQL's row are free). What the run learnt
    (BANT here) is not written yet: it is committed with the reply, on every provider
    (docs/architecture.md, "Phases of a job that calls out")."""
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.delay_next(2.0)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    inbound = desk.write("Our budget is 5 lakh, what does the premium plan cost?")
    lead_id = uuid.UUID(inbound["lead_id"])
    desk.clock.advance(seconds=5)
    worker = threading.Thread(target=desk.run, kwargs={"after_seconds": 0})
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not fake_openai.requests_to("/chat/completions"):
            assert time.monotonic() < deadline, "the provider was never called"
            time.sleep(0.02)
        # The model is still "thinking": the lead can be written now, and holds no BANT yet.
        started = time.monotonic()
        with desk.factory() as session:
            lead = session.get_one(Lead, lead_id)
            assert "bant" not in lead.attributes
            lead.attributes = {**lead.attributes, "note": "written while the model thinks"}
            session.commit()
        assert time.monotonic() - started < 1.0
        assert fake_openai.requests_to("/chat/completions")[0].status is None
    finally:
        worker.join(timeout=30)
    [reply] = desk.replies(inbound["lead_id"])
    assert "4,999 INR" in reply["text"]
    with desk.factory() as session:
        lead = session.get_one(Lead, lead_id)
        assert lead.attributes["bant"]["budget"]["amount"] == 500000
        assert lead.attributes["note"] == "written while the model thinks"


def run_while_the_model_thinks(
    desk: Desk, fake: FakeOpenAI | FakeAnthropic, meanwhile: Any
) -> None:
    """Run the due jobs; while the (delayed) model call is in flight, do `meanwhile`."""
    worker = threading.Thread(target=desk.run, kwargs={"after_seconds": 0})
    before = len(fake.requests)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(fake.requests) == before:
            assert time.monotonic() < deadline, "the provider was never called"
            time.sleep(0.02)
        meanwhile()
    finally:
        worker.join(timeout=30)


def test_a_message_that_arrives_while_the_model_writes_is_answered_with_the_rest_once(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.delay_next(1.0)
    first_draft = {"reply": "The basic plan is 999 INR a month.", "sources": [], "answered": True}
    fake_openai.reply_json(first_draft)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    first = desk.write("What does the basic plan cost?")
    desk.clock.advance(seconds=5)
    run_while_the_model_thinks(desk, fake_openai, lambda: desk.write("and the premium one?"))
    assert desk.replies(first["lead_id"]) == []  # the first draft is superseded, not sent
    desk.run()
    [reply] = desk.replies(first["lead_id"])
    assert "4,999 INR" in reply["text"]
    assert len(reply["meta"]["answers"]) == 2


def test_a_pause_while_the_model_writes_stops_the_reply(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.delay_next(1.0)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    inbound = desk.write("What does the premium plan cost?")
    desk.clock.advance(seconds=5)
    pause = lambda: desk.client.post(  # noqa: E731
        f"/leads/{inbound['lead_id']}/ai/pause", headers=desk.tenant.agent
    )
    run_while_the_model_thinks(desk, fake_openai, pause)
    assert desk.replies(inbound["lead_id"]) == []
    assert desk.job(inbound["job_id"])["result"]["reason"] == "ai_paused"


def test_a_summary_keeps_the_bant_written_while_it_was_being_written(
    desk: Desk, fake_anthropic: FakeAnthropic
) -> None:
    use(desk, "summary", "anthropic", "claude-sonnet-5")
    inbound = desk.converse("We need a CRM for our sales team")
    fake_anthropic.delay_next(1.0)
    fake_anthropic.reply(
        "Ravi needs a CRM for his sales team. Budget and timeline are unknown. "
        "He asked nothing about prices yet. Next, ask about team size."
    )
    desk.client.post(f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent)

    def budget_arrives() -> None:
        with desk.factory() as session:
            lead = session.get_one(Lead, uuid.UUID(inbound["lead_id"]))
            lead.attributes = {**lead.attributes, "bant": {"budget": {"amount": 500000}}}
            session.commit()

    run_while_the_model_thinks(desk, fake_anthropic, budget_arrives)
    attributes = desk.lead(inbound["lead_id"])["attributes"]
    assert attributes["bant"]["budget"]["amount"] == 500000
    assert attributes["ai_summary"]["text"].startswith("Ravi needs a CRM")


@ONE_DATABASE
def test_a_bumpup_with_an_invented_offer_is_rewritten(desk: Desk, fake_openai: FakeOpenAI) -> None:
    use(desk, "bumpup", "openai", "gpt-4o-mini")
    inbound = desk.converse("We need a CRM for our sales team")
    invented = (
        "Hi Ravi! Good news: this week only, the premium plan is just 3,999 INR with 20% off "
        "for new teams. Shall I reserve the offer for your sales team before Friday so you "
        "do not miss it?"
    )
    fine = (
        "Hi Ravi, still thinking about the CRM for your sales team? I would be glad to answer "
        "any question or walk you through how teams like yours get started. Would a short "
        "call this week suit you?"
    )
    fake_openai.reply(invented)
    fake_openai.reply(fine)
    job_id = desk.client.post(
        f"/leads/{inbound['lead_id']}/bumpup", headers=desk.tenant.agent
    ).json()["job_id"]
    desk.run(after_seconds=60)
    result = desk.job(job_id)["result"]
    assert "3,999" in result["rejected_drafts"][0]
    texts = [m["text"] for m in desk.replies(inbound["lead_id"])]
    assert fine in texts
    assert invented not in texts


def test_a_question_that_arrives_while_a_bumpup_is_written_stops_the_bumpup(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "bumpup", "openai", "gpt-4o-mini")
    inbound = desk.converse("We need a CRM for our sales team")
    fake_openai.delay_next(1.0)
    fake_openai.reply(
        "Hi Ravi, still thinking about the CRM for your sales team? I would be glad to answer "
        "any question or walk you through how teams like yours get started. Would a short "
        "call this week suit you?"
    )
    job_id = desk.client.post(
        f"/leads/{inbound['lead_id']}/bumpup", headers=desk.tenant.agent
    ).json()["job_id"]
    desk.clock.advance(seconds=60)
    question = lambda: desk.write("what does the premium plan cost?")  # noqa: E731
    run_while_the_model_thinks(desk, fake_openai, question)
    assert desk.job(job_id)["status"] == "failed"
    assert "waiting for an answer" in desk.job(job_id)["last_error"]
    desk.run()
    purposes = [m["meta"]["purpose"] for m in desk.replies(inbound["lead_id"])]
    assert purposes == ["reply", "reply"]  # the question is answered, no bump-up went out


def test_the_rolling_summary_is_the_models_memory_of_the_conversation(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    fake_openai.reply_json({"reply": "Happy to help with that.", "sources": [], "answered": True})
    inbound = desk.converse("We need a CRM for our sales team")
    desk.client.post(f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent)
    desk.run()  # the offline provider writes the summary
    summary = desk.lead(inbound["lead_id"])["attributes"]["ai_summary"]["text"]
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    desk.converse("What does the premium plan cost?")
    prompt = fake_openai.chat_calls[-1].messages[-1]["content"]
    assert f"Summary of the conversation so far: {summary}" in prompt


# --- answers outside the reply schema (issue 14) ----------------------------------------------

GOOD = {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
FENCED = '```json\n{"reply": "The premium plan costs 4,999 INR per month.", "sources": []}\n```'
HTML_PAGE = "<html><body><p>The premium plan costs 4,999 INR per month.</p></body></html>"


def engage_usage(desk: Desk, lead_id: str) -> dict[str, Any]:
    response = desk.client.get("/ai/usage", params={"lead_id": lead_id}, headers=desk.tenant.admin)
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["by_task"]["engage"]
    return totals


def script(fake: FakeOpenAI, answer: Any) -> None:
    if isinstance(answer, str):
        fake.reply(answer)  # verbatim text, whatever format was asked
    else:
        fake.reply_json(answer, check_schema=False)


@ONE_DATABASE
@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"sources": []},
        {"reply": json.dumps(GOOD), "sources": [], "answered": True},
        FENCED,
        {"reply": "<p>The premium plan costs <b>4,999 INR</b> per month.</p>", "sources": []},
        HTML_PAGE,
    ],
    ids=["empty-object", "no-reply-field", "json-in-reply", "code-fence", "html-reply", "html"],
)
def test_an_answer_outside_the_schema_is_redrafted_once(
    desk: Desk, fake_openai: FakeOpenAI, answer: Any
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    script(fake_openai, answer)
    fake_openai.reply_json(GOOD)
    inbound = desk.converse("What does the premium plan cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["text"] == GOOD["reply"]
    assert reply["meta"]["purpose"] == "reply"
    assert desk.job(inbound["job_id"])["result"]["draft"] == "redrafted"
    # The second request told the model what was wrong with the first.
    assert "not usable" in fake_openai.chat_calls[-1].messages[-1]["content"]
    assert engage_usage(desk, inbound["lead_id"])["calls"] == 2


@ONE_DATABASE
@pytest.mark.parametrize(
    ("answers", "language", "question"),
    [
        (({}, {"sources": []}), "en", "What does the premium plan cost?"),
        ((FENCED, HTML_PAGE), "es", "¿Cuánto cuesta el plan premium?"),
        (
            ({"reply": json.dumps(GOOD), "sources": []}, {"answer": "x"}),
            "hinglish",
            "bhai premium plan ka price kya hai?",
        ),
        (({"reply": "```\n4,999 INR\n```", "sources": []}, {}), "hi", "प्रीमियम प्लान कितने का है?"),
    ],
)
def test_a_second_answer_outside_the_schema_is_replaced_by_the_safe_answer(
    desk: Desk, fake_openai: FakeOpenAI, answers: tuple[Any, Any], language: str, question: str
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    for answer in answers:
        script(fake_openai, answer)
    inbound = desk.converse(question)
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "safe_answer"
    assert reply["meta"]["language"] == language
    assert reply["text"] == NO_DRAFT_ANSWERS[language]
    for raw in ("{", "}", "<", "```"):
        assert raw not in reply["text"]
    [blocked] = desk.events(inbound["lead_id"], "GuardrailBlocked")
    assert blocked.data["reason"] == "outside_schema"
    assert engage_usage(desk, inbound["lead_id"])["calls"] == 2


FINE_BUMPUP = (
    "Hi Ravi, still thinking about the CRM for your sales team? I would be glad to answer "
    "any question or walk you through how teams like yours get started. Would a short "
    "call this week suit you?"
)


@ONE_DATABASE
@pytest.mark.parametrize(
    "wrapped",
    [
        json.dumps({"message": FINE_BUMPUP.replace("Ravi", "there")}),
        f"<p>{FINE_BUMPUP.replace('Ravi', 'there')}</p>",
        f"```\n{FINE_BUMPUP.replace('Ravi', 'there')}\n```",
    ],
    ids=["json", "html", "code-fence"],
)
def test_a_bumpup_in_json_or_markup_is_rewritten_and_never_sent(
    desk: Desk, fake_openai: FakeOpenAI, wrapped: str
) -> None:
    use(desk, "bumpup", "openai", "gpt-4o-mini")
    inbound = desk.converse("We need a CRM for our sales team")
    fake_openai.reply(wrapped)
    fake_openai.reply(FINE_BUMPUP)
    job_id = desk.client.post(
        f"/leads/{inbound['lead_id']}/bumpup", headers=desk.tenant.agent
    ).json()["job_id"]
    desk.run(after_seconds=60)
    [rejected] = desk.job(job_id)["result"]["rejected_drafts"]
    assert "not a message" in rejected
    bumpups = [
        m["text"] for m in desk.replies(inbound["lead_id"]) if m["meta"]["purpose"] == "bumpup"
    ]
    assert bumpups == [FINE_BUMPUP]


@ONE_DATABASE
def test_a_model_summary_in_json_is_replaced_by_sentences(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "summary", "openai", "gpt-4o-mini")
    inbound = desk.converse("We need a CRM for our sales team")
    wrapped = json.dumps(
        {"summary": "Ravi needs a CRM. Budget is unknown. Timeline is unknown. Ask next."}
    )
    fake_openai.reply(wrapped)
    job_id = desk.client.post(
        f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent
    ).json()["job_id"]
    desk.run()
    summary = desk.lead(inbound["lead_id"])["attributes"]["ai_summary"]["text"]
    assert "{" not in summary and '"summary"' not in summary
    assert 3 <= len(sentences(summary)) <= 5
    assert desk.job(job_id)["result"]["rejected_draft"] == "raw JSON, not sentences"


# --- tone (issue 14) --------------------------------------------------------------------------

CITES_NOTHING = {"sources": [], "answered": True}


def test_the_model_is_told_what_is_known_and_never_repeats_its_closing_question(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    asked = "What budget do you have in mind?"
    fake_openai.reply_json(
        {"reply": f"The premium plan costs 4,999 INR per month. {asked}", **CITES_NOTHING}
    )
    inbound = desk.converse("Hi, what does the premium plan cost?", name="Priya Shah")
    # The model misbehaves: the same closing question again, to a lead who just told it.
    fake_openai.reply_json(
        {"reply": f"Great, the basic plan is 999 INR a month. {asked}", **CITES_NOTHING}
    )
    desk.converse("Our budget is 5 lakh. And the basic plan?")
    first, second = (m["text"] for m in desk.replies(inbound["lead_id"]))
    assert first.endswith(asked)
    assert second == "Great, the basic plan is 999 INR a month."
    system = fake_openai.chat_calls[-1].messages[0]["content"]
    assert f"never the question your last message ended with: {asked}" in system
    assert "Still unknown: authority, need, timeline." in system  # the budget is known
    assert "greet them back" in system


@ONE_DATABASE
def test_a_company_without_a_name_is_never_named_to_the_model_as_default(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    use(desk, "engage", "openai", "gpt-4o-mini")
    desk.setup(kb="", name="Default")
    fake_openai.reply_json({"reply": "Hello! How can I help?", **CITES_NOTHING})
    desk.converse("hi")
    system = fake_openai.chat_calls[-1].messages[0]["content"]
    assert "Default" not in system
    assert "never name it" in system
