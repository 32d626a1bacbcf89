"""`make demo` as a normal user on a fresh copy of the repository (the README's first command), including
the virtualenv it creates: the local provider must work without root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .conftest import REPO

DEMO_USER = "lbdemo"


def demo_account() -> str:
    from .sshd import ensure_account

    ensure_account(DEMO_USER, "--create-home", "--shell", "/bin/sh")
    return DEMO_USER


def living_processes(base: Path) -> list[str]:
    """Processes (not zombies) whose command line or working directory is inside ``base``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError, OSError, IndexError):
            continue
        if state != "Z" and (str(base) in cmd or cwd.startswith(str(base))):
            out.append(f"{proc.name} {cmd}")
    return out


def test_make_demo_as_a_normal_user():
    base = Path(tempfile.mkdtemp(prefix="lifeboat-demo-", dir="/tmp"))
    try:
        base.chmod(0o755)
        checkout = base / "lifeboat"
        shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".venv", ".git", ".lifeboat", "__pycache__",
                                                                     "*.egg-info", ".pytest_cache", ".ruff_cache"))
        python = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
        env = {"HOME": f"/home/{DEMO_USER}", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                     "PIP_CERT"):
            if name in os.environ:
                env[name] = os.environ[name]
        argv = ["make", "demo", f"PYTHON={python}"]
        if os.geteuid() == 0:
            user = demo_account()
            shutil.chown(base, user, user)
            subprocess.run(["chown", "-R", f"{user}:{user}", str(checkout)], check=True)
            argv = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]
        result = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=600,
                                env=None if os.geteuid() == 0 else env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "GET /media/" in result.stderr and "GET /api/stats" in result.stderr
        assert "done in" in result.stderr
        assert not (checkout / "examples" / "chirp" / ".lifeboat").exists()
        deadline = time.time() + 10
        while time.time() < deadline and (leftover := living_processes(base)):
            time.sleep(0.2)
        assert not leftover, f"processes of the demo left running: {leftover}"
    finally:
        shutil.rmtree(base, ignore_errors=True)
