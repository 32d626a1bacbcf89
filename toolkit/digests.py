"""Per-table row counts and order-independent content digests, computed inside PostgreSQL.

Each row is hashed as its text form (PostgreSQL's 64-bit ``hashtextextended``, twice as fast as md5 on
the same rows) and the hashes are summed as a numeric: the digest does not depend on row order or
physical layout, needs no sort and holds nothing in memory but a number. It detects copy errors, not an
adversary; both sides must run on machines of the same byte order (a mismatch then fails safe, exit 4).
Two databases with the same rows give the same (rows, digest) for every table. Sequences are compared
by their last value.

The SQL runs through any query function (psycopg locally, psql over SSH on a host): one round trip to
list the tables and one for all their digests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

from .contract import TableDigest

USER_TABLES = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
"""

TABLES_SQL = f"SELECT n.nspname, c.relname {USER_TABLES} ORDER BY 1, 2"  # noqa: S608 - constant text

TABLE_SIZES_SQL = f"SELECT n.nspname, c.relname, pg_table_size(c.oid) {USER_TABLES} ORDER BY 3 DESC, 1, 2"  # noqa: S608

SEQUENCES_SQL = """
SELECT schemaname, sequencename, coalesce(last_value, 0) FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""

Query = Callable[[str], list[Sequence]]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def shown_name(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def digest_sql(tables: list[tuple[str, str]]) -> str:
    parts = []
    for schema, table in tables:
        parts.append(
            f"SELECT {quote_literal(shown_name(schema, table))}, count(*), "  # noqa: S608 - quoted identifiers
            "coalesce(sum(hashtextextended(t::text, 0)), 0)::text "
            f"FROM ONLY {quote_ident(schema)}.{quote_ident(table)} AS t")
    return "\nUNION ALL\n".join(parts)


def table_digests_with(query: Query) -> dict[str, TableDigest]:
    out: dict[str, TableDigest] = {}
    tables = [(str(r[0]), str(r[1])) for r in query(TABLES_SQL)]
    if tables:
        for name, rows, digest in query(digest_sql(tables)):
            out[str(name)] = TableDigest(str(name), int(rows), str(digest))
    for schema, seq, last in query(SEQUENCES_SQL):
        name = f"sequence:{shown_name(str(schema), str(seq))}"
        out[name] = TableDigest(name, 0, str(last))
    return out


def table_digests(conn) -> dict[str, TableDigest]:
    """``conn`` is an open psycopg connection."""
    return table_digests_with(lambda sql: conn.execute(sql).fetchall())


@contextmanager
def exported_snapshot(conn):
    """On an autocommit psycopg connection: hold a read-only REPEATABLE READ transaction while the block
    runs; yield its exported snapshot id (for ``pg_dump --snapshot``) and a function computing the table
    digests in that same snapshot."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]

        def tables() -> list[tuple[str, str, int]]:
            return [(str(s), str(t), int(b)) for s, t, b in conn.execute(TABLE_SIZES_SQL).fetchall()]

        yield str(snapshot), (lambda: table_digests(conn)), tables
    finally:
        conn.execute("ROLLBACK")
