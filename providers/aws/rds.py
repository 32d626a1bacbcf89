"""RDS PostgreSQL, reached through an SSH tunnel via an instance (it is private)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.common.pgremote import PostgresAt
from toolkit.contract import SecretValue
from toolkit.errors import ProviderError

if TYPE_CHECKING:
    from providers.aws.provider import AwsProvider

RDS_ADMIN = "lifeboat_admin"


class RdsDatabase(PostgresAt):
    """The stack's database on RDS, reached through an SSH tunnel via an instance (``tunnel_via``)."""

    def __init__(self, provider: AwsProvider):
        self.p = provider
        self.label = provider.label

    def _pg(self):
        if self.p.stack.postgres is None:
            raise ProviderError(f"the stack {self.p.stack.name} has no postgres: section.")
        return self.p.stack.postgres

    @property
    def version(self) -> int:
        return self._pg().version

    @property
    def database(self) -> str:
        return self._pg().database

    def endpoint(self) -> tuple[str, int]:
        """(host, port) on this machine that reaches the database: RDS itself, or the local end of a tunnel
        via ``tunnel_via`` that stays open while this provider object lives."""
        return self.p.database_endpoint()

    def where(self) -> str:
        return "{}:{}".format(*self.p.rds_address())

    def login(self, admin: bool = False) -> tuple[str, SecretValue]:
        return (RDS_ADMIN, self.p.internal_secret("rds_admin")) if admin else \
            (self._pg().user, self.p.internal_secret("pg_app"))
