"""Hosts reached over SSH: the ``hosts:`` entries of a target, ~/.ssh/config, jump hosts, host keys.

Host keys are verified against the target's known_hosts file (or keys pinned in the stack file);
``trust`` records a host's key only after the operator confirmed its fingerprint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.config.schema import Bool, DictOf, Field, Int, ListOf, Map, Scalar, Str
from toolkit.errors import BadInput, ProviderUnreachable
from toolkit.paths import private_dir
from toolkit.transport.ssh import SSHConnection, fingerprint, known_hosts_name

ROLES = ["web", "worker", "db", "storage", "proxy"]

HOST = Map(
    {
        "name": Field(Str(pattern=r"[a-z0-9][a-z0-9-]{0,62}", expected="a host name (lowercase letters, digits, -)"),
                      required=True),
        "address": Field(Str(expected="an IP address, a DNS name or a Host alias of ~/.ssh/config"), required=True),
        "port": Field(Int(min=1, max=65535, expected="an SSH port")),
        "user": Field(Str(expected="the SSH login user")),
        "key": Field(Str(expected="a private key file")),
        "roles": Field(ListOf(Str(choices=ROLES), min_items=1, unique=True), required=True),
        "labels": Field(DictOf(Scalar()), default=dict),
        "root": Field(Str(pattern=r"/.*", expected="an absolute directory on the host")),
        "private_address": Field(Str(expected="the address other hosts use to reach this one")),
        "host_keys": Field(ListOf(Str(pattern=r"(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+",
                                      expected='a public key "TYPE BASE64"'), min_items=1),
                           doc="pinned keys: used instead of known_hosts"),
        "jump": Field(Str(expected="the name of another host (or an ssh_config alias) to connect through")),
        "docker_host": Field(Str(expected="a Docker endpoint such as unix:///run/docker.sock"),
                             doc="docker runtime: the engine on the host (default: docker's own default)"),
    }
)

SSH_SETTINGS = {
    "hosts": Field(ListOf(HOST, min_items=1), required=True),
    "known_hosts": Field(Str(expected="a known_hosts file"), doc="default ~/.ssh/known_hosts"),
    "ssh_config": Field(Str(expected="an OpenSSH client config file"), doc="default ~/.ssh/config when present"),
    "root": Field(Str(pattern=r"/.*", expected="an absolute directory on the hosts"), default="/srv/lifeboat"),
    "connect_timeout": Field(Int(min=1, max=300), default=10),
    "parallel": Field(Bool(), default=True),
}


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    roles: tuple[str, ...]
    root: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    labels: dict = field(default_factory=dict)
    private_address: str | None = None
    host_keys: tuple[str, ...] = ()
    jump: str | None = None
    docker_host: str | None = None

    def has(self, role: str) -> bool:
        return role in self.roles


def host_specs(settings: dict, base: Path) -> list[HostSpec]:
    out = []
    for h in settings["hosts"]:
        key = h.get("key")
        if key:
            key = str((base / os.path.expanduser(key)).resolve())
        out.append(HostSpec(
            name=h["name"], address=h["address"], roles=tuple(h.get("roles") or ()),
            root=h.get("root") or settings.get("root") or "/srv/lifeboat", port=h.get("port"), user=h.get("user"),
            key=key, labels=dict(h.get("labels") or {}), private_address=h.get("private_address"),
            host_keys=tuple(h.get("host_keys") or ()), jump=h.get("jump"), docker_host=h.get("docker_host")))
    return out


class SshDirectory:
    """Turns host specs into verified SSH connections, honouring ~/.ssh/config."""

    def __init__(self, specs: list[HostSpec], *, known_hosts: str | None, ssh_config: str | None,
                 base: Path, connect_timeout: int = 10, target: str = "TARGET"):
        self.target = target
        self.specs = {s.name: s for s in specs}
        self.known_hosts = str((base / os.path.expanduser(known_hosts)).resolve()) if known_hosts else \
            os.path.expanduser("~/.ssh/known_hosts")
        default_config = os.path.expanduser("~/.ssh/config")
        chosen = (base / os.path.expanduser(ssh_config)).resolve() if ssh_config else Path(default_config)
        self.ssh_config = str(chosen) if chosen.exists() else None
        if ssh_config and not chosen.exists():
            raise BadInput(f"ssh_config {chosen} does not exist.", code="ssh.config_missing")
        self.connect_timeout = connect_timeout
        self._conns: dict[str, SSHConnection] = {}

    def _lookup(self, alias: str) -> dict:
        if not self.ssh_config:
            return {}
        import paramiko

        config = paramiko.SSHConfig.from_path(self.ssh_config)
        return config.lookup(alias)

    def params(self, spec: HostSpec) -> dict:
        found = self._lookup(spec.address)
        address = found.get("hostname", spec.address)
        port = spec.port or int(found.get("port", 22))
        user = spec.user or found.get("user") or "root"
        key = spec.key
        if key is None and found.get("identityfile"):
            key = os.path.expanduser(found["identityfile"][0])
        jump = spec.jump or found.get("proxyjump")
        return {"address": address, "port": port, "user": user, "key": key, "jump": jump}

    def connection(self, name: str) -> SSHConnection:
        if name in self._conns:
            return self._conns[name]
        spec = self.specs.get(name)
        if spec is None:  # a jump given as an ssh_config alias that is not one of our hosts
            spec = HostSpec(name=name, address=name, roles=(), root="/")
        p = self.params(spec)
        jump = None
        if p["jump"] and p["jump"].lower() != "none":
            jump_name = p["jump"].split(",")[0].split("@")[-1]
            if jump_name == name:
                raise BadInput(f"host {name} names itself as its jump host.", code="ssh.jump_loop")
            jump = self.connection(jump_name)
        conn = SSHConnection(p["address"], port=p["port"], user=p["user"], key_file=p["key"],
                             known_hosts=self.known_hosts, name=name, connect_timeout=self.connect_timeout,
                             jump=jump, pinned_keys=list(spec.host_keys),
                             trust_command=f"lifeboat hosts trust --on {self.target} {name}")
        self._conns[name] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # -- trust on first use, with the operator's confirmation
    def scan(self, name: str):
        """The key a host presents, fetched without authenticating: (known_hosts name, key)."""
        import socket

        import paramiko

        spec = self.specs[name]
        p = self.params(spec)
        sock = None
        if p["jump"] and p["jump"].lower() != "none":
            jump = self.connection(p["jump"].split(",")[0].split("@")[-1])
            sock = jump.client().get_transport().open_channel("direct-tcpip", (p["address"], p["port"]),
                                                             ("127.0.0.1", 0))
        else:
            try:
                sock = socket.create_connection((p["address"], p["port"]), timeout=self.connect_timeout)
            except OSError as exc:
                from toolkit.transport.ssh import plain_reason

                raise ProviderUnreachable(f"{name}: cannot reach {p['address']}:{p['port']}: {plain_reason(exc)}.",
                                          hint=f"check that {name} is up, that sshd listens on port {p['port']} "
                                               "there and that no firewall stands between.",
                                          code="ssh.connect") from None
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=self.connect_timeout)
            key = transport.get_remote_server_key()
        except paramiko.SSHException as exc:
            raise ProviderUnreachable(f"{name}: SSH handshake with {p['address']}:{p['port']} failed: {exc}.",
                                      code="ssh.handshake") from None
        finally:
            transport.close()
        return known_hosts_name(p["address"], p["port"]), key

    def known_line(self, name: str) -> str | None:
        """The known_hosts entry we already have for this host, if any."""
        import paramiko

        spec = self.specs[name]
        p = self.params(spec)
        entry = known_hosts_name(p["address"], p["port"])
        if not os.path.exists(self.known_hosts):
            return None
        keys = paramiko.HostKeys(self.known_hosts)
        found = keys.lookup(entry)
        if not found:
            return None
        return ", ".join(f"{t} {fingerprint(k)}" for t, k in found.items())

    def record(self, entry: str, key) -> None:
        line = f"{entry} {key.get_name()} {key.get_base64()}\n"
        path = Path(self.known_hosts)
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)


def ed25519_pair(comment: str) -> tuple[bytes, str]:
    """A new Ed25519 key pair: (the private key as OpenSSH PEM, the public key line with ``comment``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}\n"
