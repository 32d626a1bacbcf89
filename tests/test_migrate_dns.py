"""A migration whose DNS lives at a third provider: real BIND 9 servers (primary + secondary) updated with
TSIG-signed RFC 2136 messages. The TTL is lowered ahead of the switch and the freeze waits for the old TTL
to run out; the switch is confirmed on both authoritative servers; BIND's `dig` is the independent reader."""

from __future__ import annotations

import calendar
import json
import subprocess
import time
import urllib.request

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import require, run_cli, seeded_chirp

TTL, CUTOVER_TTL = 12, 3


def dig(lab, server, name: str = "chirp") -> list[str]:
    out = subprocess.run([require("dig", "apt-get install -y bind9-dnsutils"), "+norecurse", "+noall", "+answer",
                          "@127.0.0.1", "-p", str(server.port), f"{name}.{lab.zone}", "A"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    return sorted(f"{line.split()[1]} {line.split()[-1]}" for line in out.splitlines() if line.strip())


def epoch(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dns_lab):
    root = tmp_path_factory.mktemp("migrate-dns")
    extra = f"""  new:
    type: local
    state_dir: state/new
    address: 127.0.0.21
  ns:
    type: rfc2136
    server: 127.0.0.1
    port: {dns_lab.primary.port}
    key_file: {dns_lab.key_file}
    check_servers: ["127.0.0.1:{dns_lab.primary.port}", "127.0.0.1:{dns_lab.secondary.port}"]
dns:
  provider: ns
  zone: {dns_lab.zone}
  ttl: {TTL}
  cutover_ttl: {CUTOVER_TTL}
  records:
    - {{name: chirp, type: A, target: web}}
"""
    with seeded_chirp(root, extra, users=30, posts=300, media=6, large_mb=1, dns=False) as path:
        yield path


def test_dry_run_says_how_long_the_freeze_waits_and_changes_nothing(stack, dns_lab):
    assert dig(dns_lab, dns_lab.primary) == [f"{TTL} 127.0.0.1"]
    result = run_cli("-c", str(stack), "-o", "json", "migrate", "--from", "old", "--to", "new", "--dry-run")
    assert result.code == 0, result
    plan = result.envelope["data"]["dns"]
    assert plan["records"] == [{"record": "chirp A", "ttl_now": TTL, "lowered_to": CUTOVER_TTL}]
    assert f"{TTL} s" in plan["why"] and plan["provider"] == "ns"
    assert "lower_ttl" in result.envelope["data"]["steps"]
    for server in (dns_lab.primary, dns_lab.secondary):
        assert dig(dns_lab, server) == [f"{TTL} 127.0.0.1"]


def test_migrate_lowers_the_ttl_waits_switches_and_confirms_on_every_server(stack, dns_lab):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    moved = run_cli(*lb, "migrate", "--from", "old", "--to", "new")
    assert moved.code == 0, moved
    steps = {s["step"]: s for s in moved.envelope["data"]["steps"]}
    servers = sorted(f"127.0.0.1:{s.port}" for s in (dns_lab.primary, dns_lab.secondary))
    assert steps["lower_ttl"]["lowered"] == {"chirp A": TTL} and steps["lower_ttl"]["to"] == CUTOVER_TTL
    assert steps["lower_ttl"]["confirmed_on"] == servers
    assert steps["cutover"]["records"] == [{"record": "chirp A", "values": ["127.0.0.21"], "ttl": CUTOVER_TTL}]
    assert steps["cutover"]["confirmed_on"] == servers

    # The journal shows the order of events: the freeze began only after the old TTL ran out.
    journal = next((stack.parent / ".lifeboat" / "migrate-old-new").rglob("journal.jsonl"))
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    seen = next(e for e in events if e["step"] == "lower_ttl" and e["event"] == "seen")
    paused = next(e for e in events if e["step"] == "freeze" and e["event"] == "done")
    assert epoch(paused["at"]) >= int(seen["at_epoch"]) + TTL
    assert dns_lab.secret not in journal.read_text() + moved.stdout + moved.stderr

    # Both authoritative servers answer the target, with the low TTL; chirp answers there by that name.
    for server in (dns_lab.primary, dns_lab.secondary):
        assert dig(dns_lab, server) == [f"{CUTOVER_TTL} 127.0.0.21"]
    address = dig(dns_lab, dns_lab.secondary)[0].split()[1]
    status = run_cli(*lb, "status", "--on", "new").envelope["data"]
    port = next(s["url"] for s in status["services"] if s["service"] == "web").rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://{address}:{port}/api/stats", timeout=10) as resp:  # noqa: S310 - loopback
        assert json.loads(resp.read())["posts"] == 300

    # The low TTL stays until the operator is done with rollbacks; `up` on the target restores the stack's.
    plan = run_cli(*lb, "plan", "--on", "new").envelope["data"]
    record = next(c for c in plan["changes"] if c["kind"] == "record")
    assert record["action"] == "update"
    assert run_cli(*lb, "up", "--on", "new").code == 0
    for server in (dns_lab.primary, dns_lab.secondary):
        deadline = time.monotonic() + 20
        while dig(dns_lab, server) != [f"{TTL} 127.0.0.21"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dig(dns_lab, server) == [f"{TTL} 127.0.0.21"]


def test_rollback_points_the_name_back(stack, dns_lab):
    result = run_cli("-c", str(stack), "-o", "json", "--yes", "rollback")
    assert result.code == 0, result
    assert dig(dns_lab, dns_lab.primary) == [f"{TTL} 127.0.0.1"]
    engine = Engine(stackfile.load(stack))
    assert engine.provider("old").compute().addresses("web") == ["127.0.0.1"]


def test_a_wrong_tsig_key_stops_the_migration_before_anything_moves(stack, dns_lab, tmp_path):
    import base64

    bad = tmp_path / "bad.key"
    bad.write_text(f'key "lifeboat-test" {{ algorithm hmac-sha256; secret "{base64.b64encode(b"y" * 32).decode()}"; }};\n')
    text = stack.read_text().replace(str(dns_lab.key_file), str(bad))
    other = stack.parent / "bad-key.yml"
    other.write_text(text)
    before = dig(dns_lab, dns_lab.primary)
    journals = sorted((stack.parent / ".lifeboat").glob("migrate-old-new/migrations/*/journal.jsonl"))
    result = run_cli("-c", str(other), "-o", "json", "--yes", "migrate", "--from", "old", "--to", "new")
    assert result.code == 5, result
    assert "rejects the TSIG key" in result.envelope["errors"][0]["message"]
    assert dig(dns_lab, dns_lab.primary) == before
    assert sorted((stack.parent / ".lifeboat").glob("migrate-old-new/migrations/*/journal.jsonl")) == journals, \
        "a run refused in preflight must not start a journal"
