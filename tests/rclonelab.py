"""rclone (Debian's) as the independent reader of object stores in the tests: it lists and hashes what each
side holds by downloading it (`hashsum --download`), with its own S3 and SFTP code, none of Lifeboat's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .conftest import require


def write_config(path: Path, remotes: dict[str, dict[str, str]]) -> Path:
    lines = []
    for name, options in remotes.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in options.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


def s3_remote(endpoint: str, key: str, secret: str, region: str = "us-east-1") -> dict[str, str]:
    return {"type": "s3", "provider": "Other", "endpoint": endpoint, "access_key_id": key,
            "secret_access_key": secret, "region": region, "force_path_style": "true"}


def sftp_remote(host: str, port: int, user: str, key_file: Path, known_hosts: Path) -> dict[str, str]:
    return {"type": "sftp", "host": host, "port": str(port), "user": user, "key_file": str(key_file),
            "known_hosts_file": str(known_hosts), "shell_type": "unix", "md5sum_command": "none",
            "sha1sum_command": "none"}


def rclone(config: Path, *args: str, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 fails on it
    env["RCLONE_CONFIG"] = str(config)
    done = subprocess.run([require("rclone", "apt-get install -y rclone"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0, f"rclone {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def inventory(config: Path, remote: str) -> dict[str, tuple[int, str]]:
    """path -> (size, MD5 of the downloaded bytes); in a Lifeboat directory store, a path is the key
    (docs/object-layout.md)."""
    sizes = {e["Path"]: e["Size"] for e in json.loads(rclone(config, "lsjson", "-R", "--files-only", remote))}
    digests = {}
    for line in rclone(config, "hashsum", "MD5", "--download", remote).splitlines():
        digest, _, path = line.partition("  ")
        digests[path] = digest
    assert set(sizes) == set(digests), f"rclone listed {sorted(sizes)} but hashed {sorted(digests)}"
    return {p: (sizes[p], digests[p]) for p in sizes}
