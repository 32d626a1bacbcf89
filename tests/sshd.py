"""Real OpenSSH servers for tests: one sshd per loopback address, key-only, bounded lifetime."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import require

CONFIG = """ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
PermitUserEnvironment no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""


@dataclass
class SshHost:
    name: str
    address: str
    port: int
    directory: Path
    host_key: Path
    process: subprocess.Popen | None = None

    @property
    def public_key_line(self) -> str:
        key_type, key, *_ = (self.host_key.with_suffix(".pub")).read_text().split()
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {key_type} {key}"

    def start(self, authorized_keys: Path, *, sftp: bool = True, extra: str = "") -> None:
        """``sftp=False``: a server configured without the sftp subsystem (some hardened images are).
        ``extra``: more sshd_config lines (``SetEnv PATH=...`` gives sessions another PATH)."""
        sshd = require("sshd", "apt-get install openssh-server")
        Path("/run/sshd").mkdir(exist_ok=True)
        config = self.directory / "sshd_config"
        text = CONFIG.format(address=self.address, port=self.port, host_key=self.host_key,
                             pid_file=self.directory / "sshd.pid", authorized_keys=authorized_keys)
        config.write_text((text if sftp else text.replace("Subsystem sftp internal-sftp\n", "")) + extra)
        subprocess.run([sshd, "-t", "-f", str(config)], check=True)
        self.process = subprocess.Popen(["timeout", "3600", sshd, "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.directory / "sshd.log", "ab"),
                                        start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex((self.address, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address}:{self.port} did not start: "
                           f"{(self.directory / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            self.process = None

    def crash(self) -> None:
        """The host drops off the network: the listener and every session it forked die at once
        (commands running in those sessions too); daemons the sessions detached keep running."""
        if self.process is None:
            return
        listener = self.sshd_pid()
        victims = descendants(listener) if listener else set()
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.stop()

    def sshd_pid(self) -> int | None:
        """The listener: the sshd that `timeout` started (its sessions are sshd processes too)."""
        for pid in children(self.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    return pid
            except FileNotFoundError:
                continue
        return None

    def regenerate_host_key(self) -> None:
        self.host_key.unlink()
        self.host_key.with_suffix(".pub").unlink()
        keygen(self.host_key)


def children(parent: int) -> set[int]:
    return {pid for pid, ppid in _parents().items() if ppid == parent}


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return out


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def keygen(path: Path) -> None:
    require("ssh-keygen", "apt-get install openssh-client")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class SshLab:
    hosts: list[SshHost]
    client_key: Path
    known_hosts: Path
    authorized_keys: Path
    user: str = "root"

    def write_known_hosts(self, hosts: list[SshHost] | None = None) -> None:
        lines = [h.public_key_line for h in (self.hosts if hosts is None else hosts)]
        self.known_hosts.write_text("\n".join(lines) + "\n")


LAB_USER = "lbroot"


def ensure_lab_user() -> str:
    """A second root account (uid 0) whose shell is /bin/sh: the lab's sessions do not run root's
    ~/.bashrc (on this machine it runs `pyenv rehash`, which a host "crash" can leave locked)."""
    if ensure_account(LAB_USER, "--non-unique", "--uid", "0", "--gid", "0", "--no-create-home", "--home-dir", "/tmp",
                      "--shell", "/bin/sh"):
        subprocess.run(["usermod", "-p", "*", LAB_USER], check=True)
    return LAB_USER


def ensure_account(name: str, *useradd: str) -> bool:
    """The local account ``name``, made with ``useradd *useradd`` if missing (True when made here). The other
    test group (tests/parallel.py) may be adding accounts at the same moment: useradd then fails or finds
    /etc/passwd locked, so it is tried again."""
    import pwd

    for _ in range(10):
        try:
            pwd.getpwnam(name)
            return False
        except KeyError:
            pass
        if subprocess.run(["useradd", *useradd, name], capture_output=True).returncode == 0:
            return True
        time.sleep(0.5)
    pwd.getpwnam(name)
    return False


def lab_first_address() -> int:
    """The lab's hosts are 127.0.0.<first>, <first + 1>, ...: 2 unless LIFEBOAT_TEST_LAB says otherwise (the
    AWS test group runs at the same time as the others on its own addresses, tests/parallel.py)."""
    return int(os.environ.get("LIFEBOAT_TEST_LAB", "2"))


def start_lab(directory: Path, count: int = 3) -> SshLab:
    client_key = directory / "id_client"
    keygen(client_key)
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    hosts = []
    for index in range(count):
        address = f"127.0.0.{index + lab_first_address()}"
        hdir = directory / f"host{index + 1}"
        hdir.mkdir()
        key = hdir / "ssh_host_ed25519_key"
        keygen(key)
        host = SshHost(f"host{index + 1}", address, free_port(address), hdir, key)
        host.start(authorized)
        hosts.append(host)
    lab = SshLab(hosts, client_key, directory / "known_hosts", authorized, ensure_lab_user())
    lab.write_known_hosts()
    return lab
