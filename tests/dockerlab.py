"""Real Docker engines for tests: two dockerd instances (one per "host"), no registry, no Docker Hub.

The base image is made offline: debootstrap a minimal Debian with python3 and venv, add this machine's CA
bundle (so pip inside a build trusts the same network as the host), and `docker import` it into each
engine. The debootstrap tree is cached under /var/cache/lifeboat-tests between runs on one machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import require

BASE_IMAGE = "lifeboat-test/python:bookworm"
CACHE = Path("/var/cache/lifeboat-tests/rootfs-bookworm-python")


@dataclass
class Engine:
    socket: str
    process: subprocess.Popen
    directory: Path

    @property
    def env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.socket}")

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, check=check)

    def stop(self) -> None:
        for container in self.docker("ps", "-aq", check=False).stdout.split():
            self.docker("rm", "-f", container, check=False)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        subprocess.run(["sh", "-c", 'grep " $0" /proc/mounts | cut -d" " -f2 | sort -r | xargs -r umount -l',
                        str(self.directory)], check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def rootfs() -> Path:
    require("debootstrap", "apt-get install debootstrap")
    if not (CACHE / ".complete").exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", str(CACHE), "http://deb.debian.org/debian"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        (CACHE / ".complete").write_text("ok")
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", CACHE / "etc/ssl/certs/ca-certificates.crt")
    return CACHE


def start_engine(directory: Path) -> Engine:
    require("dockerd", "apt-get install docker.io")
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "docker.sock"
    proc = subprocess.Popen(
        ["timeout", "3600", "dockerd", "--data-root", str(directory / "data"), "--exec-root", str(directory / "exec"),
         "--pidfile", str(directory / "docker.pid"), "-H", f"unix://{sock}", "--bridge=none", "--iptables=false",
         "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"],
        stdout=open(directory / "dockerd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(str(sock), proc, directory)
    deadline = time.time() + 30
    while time.time() < deadline:
        if engine.docker("version", check=False).returncode == 0:
            return engine
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not start: {(directory / 'dockerd.log').read_text()[-2000:]}")


def import_base(engine: Engine, tree: Path) -> None:
    tar = subprocess.Popen(["tar", "-C", str(tree), "--exclude=./.complete", "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=engine.env, check=True,
                   capture_output=True)
    tar.wait()
