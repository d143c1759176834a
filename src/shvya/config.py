"""One Settings object, read from the environment and `.env`, built at startup and passed down."""

from __future__ import annotations

import functools
import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "shvya.db"
DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - refused in production


class Environment(StrEnum):
    development = "development"
    production = "production"


class JobEngineName(StrEnum):
    embedded = "embedded"
    celery = "celery"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.1, 10.1.0.0/16, ::1` as networks (an address is a network of one)."""
    networks: list[IPNetwork] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def _env_var(name: str, *, default: Any = None, **constraints: Any) -> Any:
    """A setting read from `name`, the variable its own tools know it by (DATABASE_URL,
    OPENAI_API_KEY...), or from SHVYA_`name`."""
    return Field(
        default=default, validation_alias=AliasChoices(name, f"SHVYA_{name}"), **constraints
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_prefix="SHVYA_",
        extra="ignore",
        populate_by_name=True,
        # A validation error would otherwise repeat the input (database password, keys) into
        # whatever prints the traceback.
        hide_input_in_errors=True,
    )

    env: Environment = Environment.development
    database_url: str = _env_var(
        "DATABASE_URL", default=f"sqlite:///{DEFAULT_SQLITE_PATH.as_posix()}"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Region for phone numbers written without a country code, when the company sets none.
    default_phone_region: str = "US"
    max_body_bytes: int = 1024 * 1024
    # Failed authentications per client address and key prefix per minute before a wrong key
    # is answered 429 (a correct key always works).
    auth_failures_per_minute: int = 20
    # Reverse proxies (comma-separated IPs or CIDRs) whose X-Forwarded-For names the client;
    # from any other peer the header is ignored (shvya.deps.client_address).
    trusted_proxies: str = ""
    # /docs and /openapi.json: on in development; off in production unless asked for.
    expose_docs: bool | None = None
    # PostgreSQL connections each process may hold, all kept open once made: a request finds
    # one free or waits for one. (A pool that opens "overflow" connections beyond its size and
    # closes them again churned under load: a new PostgreSQL backend costs more than most
    # requests; bench/RESULTS.md, ingest.) Mind the server's max_connections: 100 by default.
    db_pool_size: int = 20
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # --- WhatsApp Cloud API (Meta): one app for the installation ---
    meta_app_secret: SecretStr | None = _env_var("META_APP_SECRET")
    meta_verify_token: SecretStr | None = _env_var("META_VERIFY_TOKEN")
    # The default company's number, connected at `shvya serve` when both are set.
    meta_whatsapp_token: SecretStr | None = _env_var("META_WHATSAPP_TOKEN")
    meta_phone_number_id: str | None = _env_var("META_PHONE_NUMBER_ID")
    meta_waba_id: str | None = _env_var("META_WABA_ID")
    meta_graph_base_url: str = _env_var("META_GRAPH_BASE_URL", default="https://graph.facebook.com")
    meta_graph_version: str = _env_var(
        "META_GRAPH_VERSION", default="v25.0", pattern=r"^v[0-9]+\.[0-9]+$"
    )
    # The browser chat at / (the sandbox channel): on in development; in production only for
    # companies that turn it on.
    sandbox_page: bool | None = None
    # The company it chats with (an id, a slug, or a name only one company has); unset: the
    # installation's default company.
    sandbox_company: str | None = None
    # Sandbox messages per client address per minute (each can start an AI reply).
    sandbox_messages_per_minute: int = Field(default=30, ge=1)

    # --- links and email (docs/email.md) ---
    # The base of every link SHVYA puts in a message (unsubscribe, media): the address leads'
    # mail programs and phones reach this installation at.
    public_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://[^\s/]+.*$")
    # The default company's mailbox, connected at `shvya serve` when SMTP_HOST and
    # SMTP_FROM_EMAIL are set (other companies connect theirs with POST /channels/email).
    smtp_host: str | None = _env_var("SMTP_HOST")
    smtp_port: int | None = _env_var("SMTP_PORT", default=None, ge=1, le=65535)
    smtp_user: str | None = _env_var("SMTP_USER")
    smtp_pass: SecretStr | None = _env_var("SMTP_PASS")
    smtp_from_email: str | None = _env_var("SMTP_FROM_EMAIL")
    # starttls (port 587 by default), tls (implicit TLS, port 465) or none (port 25).
    smtp_security: Literal["starttls", "tls", "none"] = _env_var(
        "SMTP_SECURITY", default="starttls"
    )

    # --- AI providers and the knowledge base ---
    openai_api_key: SecretStr | None = _env_var("OPENAI_API_KEY")
    openai_base_url: str | None = _env_var("OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = _env_var("ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = _env_var("ANTHROPIC_BASE_URL")
    ai_timeout_seconds: float = Field(default=30.0, gt=0)
    # auto: WordLlama when installed (the default), else MiniLM, else full-text search alone.
    embeddings: Literal["auto", "wordllama", "minilm", "openai", "none"] = "auto"
    openai_embedding_model: str = "text-embedding-3-small"
    # Knowledge-base uploads (larger than the API's 1 MiB body limit) and the size above
    # which a document is ingested by a job instead of inside the request.
    max_upload_bytes: int = 20 * 1024 * 1024
    kb_inline_ingest_bytes: int = 256 * 1024

    # --- the job queue ---
    job_engine: JobEngineName = JobEngineName.embedded
    # `shvya serve` runs the embedded worker threads itself unless this is off (then run
    # `shvya worker` beside it).
    serve_worker: bool = True
    # Worker threads that take any job (P1 first), and threads that take only P1 jobs, so a
    # flood of bulk work never delays a reply to a live lead.
    worker_threads: int = Field(default=2, ge=0, le=64)
    worker_p1_threads: int = Field(default=1, ge=1, le=64)
    job_claim_batch: int = Field(default=1, ge=1, le=100)
    job_lease_seconds: float = Field(default=60.0, ge=1.0)
    # How often an idle worker looks for due jobs without being woken (retries, run_at).
    job_poll_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0.0)
    # How often the scheduler (inside `shvya serve` with the embedded engine, or `shvya
    # scheduler`) turns due bump-ups into jobs (docs/scheduler.md).
    scheduler_interval_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    celery_broker_url: str | None = _env_var("CELERY_BROKER_URL")
    # Broker queues are <prefix>.p1 and <prefix>.p2: installations sharing a broker pick
    # their own prefix.
    celery_queue_prefix: str = Field(default="shvya", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # "module:function" returning the job handlers by type (tests and benchmarks use their own).
    job_handlers: str = "shvya.handlers:default_handlers"
    # The relay republishes a queued job this long after handing it to a broker whose queue
    # has since gone empty (the broker lost it).
    relay_republish_after_seconds: float = Field(default=30.0, ge=1.0)

    # Issue 15 part F (sending domains): the DNS server `shvya email check-domain` asks, as
    # "host:port" (port 53 when left out); unset, the system's resolvers.
    dns_nameserver: str | None = Field(default=None, pattern=r"^[^\s:]+(:\d{1,5})?$")
    dns_timeout_seconds: float = Field(default=5.0, gt=0.0, le=60.0)
    # --- Issue 15, part B: Amazon SES and SendGrid transports (docs/email-providers.md) ---
    # Where boto3's SESv2 client sends (tests point it at a local fake); None: AWS itself.
    ses_endpoint_url: str | None = None
    # Connect and read timeout of every email provider call (SES, SendGrid).
    email_timeout_seconds: float = Field(default=30.0, gt=0.0, le=300.0)
    sendgrid_base_url: str = "https://api.sendgrid.com"
    # --- SMS over Twilio (issue 15 part D, docs/sms.md) ---
    # Twilio's REST API base: tests point it at their fake on 127.0.0.1.
    twilio_base_url: str = _env_var(
        "TWILIO_BASE_URL", default="https://api.twilio.com", pattern=r"^https?://[^\s/]+.*$"
    )
    # Email in (issue 15, part E; docs/email-inbound.md). SendGrid Inbound Parse signs nothing:
    # the token in POST /webhooks/email/inbound/{token} is the secret. Unset: the route refuses.
    email_inbound_token: SecretStr | None = None
    # The largest inbound email delivery (Inbound Parse posts up to 30 MB with attachments).
    max_inbound_email_bytes: int = Field(default=30 * 1024 * 1024, ge=1024)
    # --- part C: bounces, complaints and sending-domain reputation (docs/email-feedback.md) ---
    # SigningCertURL and SubscribeURL of an SNS delivery must match this (Amazon's SNS hosts);
    # tests point it at their own server on 127.0.0.1.
    sns_cert_url_pattern: str = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
    # A SendGrid event delivery whose signed timestamp is older (or further ahead) is refused.
    sendgrid_webhook_max_age_seconds: int = Field(default=600, ge=1)
    # The rolling window rates are taken over, and the sends a domain needs in it before its
    # rates count (a few events on a handful of sends say nothing about a domain).
    email_reputation_window_days: int = Field(default=30, ge=1, le=365)
    email_reputation_min_sends: int = Field(default=100, ge=1)
    # --- signed outbound webhooks (issue 16, docs/webhooks.md) ---
    # Lets webhook URLs reach loopback, private, link-local and reserved addresses, and (outside
    # production) use http: for tests and a receiver on one's own network. Cloud metadata
    # addresses stay refused.
    webhook_allow_private: bool = False
    # Connect, write and read timeout of one delivery's POST.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0, le=60.0)
    # Deliveries in a row that end failed (every attempt spent) before the subscription is
    # disabled with a WebhookSubscriptionDisabled event.
    webhook_disable_after_failures: int = Field(default=20, ge=1, le=10_000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Users paste the URLs their hosts give them; SQLAlchemy needs the psycopg 3 driver named.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> Settings:
        if self.env is Environment.production and (
            self.secret_key.get_secret_value() == DEV_SECRET_KEY
            or len(self.secret_key.get_secret_value()) < 32
        ):
            raise ValueError(
                "SHVYA_SECRET_KEY must be set to a random value of at least 32 characters "
                "when SHVYA_ENV=production (it encrypts channel tokens)"
            )
        return self

    @property
    def docs_enabled(self) -> bool:
        if self.expose_docs is not None:
            return self.expose_docs
        return self.env is Environment.development

    @property
    def sandbox_enabled(self) -> bool:
        if self.sandbox_page is not None:
            return self.sandbox_page
        return self.env is Environment.development

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings() -> Settings:
    return Settings()
