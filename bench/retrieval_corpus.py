"""The knowledge base and labelled questions of bench/retrieval.py, generated from a seed.

A sales knowledge base of fictional vendors: per vendor, one document per product (software
subscriptions and devices) and one of company policies. Each document is markdown, one `##`
section per topic (pricing, limits, integrations, SLA, shipping, warranty...), each section a
short paragraph of specific facts drawn from vocabulary pools, small enough that SHVYA's
chunker keeps it as exactly one passage, whose heading is "<document title> > <section>". That
heading is the passage's label: a question is relevant to the one passage it was written from.

Each section also yields the questions its facts answer, in three kinds:

- keyword: a question worded like the passage ("What is the uptime SLA for X?");
- paraphrase: the same need in other words ("What availability does X guarantee each
  month?"), written by hand per fact, as a customer would ask it;
- typo: a keyword or paraphrase question with an inflected word ("integrates" for
  "integrate") and/or one or two typing mistakes (a dropped, doubled, swapped or neighbouring
  key), sometimes in the product's name.

Every question names its product or vendor, as a customer's question does; what a retriever
has to find is the right section among that product's ten or so, and not the same section
of a similarly named product (vendors share product lines and editions: "Ledger Pro" exists
under several vendors).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("keyword", "paraphrase", "typo")
# Share of each kind in the question set (the rest are typo questions).
KEYWORD_SHARE = 0.40
PARAPHRASE_SHARE = 0.35


@dataclass(frozen=True)
class Fact:
    keyword: tuple[str, ...]  # question templates worded like the passage
    paraphrase: tuple[str, ...]  # the same question in other words


@dataclass(frozen=True)
class Section:
    name: str
    text: str
    facts: tuple[Fact, ...]


@dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...]

    @property
    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        for section in self.sections:
            parts.append(f"## {section.name}\n{section.text}\n")
        return "\n".join(parts)

    def key(self, section: Section) -> str:
        """The heading SHVYA gives the section's passage (its label here)."""
        return f"{self.title} > {section.name}"


@dataclass(frozen=True)
class Query:
    text: str
    kind: str
    relevant: frozenset[str]  # passage keys ("<title> > <section>")


@dataclass
class Corpus:
    documents: list[Document] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)

    @property
    def passage_count(self) -> int:
        return sum(len(d.sections) for d in self.documents)


# --- vocabulary --------------------------------------------------------------------------------

BRAND_STEMS = (
    "Orbi", "Kestra", "Zeno", "Nuva", "Pella", "Quora", "Tandi", "Bravo", "Corva", "Halo",
    "Lumo", "Verta", "Solva", "Mira", "Astra", "Ferra", "Gala", "Helio", "Iva", "Jura",
    "Kora", "Lyra", "Mova", "Nexa", "Ondo", "Pira", "Rova", "Sava", "Tera", "Ulma",
)  # fmt: skip
BRAND_ENDINGS = ("tek", "logic", "ware", "nova", "sys", "wave", "line", "works", "ly", "soft")

SOFTWARE = {
    "CRM": ("a customer relationship manager", ("contacts", "deals", "sales pipelines")),
    "Ledger": ("accounting software", ("invoices", "expenses", "bank reconciliation")),
    "Dialer": ("a cloud calling tool", ("call recording", "power dialing", "voicemail drops")),
    "Helpdesk": ("a ticketing system", ("support tickets", "canned replies", "escalations")),
    "Scheduler": ("appointment booking software", ("bookings", "reminders", "staff calendars")),
    "Inbox": ("a shared team inbox", ("email", "WhatsApp chats", "assignments")),
    "Payroll": ("payroll and HR software", ("salaries", "leave requests", "tax filings")),
    "Forms": ("an online form builder", ("lead forms", "surveys", "file uploads")),
    "Analytics": ("a sales analytics dashboard", ("revenue reports", "forecasts", "quotas")),
    "Catalog": ("a product catalogue manager", ("product listings", "price lists", "stock")),
    "Campaigns": ("an email and SMS campaign tool", ("newsletters", "drip sequences", "lists")),
    "Quotes": ("a quoting and e-signature tool", ("quotes", "contracts", "signatures")),
}
DEVICES = {
    "Scanner": "a handheld barcode scanner",
    "Terminal": "a card payment terminal",
    "Printer": "a thermal receipt printer",
    "Kiosk": "a self-service ordering kiosk",
    "Headset": "a wireless call-centre headset",
    "Tablet": "a rugged field-sales tablet",
    "Camera": "a shop security camera",
    "Scale": "a retail weighing scale",
    "Router": "a 5G business router",
}
EDITIONS = ("Pro", "Lite", "Max", "Go", "One", "Plus", "Edge", "Prime", "Flex", "Core", "Neo")
AUDIENCES = (
    "small businesses", "retail chains", "clinics and hospitals", "restaurants",
    "real estate agencies", "car dealerships", "schools and colleges", "logistics companies",
    "insurance brokers", "travel agencies", "field sales teams", "wholesale distributors",
)  # fmt: skip
LANGUAGES = (
    "English", "Hindi", "Spanish", "Portuguese", "French", "German", "Arabic", "Indonesian",
    "Japanese", "Tamil", "Marathi", "Italian",
)  # fmt: skip
CURRENCIES = {"USD": (9, 149), "EUR": (9, 139), "GBP": (8, 119), "INR": (299, 4999)}
INTEGRATIONS = (
    "Salesforce", "HubSpot", "Slack", "Zapier", "Shopify", "QuickBooks", "Xero",
    "Microsoft Teams", "Zoho CRM", "Pipedrive", "Google Sheets", "Stripe", "Twilio",
    "WhatsApp Business", "Mailchimp", "Zendesk", "Tally", "Razorpay", "Freshdesk", "Notion",
)  # fmt: skip
COMPETITORS = ("Excel spreadsheets", "Salesforce", "HubSpot", "Zoho", "Pipedrive", "Freshworks")
CERTIFICATIONS = ("SOC 2 Type II", "ISO 27001", "HIPAA", "PCI DSS Level 1", "ISO 27701")
IDENTITY_PROVIDERS = ("Okta", "Azure AD", "Google Workspace", "OneLogin", "JumpCloud")
DATA_CENTRES = {
    "Frankfurt, Germany": "Germany",
    "Virginia, United States": "the United States",
    "Mumbai, India": "India",
    "Sydney, Australia": "Australia",
    "Singapore": "Singapore",
    "Sao Paulo, Brazil": "Brazil",
    "London, United Kingdom": "the United Kingdom",
    "Tokyo, Japan": "Japan",
}
SUPPORT_HOURS = (
    "around the clock, 24x7",
    "from 9 am to 6 pm IST, Monday to Friday",
    "from 8 am to 8 pm CET on weekdays",
    "from 7 am to 7 pm Eastern time, Monday to Saturday",
)
SUPPORT_CHANNELS = ("phone", "live chat", "email", "WhatsApp")
COUNTRIES = (
    "India", "Germany", "France", "Brazil", "Mexico", "Japan", "Australia", "Canada",
    "the United Kingdom", "the United States", "Singapore", "the UAE", "South Africa",
    "Nigeria", "Indonesia", "Spain", "Italy", "the Netherlands", "Poland", "Kenya",
)  # fmt: skip
WAREHOUSES = ("Rotterdam", "Chennai", "Dallas", "Shenzhen", "Dubai", "Leipzig", "Toronto")
COLOURS = ("black", "white", "graphite grey", "navy blue", "forest green", "red", "silver")
CONNECTIVITY = ("Wi-Fi 6", "Bluetooth 5.3", "4G LTE", "Ethernet", "NFC", "USB-C")
OPERATING_SYSTEMS = ("Windows 11", "macOS", "Android", "iOS", "Linux", "ChromeOS")
POS_SYSTEMS = ("Square", "Lightspeed", "Toast", "Clover", "Petpooja", "Vend", "Shopify POS")
PAYMENT_METHODS = (
    "Visa and Mastercard cards", "American Express", "bank transfer", "UPI", "PayPal",
    "SEPA direct debit", "Razorpay payment links", "cheques",
)  # fmt: skip
CITIES = (
    "Pune", "Bengaluru", "Berlin", "Austin", "Toronto", "Lisbon", "Singapore", "Melbourne",
    "Dublin", "Nairobi", "Sao Paulo", "Amsterdam", "Hyderabad", "Manchester",
)  # fmt: skip
TAXES = {"GST": "GSTIN", "VAT": "VAT number", "sales tax": "resale certificate"}
# Boilerplate that real knowledge-base pages carry: 0 to 2 of these end a section.
FILLERS = (
    "Ask your account manager for a written quote.",
    "Details may change; the signed order form always takes precedence.",
    "Thousands of growing teams rely on it every day.",
    "Our customer success team reviews these terms every quarter.",
    "See the help centre for step-by-step guides.",
    "Contact sales if your needs are different.",
    "This page was last reviewed by the product team this year.",
    "Regional partners may offer different terms in some markets.",
    "Screenshots and short videos are available in the resources section.",
    "We announce every change in the release notes one month ahead.",
    "Customers in regulated industries should read the master agreement as well.",
    "The same terms apply to every edition unless stated otherwise.",
)


# --- sections ----------------------------------------------------------------------------------


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _filler(rng: random.Random) -> str:
    return "".join(" " + f for f in rng.sample(FILLERS, rng.choice((0, 0, 1, 1, 2))))


def _software_sections(rng: random.Random, product: str, line: str) -> list[Section]:
    description, features = SOFTWARE[line]
    cur = rng.choice(list(CURRENCIES))
    low, high = CURRENCIES[cur]
    price = rng.randint(low, high)
    discount = rng.choice((10, 15, 17, 20, 25))
    min_seats = rng.choice((1, 3, 5, 10))
    audience = rng.choice(AUDIENCES)
    languages = rng.sample(LANGUAGES, 4)
    integrations = rng.sample(INTEGRATIONS, 4)
    certs = rng.sample(CERTIFICATIONS, 2)
    idp = rng.choice(IDENTITY_PROVIDERS)
    centres = rng.sample(list(DATA_CENTRES), 2)
    competitor = rng.choice(COMPETITORS)
    p = product
    sections = [
        Section(
            "Overview",
            f"{p} is {description} for {audience}. It helps teams manage {_join(list(features))} "
            f"in one place, on the web and on Android and iOS phones. The apps are available in "
            f"{_join(languages)}.",
            (
                Fact(
                    (f"Which languages is {p} available in?", f"{p} supported languages"),
                    (
                        f"Is there a {languages[1]} version of {p}?",
                        f"Can my staff use {p} in their mother tongue?",
                    ),
                ),
                Fact(
                    (f"What does {p} help teams manage?",),
                    (f"What problem does {p} solve for a business like mine?",),
                ),
            ),
        ),
        Section(
            "Pricing",
            rng.choice(
                (
                    f"{p} costs {price} {cur} per seat per month when billed monthly. With annual "
                    f"billing the discount is {discount}%. The minimum order is {min_seats} "
                    f"seats, and extra storage is sold separately.",
                    f"The list price of {p} is {price} {cur} per seat per month. Customers who "
                    f"choose annual billing get a {discount}% discount. Every subscription starts "
                    f"at {min_seats} seats.",
                )
            ),
            (
                Fact(
                    (f"How much does {p} cost per seat per month?", f"{p} price per seat"),
                    (
                        f"What's the monthly fee per user for {p}?",
                        f"How much would {p} set me back for each person on my team?",
                    ),
                ),
                Fact(
                    (f"{p} annual billing discount",),
                    (
                        f"Is {p} cheaper if we pay for the whole year upfront?",
                        f"Do you give a better deal on {p} for yearly contracts?",
                    ),
                ),
                Fact(
                    (f"What is the minimum number of seats for {p}?",),
                    (f"What's the smallest team size {p} will sell to?",),
                ),
            ),
        ),
        Section(
            "Free trial",
            f"You can try {p} free for {rng.choice((7, 14, 21, 30))} days. "
            + rng.choice(
                (
                    "No credit card is required to start.",
                    "A credit card is required to start, but nothing is charged until the trial "
                    "ends.",
                )
            )
            + " The trial includes "
            + rng.choice(("every feature of the top plan", "up to 3 users and 500 records"))
            + ". At the end of the trial your workspace is "
            + rng.choice(("paused, not deleted, for 30 days.", "moved to the free plan.")),
            (
                Fact(
                    (f"How long is the {p} free trial?",),
                    (
                        f"Can I test {p} for a few weeks before paying?",
                        f"Is there a way to evaluate {p} at no charge first?",
                    ),
                ),
                Fact(
                    (f"Does the {p} trial need a credit card?",),
                    (f"Do I have to enter my card details to evaluate {p}?",),
                ),
            ),
        ),
        Section(
            "Usage limits",
            f"Each {p} workspace includes {rng.choice((5, 10, 25, 50, 100))} GB of storage and up "
            f"to {rng.choice((5_000, 25_000, 100_000, 1_000_000)):,} records. The public API "
            f"accepts {rng.choice((60, 120, 300, 600, 1000))} requests per minute per workspace; "
            f"requests above that limit receive HTTP 429. File uploads are limited to "
            f"{rng.choice((10, 25, 50, 100))} MB each.",
            (
                Fact(
                    (f"{p} API rate limit requests per minute",),
                    (
                        f"How many calls can our integration make to {p} every minute before "
                        f"being throttled?",
                    ),
                ),
                Fact(
                    (f"How much storage does a {p} workspace include?",),
                    (
                        f"How much disk space do we get with {p}?",
                        f"Is there a cap on how many gigabytes we can keep in {p}?",
                    ),
                ),
                Fact(
                    (f"{p} maximum file upload size",),
                    (f"How big can an attachment be in {p}?",),
                ),
            ),
        ),
        Section(
            "Integrations",
            f"{p} connects natively with {_join(integrations[:3])}. A two-way sync with "
            f"{integrations[3]} is available through "
            + rng.choice(("the marketplace app", "our open-source connector", "Make.com"))
            + ". Webhooks and a REST API cover everything else.",
            (
                Fact(
                    (
                        f"Does {p} integrate with {integrations[0]}?",
                        f"{p} {integrations[3]} integration",
                    ),
                    (
                        f"Can I hook {p} up to {integrations[1]}?",
                        f"Will {p} sync with our {integrations[2]} account?",
                    ),
                ),
            ),
        ),
        Section(
            "Support and SLA",
            f"Support for {p} is available {rng.choice(SUPPORT_HOURS)} by "
            f"{_join(rng.sample(SUPPORT_CHANNELS, 3))}. Urgent tickets get a first response "
            f"within {rng.choice(('30 minutes', '1 hour', '2 hours', '4 hours'))}. The uptime "
            f"commitment is {rng.choice(('99.5', '99.9', '99.95', '99.99'))}% per calendar month, "
            f"with service credits if it is missed.",
            (
                Fact(
                    (f"What is the uptime SLA for {p}?",),
                    (
                        f"What availability does {p} guarantee each month?",
                        f"How reliable is {p}, do you promise it will stay online?",
                    ),
                ),
                Fact(
                    (f"{p} support hours",),
                    (f"When can I reach a human at {p} if something breaks?",),
                ),
                Fact(
                    (f"How fast is the first response for urgent {p} tickets?",),
                    (f"If {p} goes down, how quickly will someone answer us?",),
                ),
            ),
        ),
        Section(
            "Security and compliance",
            f"{p} is certified for {certs[0]} and {certs[1]}, and its processing follows GDPR. "
            f"Data is encrypted with AES-256 at rest and TLS 1.3 in transit. Single sign-on works "
            f"with SAML 2.0 identity providers such as {idp}, and SCIM provisioning is included "
            f"on {rng.choice(('Business', 'Enterprise', 'all'))} plans.",
            (
                Fact(
                    (f"Which security certifications does {p} have?",),
                    (
                        f"Has {p} passed an independent security audit?",
                        f"Is {p} compliant with {certs[0]}?",
                    ),
                ),
                Fact(
                    (f"Does {p} support single sign-on with SAML?",),
                    (f"Can our employees log in to {p} through {idp}?",),
                ),
                Fact(
                    (f"How does {p} encrypt data?",),
                    (f"Is our information protected when {p} stores it?",),
                ),
            ),
        ),
        Section(
            "Data residency and backups",
            f"Customer data for {p} is hosted in {centres[0]}; customers on annual contracts can "
            f"choose {centres[1]} instead. Backups are taken every "
            f"{rng.choice((1, 4, 6, 12, 24))} hours and kept for {rng.choice((7, 14, 30, 90))} "
            f"days. Deleted records stay recoverable for {rng.choice((14, 30, 60))} days.",
            (
                Fact(
                    (f"Where is {p} data hosted?",),
                    (
                        f"In which country are the {p} servers?",
                        f"Can we keep our {p} information inside {DATA_CENTRES[centres[1]]}?",
                    ),
                ),
                Fact(
                    (f"How long does {p} keep backups?",),
                    (f"If we lose something in {p}, how far back can it be restored?",),
                ),
            ),
        ),
        Section(
            "Onboarding and training",
            f"Every new {p} customer gets a {rng.choice(('two-week', 'four-week', '30-day'))} "
            f"onboarding programme with a named specialist. It includes "
            f"{rng.choice((2, 3, 4, 6))} live training sessions, help importing data from "
            f"{competitor}, and access to the video academy. Teams over "
            f"{rng.choice((20, 50, 100))} seats also get an admin workshop.",
            (
                Fact(
                    (f"What onboarding and training does {p} include?",),
                    (
                        f"Will someone from {p} teach my team how to use it?",
                        f"Do we get help getting started with {p}?",
                    ),
                ),
                Fact(
                    (f"Can {p} import data from {competitor}?",),
                    (f"We're moving off {competitor}; can you help us switch to {p}?",),
                ),
            ),
        ),
        Section(
            "Cancellation and refunds",
            f"{p} subscriptions can be cancelled at any time from the billing page. Monthly plans "
            f"stop at the end of the current month; annual plans are refunded pro rata within "
            f"the first {rng.choice((14, 30, 60, 90))} days. After that no refund is given, but "
            f"you keep access until the term ends.",
            (
                Fact(
                    (f"What is the {p} refund policy?",),
                    (f"If we stop using {p} after a few weeks, do we get our money back?",),
                ),
                Fact(
                    (f"How do I cancel {p}?",),
                    (f"How can we end our {p} subscription?",),
                ),
            ),
        ),
    ]
    return sections


def _device_sections(rng: random.Random, product: str, line: str) -> list[Section]:
    description = DEVICES[line]
    cur = rng.choice(list(CURRENCIES))
    low, high = CURRENCIES[cur]
    price = rng.randint(low * 4, high * 6)
    bulk_units = rng.choice((10, 25, 50))
    colours = rng.sample(COLOURS, 3)
    connectivity = rng.sample(CONNECTIVITY, 3)
    countries = rng.sample(COUNTRIES, 5)
    systems = rng.sample(OPERATING_SYSTEMS, 3)
    pos = rng.sample(POS_SYSTEMS, 2)
    audience = rng.choice(AUDIENCES)
    p = product
    return [
        Section(
            "Overview",
            f"{p} is {description} built for {audience}. It is sold in {_join(colours)}, and "
            f"each box contains the device, a charging cable and a quick-start card.",
            (
                Fact(
                    (f"What colours does {p} come in?",),
                    (f"What finishes can I order {p} in?", f"Is {p} available in {colours[1]}?"),
                ),
                Fact(
                    (f"What does the {p} box contain?",),
                    (f"What do I get in the package when I buy {p}?",),
                ),
            ),
        ),
        Section(
            "Pricing",
            f"{p} costs {price} {cur} per unit. Orders of {bulk_units} units or more are priced at "
            f"{int(price * 0.85)} {cur} each. Financing over {rng.choice((6, 12, 24))} months is "
            f"available in {rng.choice(COUNTRIES)}.",
            (
                Fact(
                    (f"How much does {p} cost?", f"{p} price per unit"),
                    (
                        f"How much do I pay to buy a single {p}?",
                        f"What does one {p} set us back?",
                    ),
                ),
                Fact(
                    (f"{p} bulk price for {bulk_units} units",),
                    (f"Is there a cheaper rate if we order lots of {p} devices?",),
                ),
            ),
        ),
        Section(
            "Specifications",
            f"{p} offers {_join(connectivity)}. It has a "
            f"{rng.choice(('2.4-inch', '4-inch', '5.5-inch', '8-inch', '10.1-inch'))} display, "
            f"measures {rng.randint(60, 300)} x {rng.randint(40, 200)} x {rng.randint(10, 90)} mm "
            f"and weighs {rng.randint(90, 2400)} g. It is rated "
            f"{rng.choice(('IP54', 'IP65', 'IP67'))} against dust and water.",
            (
                Fact((f"What is the weight of {p}?",), (f"How heavy is {p}?",)),
                Fact(
                    (f"Does {p} have {connectivity[0]}?",),
                    (f"What wireless options does {p} have?",),
                ),
                Fact(
                    (f"{p} IP rating against dust and water",),
                    (f"Can {p} survive rain or being dropped in a puddle?",),
                ),
            ),
        ),
        Section(
            "Battery and power",
            f"The {p} battery lasts up to {rng.choice((8, 10, 12, 16, 24))} hours of continuous "
            f"use and recharges fully in {rng.choice((60, 90, 120, 180))} minutes over USB-C. A "
            f"spare battery costs {rng.randint(low, high)} {cur}.",
            (
                Fact(
                    (f"{p} battery life in hours",),
                    (
                        f"How long does {p} run on a single charge?",
                        f"Will {p} last a full shift without plugging in?",
                    ),
                ),
                Fact(
                    (f"How long does {p} take to recharge?",),
                    (f"How quickly does {p} get back to full power?",),
                ),
            ),
        ),
        Section(
            "Shipping and delivery",
            f"{p} ships from our warehouse in {rng.choice(WAREHOUSES)} to {_join(countries)}. "
            f"Standard delivery takes {rng.choice(('2-4', '3-5', '5-8', '7-10'))} business days; "
            f"express delivery is available for {rng.randint(low, high)} {cur}. Shipping is free "
            f"on orders over {rng.randint(low * 10, high * 10)} {cur}.",
            (
                Fact(
                    (f"Does {p} ship to {countries[0]}?",),
                    (
                        f"Can I get {p} delivered in {countries[1]}?",
                        f"Can you send {p} to an address in {countries[2]}?",
                    ),
                ),
                Fact(
                    (f"{p} standard delivery time",),
                    (f"How many days until {p} arrives after I order it?",),
                ),
                Fact(
                    (f"Free shipping threshold for {p}",),
                    (f"How much do I need to spend so you don't charge for sending {p}?",),
                ),
            ),
        ),
        Section(
            "Returns",
            f"Unused {p} units can be returned within {rng.choice((14, 30, 45, 60))} days of "
            f"delivery for a full refund. Opened units carry a {rng.choice((10, 15, 20))}% "
            f"restocking fee. Return labels are free in {rng.choice(COUNTRIES)}.",
            (
                Fact(
                    (f"What is the return window for {p}?",),
                    (f"Can I send {p} back if it doesn't suit us?",),
                ),
                Fact(
                    (f"{p} restocking fee",),
                    (f"Do you deduct anything if we give back an opened {p}?",),
                ),
            ),
        ),
        Section(
            "Warranty",
            f"{p} comes with a {rng.choice((1, 2, 3))}-year limited warranty covering "
            f"manufacturing defects. An extended plan adds "
            f"{rng.choice(('one more year', 'two more years'))} and accidental damage for "
            f"{rng.randint(low, high * 2)} {cur}. Faulty units are replaced within "
            f"{rng.choice((2, 3, 5))} business days.",
            (
                Fact(
                    (f"How long is the {p} warranty?",),
                    (
                        f"What if {p} breaks after a year, is it covered?",
                        f"For how long do you guarantee {p} against defects?",
                    ),
                ),
                Fact(
                    (f"{p} extended warranty price",),
                    (f"Can I buy extra protection for {p} against accidents?",),
                ),
            ),
        ),
        Section(
            "Compatibility",
            f"{p} works with {_join(systems)}, and with the {pos[0]} and {pos[1]} point-of-sale "
            f"systems. Drivers and an SDK are provided for developers.",
            (
                Fact(
                    (f"Is {p} compatible with {systems[0]}?",),
                    (f"Will {p} work on our {systems[1]} machines?",),
                ),
                Fact(
                    (f"Does {p} work with {pos[0]} point-of-sale?",),
                    (f"Can we use {p} with our {pos[1]} till?",),
                ),
            ),
        ),
        Section(
            "Installation",
            f"Most customers set up {p} in about {rng.choice((10, 15, 20, 30))} minutes without "
            f"tools. Professional installation is available in {rng.choice(COUNTRIES)} for "
            f"{rng.randint(low, high * 3)} {cur} per site, including mounting and testing.",
            (
                Fact(
                    (f"{p} professional installation cost",),
                    (f"Can a technician come and set up {p} for us, and what does it cost?",),
                ),
                Fact(
                    (f"How long does {p} setup take?",),
                    (f"How much time should we plan to get {p} running?",),
                ),
            ),
        ),
        Section(
            "Bulk orders",
            f"For orders above {rng.choice((100, 200, 500))} units of {p}, a dedicated account "
            f"manager handles delivery scheduling and device enrolment. Lead time for large "
            f"orders is {rng.choice((2, 3, 4, 6))} weeks. Custom branding is possible from "
            f"{rng.choice((250, 500, 1000))} units.",
            (
                Fact(
                    (f"{p} lead time for large orders",),
                    (f"How many weeks will it take to get hundreds of {p}?",),
                ),
                Fact(
                    (f"Can {p} be custom branded?",),
                    (f"Could we get {p} with our own logo on it?",),
                ),
            ),
        ),
    ]


def _policy_sections(rng: random.Random, brand: str) -> list[Section]:
    methods = rng.sample(PAYMENT_METHODS, 3)
    cur = rng.choice(list(CURRENCIES))
    net = rng.choice((15, 30, 45, 60))
    city = rng.choice(CITIES)
    tax = rng.choice(list(TAXES))
    b = brand
    return [
        Section(
            "Payment methods",
            f"{b} accepts {_join(methods)}. Invoices are issued in "
            f"{_join(rng.sample(list(CURRENCIES), 2))}. Customers with a purchase above "
            f"{rng.choice((5_000, 10_000, 50_000)):,} {cur} can pay by purchase order on net "
            f"{net} terms.",
            (
                Fact(
                    (f"What payment methods does {b} accept?",),
                    (f"Can I pay {b} with {methods[1]}?", f"Which ways can we settle a {b} bill?"),
                ),
                Fact(
                    (f"Does {b} offer net {net} payment terms?",),
                    (f"Can we pay {b} a month after receiving the bill?",),
                ),
            ),
        ),
        Section(
            "Partner program",
            f"The {b} partner program pays resellers a {rng.choice((10, 15, 20, 25))}% commission "
            f"on first-year revenue and {rng.choice((5, 8, 10))}% on renewals. Partners get a demo "
            f"licence, co-marketing funds and a partner manager after {rng.choice((3, 5, 10))} "
            f"closed deals.",
            (
                Fact(
                    (f"{b} reseller commission",),
                    (
                        f"How much do we earn by selling {b} products to our clients?",
                        f"What's in it for agencies that sell {b}?",
                    ),
                ),
            ),
        ),
        Section(
            "Discounts for education and nonprofits",
            f"Registered nonprofits and schools get {rng.choice((20, 30, 40, 50))}% off every {b} "
            f"product. Startups younger than {rng.choice((2, 3, 5))} years qualify for a "
            f"{rng.choice((10, 15, 25))}% discount in their first year.",
            (
                Fact(
                    (f"Does {b} have a nonprofit discount?",),
                    (f"We're a charity; is {b} cheaper for us?",),
                ),
                Fact(
                    (f"{b} startup discount",),
                    (f"Is there special pricing for young companies buying from {b}?",),
                ),
            ),
        ),
        Section(
            "Contact and office hours",
            f"{b} is headquartered in {city}. The sales team answers {rng.choice(SUPPORT_HOURS)}, "
            f"at sales@{b.lower()}.example or +{rng.randint(10, 99)} {rng.randint(100, 999)} "
            f"{rng.randint(1000, 9999)}. Visitors are welcome at the {city} office by "
            f"appointment.",
            (
                Fact(
                    (f"Where is {b} headquartered?",),
                    (f"In which city is {b} based?", f"Where are the main offices of {b}?"),
                ),
                Fact(
                    (f"{b} sales team hours",),
                    (f"When can I talk to someone at {b} about buying?",),
                ),
            ),
        ),
        Section(
            "Taxes and invoices",
            f"Prices on {b} quotes exclude {tax}. Business customers with a valid {TAXES[tax]} "
            f"are invoiced without it where the law allows. Invoices are sent by email on the "
            f"first day of each billing period.",
            (
                Fact(
                    (f"Do {b} prices include {tax}?",),
                    (f"Will {b} add tax on top of the quoted amount?",),
                ),
            ),
        ),
    ]


# --- questions with typing mistakes and other word forms --------------------------------------

INFLECTIONS = {
    "cost": "costs", "costs": "cost", "price": "prices", "integrate": "integrates",
    "integration": "integrations", "ship": "shipping", "delivery": "delivered",
    "refund": "refunds", "warranty": "warranties", "discount": "discounts", "hours": "hour",
    "month": "monthly", "annual": "annually", "seat": "seats", "certifications": "certified",
    "languages": "language", "requests": "request", "battery": "batteries",
    "manage": "managing", "include": "included", "includes": "including", "keep": "keeping",
    "hosted": "hosting", "encrypt": "encryption", "cancel": "cancelling", "accept": "accepts",
    "compatible": "compatibility", "work": "working", "take": "takes", "minimum": "minimal",
    "headquartered": "headquarters", "payment": "payments", "support": "supports",
    "contain": "contains", "come": "comes", "recharge": "recharging", "branded": "branding",
    "orders": "ordering", "units": "unit", "training": "trainings", "need": "needs",
    "backups": "backup", "commission": "commissions", "days": "day", "evaluate": "evaluating",
    "pay": "paying", "guarantee": "guaranteed", "sell": "selling", "stores": "storing",
}  # fmt: skip
NEIGHBOURS = {
    "a": "s", "b": "v", "c": "x", "d": "s", "e": "r", "f": "g", "g": "h", "h": "j", "i": "o",
    "j": "k", "k": "l", "l": "k", "m": "n", "n": "m", "o": "p", "p": "o", "r": "t", "s": "d",
    "t": "r", "u": "y", "v": "b", "w": "e", "x": "z", "y": "u", "z": "x",
}  # fmt: skip


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)  # never the first letter: people rarely miss it
    kind = rng.choice(("drop", "double", "swap", "neighbour"))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    near = NEIGHBOURS.get(word[i].lower(), word[i])
    return word[:i] + near + word[i + 1 :]


def misspell(rng: random.Random, question: str) -> str:
    """One other word form where the question has one, and one or two typing mistakes."""
    tokens = re.split(r"(\W+)", question)
    words = [i for i, t in enumerate(tokens) if t and t[0].isalpha()]
    inflectable = [i for i in words if tokens[i].lower() in INFLECTIONS]
    changed: set[int] = set()
    if inflectable and rng.random() < 0.7:
        i = rng.choice(inflectable)
        tokens[i] = INFLECTIONS[tokens[i].lower()]
        changed.add(i)
    typeable = [i for i in words if len(tokens[i]) >= 5 and i not in changed]
    mistakes = 1 if changed else rng.choice((1, 2))
    for i in rng.sample(typeable, min(mistakes, len(typeable))):
        tokens[i] = _typo(rng, tokens[i])
    return "".join(tokens)


# --- the corpus --------------------------------------------------------------------------------


def _brand_names(rng: random.Random) -> list[str]:
    names = [stem.lower().capitalize() + end for stem in BRAND_STEMS for end in BRAND_ENDINGS]
    rng.shuffle(names)
    return names


def generate(passages: int, queries: int, seed: int = 6) -> Corpus:
    """About `passages` passages (exactly, unless it is tiny) and `queries` questions."""
    rng = random.Random(seed)
    corpus = Corpus()
    brands = iter(_brand_names(rng))
    lines = [(line, "software") for line in SOFTWARE] + [(line, "device") for line in DEVICES]
    while corpus.passage_count < passages:
        brand = next(brands)
        documents = [Document(f"{brand} company policies", tuple(_policy_sections(rng, brand)))]
        products = rng.sample(
            [(line, kind, edition) for line, kind in lines for edition in EDITIONS],
            rng.randint(8, 20),
        )
        for line, kind, edition in products:
            name = f"{brand} {line} {edition}"
            make: Callable[[random.Random, str, str], list[Section]] = (
                _software_sections if kind == "software" else _device_sections
            )
            sections = make(rng, name, line)
            # Not every product page has every topic.
            for _ in range(rng.choice((0, 0, 1, 2))):
                sections.pop(rng.randrange(2, len(sections)))
            documents.append(Document(name, tuple(sections)))
        documents = [
            Document(
                d.title, tuple(Section(s.name, s.text + _filler(rng), s.facts) for s in d.sections)
            )
            for d in documents
        ]
        for document in documents:
            left = passages - corpus.passage_count
            if left <= 0:
                break
            if len(document.sections) > left:
                document = Document(document.title, document.sections[:left])
            corpus.documents.append(document)

    targets = [(d, s) for d in corpus.documents for s in d.sections if s.facts]
    chosen = rng.sample(targets, min(queries, len(targets)))
    n_keyword = round(KEYWORD_SHARE * len(chosen))
    n_paraphrase = round(PARAPHRASE_SHARE * len(chosen))
    kinds = ["keyword"] * n_keyword + ["paraphrase"] * n_paraphrase
    kinds += ["typo"] * (len(chosen) - len(kinds))
    rng.shuffle(kinds)
    for (document, section), kind in zip(chosen, kinds, strict=True):
        fact = rng.choice(section.facts)
        if kind == "keyword":
            text = rng.choice(fact.keyword)
        elif kind == "paraphrase":
            text = rng.choice(fact.paraphrase)
        else:
            text = misspell(rng, rng.choice(fact.keyword + fact.paraphrase))
        corpus.queries.append(Query(text, kind, frozenset({document.key(section)})))
    return corpus
