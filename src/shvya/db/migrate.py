"""Run Alembic from inside the package, so `shvya migrate` works wherever SHVYA is installed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "shvya.db:migrations")
    config.set_main_option("file_template", FILE_TEMPLATE)
    # Passed as an attribute, not an option: ConfigParser would choke on "%" in passwords.
    config.attributes["database_url"] = database_url
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


# Search structures made by raw SQL in the migrations, which the models do not describe:
# SQLite's FTS5 table (and its shadow tables), PostgreSQL's generated tsvector and pgvector's
# column and indexes. Autogenerate and the schema test leave them alone.
SEARCH_OBJECTS_PREFIX = "ai_kb_passages_fts"
SEARCH_COLUMNS = frozenset({"tsv", "embedding_vec"})


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    if type_ == "table" and name and name.startswith(SEARCH_OBJECTS_PREFIX):
        return False
    if type_ == "column" and reflected and name in SEARCH_COLUMNS:
        return False
    return not (
        type_ == "index"
        and reflected
        and name is not None
        and (name == "ix_ai_kb_passages_tsv" or name.startswith("ix_ai_kb_passages_vec_"))
    )
