"""Per-table row counts and order-independent content digests, computed inside PostgreSQL.

Each row is hashed to 64 bits and the hashes are summed as a numeric: the digest does not depend on row
order or physical layout, needs no sort and holds nothing in memory but a number. It detects copy errors,
not an adversary; both sides must run on machines of the same byte order (a mismatch then fails safe,
exit 4). Two databases with the same rows give the same (rows, digest) for every table. Sequences are
compared by their last value, as a floor: a sequence is not transactional, so a live source's advances
while a dump is read (pg_dump reads it later than the snapshot began); a copy holding a value at least the
one read when the snapshot was taken is right (ids past the rows' are what PostgreSQL itself leaves after a
crash), one holding less would hand out ids again (:func:`differing`).

Two row hashes ("methods"), named in the digest text so two digests of different methods never pass for
equal:

- ``r1`` (PostgreSQL 14 and newer; digests read ``r1:<sum>``): ``hash_record_extended`` over the row's
  columns, each hashed by its type's own hash function where that hash is exact and the same in any
  database: integers, oid, bool, bytea, uuid, date, time, timestamps (their binary value, so no time zone
  setting enters), and text, varchar and name compared byte for byte (``COLLATE "C"``). Every other type
  (numeric, floats, json/jsonb, arrays, enums, domains, ...) is hashed as its text form, so values that are
  equal but written differently (1.0 and 1.00) still differ. About twice as fast as ``text``.
- ``text`` (every version; the bare sum, as Lifeboat wrote before ``r1``): ``hashtextextended`` of the
  whole row's text form.

``auto`` takes ``r1`` where the server has it. Comparing against digests computed earlier (a backup's
manifest) or elsewhere (a migration's source) uses :func:`method_of` those digests, so an older
manifest is checked with the method that wrote it.

The SQL runs through any query function (psycopg locally, psql over SSH on a host): one round trip to
list the tables and their columns and one for all their digests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

from toolkit.contract import TableDigest

METHODS = ("auto", "r1", "text")

#: column types whose own hash is exact and the same in any database; text-like ones are hashed bytewise
EXACT_TYPES = ("int2", "int4", "int8", "oid", "bool", "bytea", "uuid", "date", "time", "timestamp",
               "timestamptz")
BYTEWISE_TYPES = ("text", "varchar", "name")

USER_TABLES_FROM = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"""

USER_TABLES_WHERE = """
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
"""

USER_TABLES = USER_TABLES_FROM + USER_TABLES_WHERE


def _regtypes(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{name}'::regtype" for name in names)


#: every user table with its columns in order (a table without columns: one row with a NULL column),
#: how each column is hashed under r1, and the server's version number
COLUMNS_SQL = (
    "SELECT n.nspname, c.relname, a.attname, "
    f"CASE WHEN a.atttypid IN ({_regtypes(BYTEWISE_TYPES)}) THEN 'bytes' "
    f"WHEN a.atttypid IN ({_regtypes(EXACT_TYPES)}) THEN 'exact' ELSE 'text' END, "
    "current_setting('server_version_num')::int"
    + USER_TABLES_FROM
    + "\nLEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    + USER_TABLES_WHERE
    + "ORDER BY 1, 2, a.attnum"
)

TABLE_SIZES_SQL = f"SELECT n.nspname, c.relname, pg_table_size(c.oid) {USER_TABLES} ORDER BY 3 DESC, 1, 2"  # noqa: S608

SEQUENCES_SQL = """
SELECT schemaname, sequencename, coalesce(last_value, 0) FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""

Query = Callable[[str], list[Sequence]]
#: (schema, table, [(column, how)]) with how one of "bytes", "exact", "text"
Table = tuple[str, str, list[tuple[str, str]]]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def shown_name(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def method_of(digests: dict) -> str:
    """The method that computed ``digests`` (TableDigest values, or [rows, digest] pairs of a manifest):
    ``r1`` only if every table's digest says so."""
    values = [d.digest if isinstance(d, TableDigest) else str(d[1])
              for name, d in digests.items() if not name.startswith("sequence:")]
    return "r1" if values and all(v.startswith("r1:") for v in values) else "text"


def _row_hash(table: Table, method: str) -> str:
    _, _, columns = table
    if method == "text" or not columns:
        return "hashtextextended(t::text, 0)"
    parts = []
    for column, how in columns:
        ref = f"t.{quote_ident(column)}"
        parts.append(ref + ' COLLATE "C"' if how == "bytes" else ref if how == "exact" else f"{ref}::text")
    return f"hash_record_extended(ROW({', '.join(parts)}), 0)"


def digest_sql(tables: list[Table], method: str) -> str:
    prefix = "'r1:' || " if method == "r1" else ""
    parts = []
    for table in tables:
        schema, name, _ = table
        parts.append(
            f"SELECT {quote_literal(shown_name(schema, name))}, count(*), "  # noqa: S608 - quoted identifiers
            f"{prefix}coalesce(sum({_row_hash(table, method)}), 0)::text "
            f"FROM ONLY {quote_ident(schema)}.{quote_ident(name)} AS t")
    return "\nUNION ALL\n".join(parts)


def table_digests_with(query: Query, method: str = "auto") -> dict[str, TableDigest]:
    """Digests of every user table and sequence, by ``method`` (see the module's text)."""
    if method not in METHODS:
        raise ValueError(f"not a digest method: {method!r}")
    out: dict[str, TableDigest] = {}
    tables: dict[tuple[str, str], list[tuple[str, str]]] = {}
    listing = query(COLUMNS_SQL)
    for schema, table, column, how, _ in listing:
        columns = tables.setdefault((str(schema), str(table)), [])
        if column:  # NULL (psql: empty) for a table without columns; no column name is empty
            columns.append((str(column), str(how)))
    if method == "auto":  # no tables: no row hash to choose
        method = "r1" if listing and int(listing[0][4]) >= 140000 else "text"
    if tables:
        listed = [(schema, table, columns) for (schema, table), columns in tables.items()]
        for name, rows, digest in query(digest_sql(listed, method)):
            out[str(name)] = TableDigest(str(name), int(rows), str(digest))
    for schema, seq, last in query(SEQUENCES_SQL):
        name = f"sequence:{shown_name(str(schema), str(seq))}"
        out[name] = TableDigest(name, 0, str(last))
    return out


def differing(before: dict, after: dict) -> list[str]:
    """The tables and sequences whose copy ``after`` does not match ``before`` (TableDigest values, or a
    manifest's [rows, digest] pairs): a table by (rows, digest); a sequence when the copy's value is lower."""
    def pair(value):
        return (value.rows, value.digest) if isinstance(value, TableDigest) else tuple(value) if value else None

    out = []
    for name in sorted(set(before) | set(after)):
        was, now = pair(before.get(name)), pair(after.get(name))
        if name.startswith("sequence:") and was is not None and now is not None:
            try:
                if int(now[1]) >= int(was[1]):
                    continue
            except ValueError:
                pass
        if was != now:
            out.append(name)
    return out


def table_digests(conn, method: str = "auto") -> dict[str, TableDigest]:
    """``conn`` is an open psycopg connection."""
    return table_digests_with(lambda sql: conn.execute(sql).fetchall(), method)


@contextmanager
def exported_snapshot(conn):
    """On an autocommit psycopg connection: hold a read-only REPEATABLE READ transaction while the block
    runs; yield its exported snapshot id (for ``pg_dump --snapshot``), a function computing the table
    digests in that same snapshot (``method`` as :func:`table_digests_with`) and one listing the tables."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        # sequences are not in the snapshot: read now, before any dump does, they are the floor a copy's
        # values must reach (differing)
        floors = {f"sequence:{shown_name(str(schema), str(seq))}": str(last)
                  for schema, seq, last in conn.execute(SEQUENCES_SQL).fetchall()}

        def tables() -> list[tuple[str, str, int]]:
            return [(str(s), str(t), int(b)) for s, t, b in conn.execute(TABLE_SIZES_SQL).fetchall()]

        def digests(method: str = "auto") -> dict[str, TableDigest]:
            out = table_digests(conn, method)
            for name, last in floors.items():
                if name in out:
                    out[name] = TableDigest(name, 0, last)
            return out

        yield str(snapshot), digests, tables
    finally:
        conn.execute("ROLLBACK")
