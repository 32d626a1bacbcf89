"""Redis as the workflows carry it: every database in use (an app may keep its task queue in db 1 and its
cache in db 0), each key with its value (DUMP) and time to live."""

from __future__ import annotations


def databases(url: str) -> list[int]:
    """The numbers of the databases that hold keys on the server at ``url`` (its INFO keyspace)."""
    import redis

    info = redis.Redis.from_url(url, socket_timeout=30).info("keyspace")
    return sorted(int(name[2:]) for name in info if name.startswith("db") and name[2:].isdigit())


def client(url: str, db: int):
    """A client of database ``db`` on the server at ``url`` (whatever database the URL names: redis-py
    takes the URL's path over a ``db=`` argument, so the path is what changes)."""
    from urllib.parse import urlsplit, urlunsplit

    import redis

    parts = urlsplit(url)
    return redis.Redis.from_url(urlunsplit((parts.scheme, parts.netloc, f"/{int(db)}", parts.query, "")),
                                socket_timeout=30)


def shown(per_db: dict[int, int]) -> dict[str, int]:
    """Keys per database as a report shows them: {"db0": n, "db1": m}."""
    return {f"db{db}": count for db, count in sorted(per_db.items())}
