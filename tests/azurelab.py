"""Azurite (npm), Microsoft's Azure Storage emulator, on loopback: the blob service only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .awslab import free_port, wait_http

ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, the same in every install): not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    url: str  # the blob endpoint, account included
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # azurite ignores SIGTERM
            self.proc.wait(10)


def start_azurite(directory: Path) -> Azurite:
    binary = shutil.which("azurite-blob") or shutil.which("azurite")
    assert binary, "azurite is missing: npm install -g azurite (.ci/run does)"
    port = free_port()
    data = directory / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
            "--skipApiVersionCheck", "--silent", "--loose"]
    if binary.endswith("/azurite"):
        argv += ["--queueHost", "127.0.0.1", "--queuePort", str(free_port()), "--tableHost", "127.0.0.1",
                 "--tablePort", str(free_port())]
    proc = subprocess.Popen(argv, stdout=(directory / "azurite.log").open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/{ACCOUNT}"
    wait_http(f"http://127.0.0.1:{port}/", timeout=30)
    return Azurite(url, proc)
