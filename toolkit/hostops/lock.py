"""The target's lock, held on its primary host."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from toolkit.errors import LockHeld
from toolkit.hostops.shell import sh
from toolkit.run.locks import gone_here
from toolkit.transport.connection import Connection


class HostLock:
    """Kamal-style: an atomic ``mkdir`` on the primary host; the holder is recorded inside."""

    def __init__(self, conn: Connection, root: str, label: str):
        self.conn = conn
        self.path = f"{root}/lock"
        self.label = label
        self._local = threading.local()

    def holder(self) -> dict | None:
        raw = self.conn.read_bytes(f"{self.path}/holder.json")
        if raw is None:
            exists = self.conn.run(["test", "-d", self.path], check=False).ok
            return {"owner": "unknown", "since": "unknown"} if exists else None
        try:
            return json.loads(raw)
        except ValueError:
            return {"owner": "unknown", "since": "unknown"}

    def acquire(self, owner: str, command: str) -> None:
        sh(self.conn, 'mkdir -p "$(dirname "$1")"', self.path)
        took = self.conn.run(["mkdir", self.path], check=False).ok
        if not took:
            held = self.holder() or {}
            if gone_here(held.get("machine"), held.get("pid")):  # left by a run killed here: take it over
                self.conn.run(["rm", "-rf", self.path])
                took = self.conn.run(["mkdir", self.path], check=False).ok
        if not took:
            held = self.holder() or {}
            raise LockHeld(f"{self.label}: another run holds the lock: {held.get('owner', 'unknown')} "
                           f"(`{held.get('command', '?')}`) since {held.get('since', 'an unknown time')}.",
                           hint=f"wait for it; if it died, check then run `lifeboat lock release --on "
                                f"{self.label.split(' ')[0]}`.")
        body = {"owner": owner, "command": command, "pid": os.getpid(), "machine": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            self.conn.write_bytes(f"{self.path}/holder.json", json.dumps(body).encode(), mode=0o600)
        except BaseException:  # a lock nobody is named in would stop every later run: give it back
            self.conn.run(["rm", "-rf", self.path], check=False)
            raise

    def release(self) -> None:
        self.conn.run(["rm", "-rf", self.path])
