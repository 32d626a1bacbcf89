"""A private Redis owned by Lifeboat on one host (or this machine)."""

from __future__ import annotations

import time
from pathlib import Path

from toolkit.commands import pgcommands
from toolkit.errors import ProviderError
from toolkit.hostops.shell import sh
from toolkit.transport.connection import Connection


class RedisHost:
    """A private Redis owned by Lifeboat on one host (this machine too), under ``<root>/redis`` or ``base``,
    password-protected, listening on ``listen``:``port``."""

    def __init__(self, conn: Connection, *, root: str | None = None, base: str | None = None, listen: str,
                 port: int, binary: str = "redis-server"):
        self.conn = conn
        self.base = base or f"{root}/redis"
        self.listen = listen
        self.port = port
        self.binary = binary
        beside = Path(binary).with_name("redis-cli")  # the client of the same installation, when it has one
        self.cli = str(beside) if "/" in binary and beside.exists() else "redis-cli"

    def check(self) -> str:
        result = self.conn.run([self.binary, "--version"], check=False)
        if not result.ok:
            raise ProviderError(f"{self.conn.host}: redis-server is not installed.",
                                hint="install it on the host (Debian: apt-get install redis-server).",
                                code="host.missing_redis")
        return result.text.strip()

    def ping(self, password: bytes) -> bool:
        result = self.conn.run([self.cli, "-h", self.listen, "-p", str(self.port), "ping"],
                               env={"REDISCLI_AUTH": password.decode()}, check=False, timeout=10)
        return result.ok and result.text.strip() == "PONG"

    def pid(self) -> int | None:
        raw = self.conn.read_bytes(f"{self.base}/redis.pid")
        try:
            return int(raw.strip()) if raw else None
        except ValueError:
            return None

    def running(self) -> bool:
        pid = self.pid()
        return bool(pid) and self.conn.run(["kill", "-0", str(pid)], check=False).ok

    def start(self, password: bytes) -> None:
        sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.base)
        conf = pgcommands.redis_conf(port=self.port, data_dir=Path(self.base), pid_file=Path(f"{self.base}/redis.pid"),
                                     log_file=Path(f"{self.base}/redis.log"), password=password.decode(),
                                     bind=self.listen)
        self.conn.write_bytes(f"{self.base}/redis.conf", conf.encode(), mode=0o600)
        if not self.running():
            sh(self.conn, 'umask 077; exec "$1" "$2"', self.binary, f"{self.base}/redis.conf", timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.ping(password):
                return
            time.sleep(0.2)
        log = self.conn.read_bytes(f"{self.base}/redis.log") or b""
        raise ProviderError(f"{self.conn.host}: redis-server did not answer on {self.listen}:{self.port}.\n"
                            f"{log.decode(errors='replace')[-1000:]}", code="host.redis_start")

    def remove(self) -> None:
        pid = self.pid()
        if pid:
            sh(self.conn, 'kill "$1" 2>/dev/null; for i in $(seq 1 50); do kill -0 "$1" 2>/dev/null || exit 0; '
                          'sleep 0.2; done; kill -9 "$1" 2>/dev/null; exit 0', pid)
        self.conn.run(["rm", "-rf", self.base])
