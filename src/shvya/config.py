"""One Settings object, read from the environment and `.env`, built at startup and passed down."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "shvya.db"
DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - refused in production


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_prefix="SHVYA_", extra="ignore", populate_by_name=True
    )

    env: Environment = Environment.development
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH.as_posix()}",
        validation_alias=AliasChoices("DATABASE_URL", "SHVYA_DATABASE_URL"),
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Region for phone numbers written without a country code, when the company sets none.
    default_phone_region: str = "US"
    max_body_bytes: int = 1024 * 1024
    # Failed authentications per client address per minute before answering 429.
    auth_failures_per_minute: int = 20
    # /docs and /openapi.json: on in development; off in production unless asked for.
    expose_docs: bool | None = None
    db_pool_size: int = 10
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Users paste the URLs their hosts give them; SQLAlchemy needs the psycopg 3 driver named.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
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
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings() -> Settings:
    return Settings()
