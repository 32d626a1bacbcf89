"""The local target's state folder (0700) and state file (0600), its ports, and this machine's processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from toolkit.agents.supervisor import alive
from toolkit.paths import private_dir, write_private

PG_SUPERUSER = "lifeboat"
INTERNAL = {"pg_superuser": "postgres superuser password", "pg_app": "app role password",
            "redis": "redis password", "release_key": "key for release fingerprints"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int | None) -> bool:
    return bool(pid) and alive(pid)


class LocalState:
    """Paths and the 0600 state file of one local target."""

    def __init__(self, root: Path, stack_name: str, target_name: str):
        self.root = root
        self.file = root / "state.json"
        self.stack_name = stack_name
        self.target_name = target_name

    def exists(self) -> bool:
        return self.file.exists()

    def load(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}

    def save(self, data: dict) -> None:
        private_dir(self.root)
        os.chmod(self.root, 0o700)
        write_private(self.file, json.dumps(data, indent=1, sort_keys=True))

    def update(self, **changes) -> dict:
        data = self.load()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        self.save(data)
        return data

    def port(self, name: str) -> int:
        """A stable port for ``name``: reuse the recorded one, else pick a free one and record it."""
        data = self.load()
        ports = data.setdefault("ports", {})
        if name not in ports:
            used = set(ports.values())
            port = free_port()
            while port in used:
                port = free_port()
            ports[name] = port
            self.save(data)
        return ports[name]

    def recorded_port(self, name: str) -> int | None:
        """The port recorded for ``name``, if any (nothing is picked)."""
        return self.load().get("ports", {}).get(name)

    def port_to_start(self, name: str, *, running: bool) -> int:
        """The port to start ``name`` on: its recorded one, unless it is down and something else took that
        port meanwhile; then a new free one (recorded)."""
        port = self.port(name)
        if not running and port_open(port):
            self.forget_port(name)
            port = self.port(name)
        return port

    def forget_port(self, name: str) -> None:
        data = self.load()
        data.get("ports", {}).pop(name, None)
        self.save(data)

    # -- paths
    @property
    def internal(self) -> Path:
        return self.root / "internal"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def dns(self) -> Path:
        return self.root / "dns"

    @property
    def services(self) -> Path:
        return self.root / "services"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def builds(self) -> Path:
        return self.root / "builds"
