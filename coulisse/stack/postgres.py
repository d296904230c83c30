"""PostgreSQL housekeeping for the stack: prepared template databases and per-instance copies."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import sql

from coulisse.stack.errors import StackError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg2.extensions import connection

    from coulisse.stack.settings import StackSettings


def connect_admin(settings: StackSettings) -> connection:
    """An autocommit connection to the server's ``postgres`` database."""
    host, port, user, password = settings.pg_parts()
    try:
        conn = psycopg2.connect(
            host=host, port=port, user=user, password=password, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"cannot reach PostgreSQL at {host}:{port} as {user} ({str(exc).strip()}). Start it, "
            "or fix COULISSE_STACK_DATABASE_URL, or leave that setting empty to use SQLite."
        ) from exc
    conn.autocommit = True
    return conn


def database_exists(settings: StackSettings, name: str) -> bool:
    with connect_admin(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def drop_database(settings: StackSettings, name: str) -> None:
    conn = connect_admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def create_database(settings: StackSettings, name: str, template: str | None = None) -> None:
    """Create ``name``, as a copy of ``template`` when given (a fast file-level copy)."""
    conn = connect_admin(settings)
    try:
        with conn.cursor() as cur:
            if template is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(name)
                    )
                )
            else:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (template,),
                )
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
    finally:
        conn.close()


@contextmanager
def advisory_lock(settings: StackSettings, name: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock named ``name`` for the block.

    Prepared (template) databases are shared by every checkout that uses the same server, so
    a file lock in one checkout cannot stop another from building the same template at once.
    """
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    conn = connect_admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield
    finally:
        conn.close()  # ends the session, which releases the lock
