"""Engines and sessions. SQLite gets WAL and immediate write locks so that the
scheduler, several workers and the CLI can share one file without lock-upgrade errors."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from psycopg.errors import IdleInTransactionSessionTimeout
from sqlalchemy import Engine, ExceptionContext, create_engine, event, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 5
IDLE_IN_TRANSACTION_SECONDS = 5
"""PostgreSQL ends a session that sits this long inside a transaction. Atelier's
transactions are a few statements with nothing slow between them, so a session that
idles this long has a client that is gone: killed, or cut off by the network after the
server ran its UPDATE. Until the server ends it, its row locks stay, and everyone else
(the scheduler expiring that very lease, the worker taking the job over) waits on them
for as long as TCP takes to notice a dead peer: hours."""


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, read_only)
    # A database that cannot be reached is an error within seconds (not a hang), so the
    # processes waiting out an outage keep their own pace.
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(
        url, pool_pre_ping=True, pool_size=4, max_overflow=4, connect_args=connect_args
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A SET, not libpq's `options`, so that options in the user's URL still apply.
        timeout_ms = IDLE_IN_TRANSACTION_SECONDS * 1000
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")
        dbapi_connection.commit()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> OperationalError | None:
        # The server ended a session that stalled inside a transaction: to its caller
        # that is a lost connection (wait it out, reconnect), not a bug in its SQL.
        if not isinstance(context.original_exception, IdleInTransactionSessionTimeout):
            return None
        context.is_disconnect = True
        return OperationalError(
            context.statement, context.parameters, context.original_exception,
            connection_invalidated=True,
        )  # fmt: skip

    return engine


def _sqlite_engine(url: str, read_only: bool = False) -> Engine:
    database = url.split("///", 1)[-1]
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide when a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that later writes
        # can fail at once with "database is locked" instead of waiting for the busy
        # timeout. Readers never block writers (WAL), so they begin deferred.
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


@cache
def _engine_for(url: str, pid: int, read_only: bool) -> Engine:
    return make_engine(url, read_only=read_only)


def engine_for(url: str, *, read_only: bool = False) -> Engine:
    """One engine per URL and process: pooled connections must not cross a fork."""
    return _engine_for(url, os.getpid(), read_only)


def session_factory(url: str) -> sessionmaker[Session]:
    """Sessions that write (or read and then write)."""
    return sessionmaker(engine_for(url), expire_on_commit=False)


def reader_factory(url: str) -> sessionmaker[Session]:
    """Sessions that only read: on SQLite they do not take the write lock."""
    return sessionmaker(engine_for(url, read_only=True), expire_on_commit=False)


UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
"""What a database that is down, unreachable, locked or out of disk space raises."""


def where(url: str) -> str:
    """Where a database is, for messages: host:port, or an SQLite file's path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
