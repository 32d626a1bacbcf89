"""A host where systemd really is the init system: a Debian tree (debootstrap, with systemd and OpenSSH)
booted with systemd-nspawn. It shares this machine's network (no routes to add) and its sshd listens only
on its own loopback address and port; its host key is made here and pinned in a known_hosts file. The tree
is cached under /var/cache/lifeboat-tests between runs; each lab boots a copy, so a reboot (stop, boot the
same copy again) keeps what was deployed, as on a real machine.

systemd-nspawn needs no system bus with --register=no --keep-unit, and a tmpfs under
/run/systemd/nspawn (made in a mount namespace of its own, so this machine's /run is untouched)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import require

CACHE = Path("/var/cache/lifeboat-tests/rootfs-bookworm-systemd")
PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,python3-venv,ca-certificates,iproute2,procps"


def rootfs() -> Path:
    if not (CACHE / ".complete").exists():
        require("debootstrap", "apt-get install debootstrap")
        shutil.rmtree(CACHE, ignore_errors=True)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(CACHE),
                        "http://deb.debian.org/debian"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=1200)
        (CACHE / ".complete").write_text("ok")
    return CACHE


@dataclass
class SystemdHost:
    directory: Path
    address: str
    port: int
    client_key: Path
    known_hosts: Path
    user: str = "root"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def tree(self) -> Path:
        return self.directory / "tree"

    def boot(self, timeout: float = 90) -> None:
        binds = [f"--bind-ro={self.directory / 'sshd.conf'}:/etc/ssh/sshd_config.d/lifeboat-lab.conf",
                 f"--bind-ro={self.directory / 'host_key'}:/etc/ssh/lab_host_key",
                 f"--bind-ro={self.directory / 'authorized_keys'}:/root/.ssh/authorized_keys"]
        nspawn = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(self.tree), "-M",
                  self.directory.name[-60:].replace("_", "-"), *binds, "-b"]
        script = 'mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"'
        self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", *nspawn],
                                     stdin=subprocess.DEVNULL, stdout=(self.directory / "console.log").open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {(self.directory / 'console.log').read_text()[-2000:]}")
            probe = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
                                    "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "BatchMode=yes",
                                    "-o", "ConnectTimeout=2", f"root@{self.address}", "systemctl", "is-system-running"],
                                   capture_output=True, text=True, timeout=20)
            if probe.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the systemd host did not come up: {(self.directory / 'console.log').read_text()[-2000:]}")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
                               "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "BatchMode=yes",
                               f"root@{self.address}", shlex.join(argv)], capture_output=True, text=True,
                              timeout=120)
        assert not check or done.returncode == 0, f"{argv}: {done.returncode} {done.stderr}"
        return done

    def shutdown(self, timeout: float = 60) -> None:
        """A clean poweroff (SIGTERM to systemd-nspawn asks the container's systemd to shut down)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def destroy(self) -> None:
        self.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_systemd_host(directory: Path, address: str, port: int) -> SystemdHost:
    require("systemd-nspawn", "apt-get install systemd-container")
    tree = rootfs()
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{tree}/.", str(directory / "tree")], check=True)
    client_key = directory / "client_key"
    for key in (directory / "host_key", client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (directory / "sshd.conf").write_text(f"ListenAddress {address}:{port}\nHostKey /etc/ssh/lab_host_key\n"
                                         "PasswordAuthentication no\nPermitRootLogin prohibit-password\n")
    shutil.copyfile(f"{client_key}.pub", directory / "authorized_keys")
    for name in ("sshd.conf", "authorized_keys", "host_key"):
        (directory / name).chmod(0o600)
    host_key = (directory / "host_key.pub").read_text().split()
    known = directory / "known_hosts"
    known.write_text(f"[{address}]:{port} {host_key[0]} {host_key[1]}\n")
    host = SystemdHost(directory, address, port, client_key, known)
    host.boot()
    return host
