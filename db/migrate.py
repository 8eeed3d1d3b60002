"""Alembic migrations, driven from code so no alembic.ini has to be found on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from db.engine import engine_for

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0004"
"""The newest revision in migrations/versions (a test keeps the two in step)."""


class SchemaOutdated(RuntimeError):
    """The database's schema is not the one this version of Atelier needs."""


def _config(url: str) -> Config:  # alembic is imported lazily: it is slow to load
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    from alembic import command

    command.upgrade(_config(url), "head")


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_current(url: str) -> None:
    """Migrate the embedded SQLite database on first use; ask for `atelier db upgrade`
    elsewhere, where migrating is an operator's decision."""
    revision = current_revision(url)
    if revision == HEAD_REVISION:
        return
    if url.startswith("sqlite"):
        upgrade(url)
        return
    raise SchemaOutdated(
        f"database schema is at {revision or 'nothing'}, expected {HEAD_REVISION}: "
        "run `atelier db upgrade`"
    )
