"""Per-table row counts and order-independent content digests, computed inside PostgreSQL.

Each row is hashed as its text form (md5, first 60 bits) and the hashes are summed: the digest does
not depend on row order or physical layout, needs no sort and holds nothing in memory but a number.
Two databases with the same rows give the same (rows, digest) for every table.
"""

from __future__ import annotations

from .contract import TableDigest

TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""

SEQUENCES_SQL = """
SELECT schemaname, sequencename, coalesce(last_value, 0) FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""


def table_digests(conn) -> dict[str, TableDigest]:
    """``conn`` is an open psycopg connection."""
    from psycopg import sql

    out: dict[str, TableDigest] = {}
    with conn.cursor() as cur:
        cur.execute(TABLES_SQL)
        tables = cur.fetchall()
        for schema, table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text "
                "FROM ONLY {}.{} AS t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
            cur.execute(query)
            rows, digest = cur.fetchone()
            name = table if schema == "public" else f"{schema}.{table}"
            out[name] = TableDigest(name, int(rows), digest)
        cur.execute(SEQUENCES_SQL)
        for schema, seq, last in cur.fetchall():
            name = seq if schema == "public" else f"{schema}.{seq}"
            out[f"sequence:{name}"] = TableDigest(f"sequence:{name}", 0, str(last))
    return out
