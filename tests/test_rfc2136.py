"""The rfc2136 DNS provider against real BIND 9 servers (a primary taking TSIG-signed updates and a
secondary following it by NOTIFY and zone transfer), checked with BIND's own `dig` as the independent reader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.contract import Record
from toolkit.contract.suite import DnsContract
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable
from toolkit.run.engine import Engine

from .conftest import require, run_cli


def dns_stack(directory: Path, lab, *, key: str | None = None, extra: str = "", check_secondary: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key_lines = key if key is not None else f"    key_file: {lab.key_file}\n"
    checks = f"    check_servers: [\"127.0.0.1:{lab.primary.port}\", \"127.0.0.1:{lab.secondary.port}\"]\n" \
        if check_secondary else ""
    path = directory / "lifeboat.yml"
    path.write_text(f"""version: 1
name: dnsy
domain: www.lifeboat.test
services:
  web: {{role: web, image: "example/www:1", command: ["serve"], port: 8000}}
providers:
  here: {{type: local, state_dir: state}}
  ns:
    type: rfc2136
    server: 127.0.0.1
    port: {lab.primary.port}
{key_lines}{checks}    confirm_seconds: 20
{extra}dns:
  provider: ns
  zone: {lab.zone}
  records:
    - {{name: www, type: A, target: web}}
""")
    return path


def dig(lab, server, name: str, rtype: str = "A") -> list[str]:
    """BIND's dig, straight at one authoritative server, no recursion: 'TTL VALUE' per answer."""
    out = subprocess.run([require("dig", "apt-get install -y bind9-dnsutils"), "+norecurse", "+noall", "+answer",
                          "@127.0.0.1", "-p", str(server.port), f"{name}.{lab.zone}", rtype],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    return sorted(f"{line.split(None, 4)[1]} {line.split(None, 4)[4]}" for line in out.splitlines() if line.strip())


class TestRfc2136Contract(DnsContract):
    @pytest.fixture
    def provider(self, dns_lab, tmp_path):
        return Engine(stackfile.load(dns_stack(tmp_path, dns_lab))).provider("ns")


def test_updates_reach_primary_and_secondary(dns_lab, tmp_path):
    provider = Engine(stackfile.load(dns_stack(tmp_path, dns_lab))).provider("ns")
    facts = provider.check()
    assert facts["zone"] == dns_lab.zone and facts["serial"] >= 1 and facts["key"] == "lifeboat-test"
    dns = provider.dns()
    record = Record("www", "A", 17, ("192.0.2.1", "192.0.2.2"))
    dns.upsert(dns_lab.zone, record)
    confirmed = dns.confirm(dns_lab.zone, record, timeout=20)
    assert sorted(confirmed) == sorted(f"127.0.0.1:{s.port}" for s in (dns_lab.primary, dns_lab.secondary))
    for server in (dns_lab.primary, dns_lab.secondary):  # dig agrees, on both
        assert dig(dns_lab, server, "www") == ["17 192.0.2.1", "17 192.0.2.2"]
    dns.delete(dns_lab.zone, "www", "A")
    assert dig(dns_lab, dns_lab.primary, "www") == []


def test_key_from_an_environment_variable(dns_lab, tmp_path, monkeypatch):
    key = "    key_name: lifeboat-test\n    key_secret_env: TEST_TSIG_SECRET\n"
    provider = Engine(stackfile.load(dns_stack(tmp_path, dns_lab, key=key))).provider("ns")
    monkeypatch.setenv("TEST_TSIG_SECRET", dns_lab.secret)
    provider.dns().upsert(dns_lab.zone, Record("envkey", "TXT", 30, ('"via env"',)))
    assert dig(dns_lab, dns_lab.primary, "envkey", "TXT") == ['30 "via env"']
    provider.dns().delete(dns_lab.zone, "envkey", "TXT")

    monkeypatch.delenv("TEST_TSIG_SECRET")
    fresh = Engine(stackfile.load(dns_stack(tmp_path, dns_lab, key=key))).provider("ns")
    with pytest.raises(BadInput, match="TEST_TSIG_SECRET"):
        fresh.check()


def test_a_wrong_secret_or_unknown_key_is_refused_and_changes_nothing(dns_lab, tmp_path, monkeypatch):
    import base64

    wrong = base64.b64encode(b"x" * 32).decode()
    cases = {"the secret is wrong": "lifeboat-test", "does not know this key name": "nobody-knows-me"}
    for why, name in cases.items():
        key = f"    key_name: {name}\n    key_secret_env: TEST_TSIG_SECRET\n"
        monkeypatch.setenv("TEST_TSIG_SECRET", wrong)
        provider = Engine(stackfile.load(dns_stack(tmp_path / name, dns_lab, key=key))).provider("ns")
        with pytest.raises(ProviderUnreachable, match=why) as caught:
            provider.dns().upsert(dns_lab.zone, Record("intruder", "A", 30, ("192.0.2.66",)))
        assert caught.value.exit_code == 5 and wrong not in caught.value.message
        assert dig(dns_lab, dns_lab.primary, "intruder") == []


def test_a_secondary_that_does_not_follow_is_named(dns_lab, tmp_path):
    dead = "127.0.0.1:9"  # discard port: nothing answers DNS there
    extra = ""
    path = dns_stack(tmp_path, dns_lab, check_secondary=False,
                     extra=f"    check_servers: [\"127.0.0.1:{dns_lab.primary.port}\", \"{dead}\"]\n"
                           f"    timeout: 1\n")
    text = path.read_text().replace("    confirm_seconds: 20\n", "    confirm_seconds: 2\n") + extra
    path.write_text(text)
    provider = Engine(stackfile.load(path)).provider("ns")
    record = Record("lagging", "A", 30, ("192.0.2.7",))
    provider.dns().upsert(dns_lab.zone, record)
    try:
        with pytest.raises(ProviderError, match=f"{dead}.*does not answer"):
            provider.dns().confirm(dns_lab.zone, record, timeout=2)
    finally:
        provider.dns().delete(dns_lab.zone, "lagging", "A")


def test_stack_file_errors_name_the_key(dns_lab, tmp_path):
    path = dns_stack(tmp_path, dns_lab, key="")
    result = run_cli("-c", str(path), "-o", "json", "validate")
    assert result.code == 2, result
    problem = result.envelope["errors"][0]
    assert "exactly one TSIG key source" in problem["message"] and problem["key"] == "providers.ns"
    assert problem["line"] == 9

    path = dns_stack(tmp_path, dns_lab)
    refused = run_cli("-c", str(path), "-o", "json", "--yes", "up", "--on", "ns")
    assert refused.code == 2 and "cannot run the stack" in refused.envelope["errors"][0]["message"]
