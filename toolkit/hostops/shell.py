"""Shell snippets over a Connection: constant scripts that receive their values as positional parameters
("$1"), never pasted in; SQL quoting for the few statements built as text."""

from __future__ import annotations

from toolkit.transport.connection import Connection


def sh(conn: Connection, script: str, *args, check: bool = True, **kw):
    """Run a constant shell snippet with its values as positional parameters ($1, $2, ...)."""
    return conn.run(["sh", "-c", script, "sh", *[str(a) for a in args]], check=check, **kw)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
