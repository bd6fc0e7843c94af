"""Connections to the control plane's database (SQLite or PostgreSQL) and its migrations.

Both backends give the store the same guarantee SQLite's `BEGIN IMMEDIATE`
gave alone: write transactions are serialised, so a claim's "is it still
deliverable?" check and its update can never interleave with another writer,
whether that writer is a thread or a second server process.

- SQLite: WAL journal, `BEGIN IMMEDIATE` for writes, plain `BEGIN` for reads.
- PostgreSQL (psycopg 3): every write transaction first takes one
  transaction-scoped advisory lock (`pg_advisory_xact_lock`), released at
  commit or rollback; reads run in REPEATABLE READ, so one request sees one
  snapshot. Several replicas on one database therefore behave like one.

The schema is owned by Alembic (`migrations/`); `migrate()` runs at start-up
under the same lock, so replicas starting together upgrade the schema once.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises writers (any constant shared by all replicas).
WRITE_LOCK = 0x6D676D74  # "mgmt"
MIGRATIONS = Path(__file__).with_name("migrations")
#: The revision whose schema equals the hand-written SQLite schema of earlier versions.
BASELINE = "0001"


def database_url(target: Path | str) -> URL:
    """A SQLAlchemy URL from a URL string or a SQLite file path.

    `postgresql://` and `postgres://` URLs get the psycopg 3 driver, so users can
    paste the URL their database service prints.
    """
    value = str(target)
    if "://" not in value:
        return URL.create("sqlite", database=str(Path(value).resolve()))
    url = make_url(re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", value))
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {url.get_backend_name()!r}: use a SQLite "
                         "file or a postgresql:// URL")
    return url


def secure_sqlite_file(path: Path) -> None:
    """Create the SQLite file 0600 in a directory only its owner may write, before SQLite
    opens it.

    The file holds token hashes, specs and results: sqlite3 would create it (and
    its -wal/-shm/-journal files, which take the file's mode) 0644 under the
    usual umask. A missing directory is created 0700; an existing directory that
    anyone may write (where another user could swap the file or plant its -wal) is
    made not world-writable if we own it, and logged otherwise (e.g. a volume
    whose provisioner made it 0777).
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    mode = directory.stat().st_mode
    if mode & stat.S_IWOTH:
        if directory.stat().st_uid == os.getuid():
            directory.chmod(stat.S_IMODE(mode) & ~stat.S_IWOTH)
        else:
            log.warning("the database directory %s is world-writable and not ours: other users "
                        "of this host could replace the database", directory)
    for suffix in ("", "-wal", "-shm", "-journal"):
        target = path.with_name(path.name + suffix)
        if not suffix:
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                continue
            except FileExistsError:
                pass
        if target.exists() and stat.S_IMODE(target.stat().st_mode) & 0o077:
            try:
                target.chmod(0o600)  # made by an older version, or by hand
            except PermissionError:  # another user's file we may still write (group)
                log.warning("%s is readable by others and not ours to chmod 0600", target)


def open_engine(url: URL) -> Engine:
    """An engine for `url` with the transaction behaviour described above."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            secure_sqlite_file(Path(url.database))
        engine = create_engine(
            url, poolclass=NullPool,
            connect_args={"timeout": 30, "isolation_level": None, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class Record(dict[str, Any]):
    """A result row: by column name like a dict, or by position like a tuple."""

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class Result:
    """The part of a DB-API cursor the store uses, over a SQLAlchemy result."""

    def __init__(self, result: Any) -> None:
        self._result = result
        self.rowcount: int = result.rowcount

    def fetchone(self) -> Record | None:
        row = self._result.mappings().first() if self._result.returns_rows else None
        return Record(row) if row is not None else None

    def one(self) -> Record:
        """The single row of an aggregate query (COUNT, RETURNING)."""
        row = self.fetchone()
        if row is None:  # pragma: no cover - aggregates always answer one row
            raise LookupError("query returned no row")
        return row

    def fetchall(self) -> list[Record]:
        return [Record(row) for row in self._result.mappings().all()]


class Tx:
    """One transaction; `execute` takes `?` placeholders with a tuple, or `:name` with a dict."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Result:
        if not isinstance(params, Mapping):
            parts = sql.split("?")
            if len(parts) - 1 != len(params):
                raise ValueError(f"{len(parts) - 1} placeholders, {len(params)} parameters")
            sql = "".join(part + (f":p{i}" if i < len(params) else "")
                          for i, part in enumerate(parts))
            params = {f"p{i}": value for i, value in enumerate(params)}
        return Result(self.conn.execute(text(sql), dict(params)))


@contextmanager
def transaction(engine: Engine, write: bool) -> Iterator[Tx]:
    """A transaction that commits on success and rolls back on any exception."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
        elif write:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield Tx(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent, safe with concurrent starts)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
        tables = set(inspect(conn).get_table_names())
        config.attributes["connection"] = conn
        if "actions" in tables and "alembic_version" not in tables:
            # A database created before migrations existed: its schema is the baseline.
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        conn.commit()
