"""The digitalocean-dns and hetzner-dns providers against FAKES of the two clouds' APIs (tests/clouddnslab.py):
the real APIs cannot be reached from here. The DNS contract, paging, Hetzner's asynchronous actions, the
zone's own records left alone, a refused token, and `lifeboat up` putting a stack's record there."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.contract import Record
from toolkit.contract.suite import DnsContract
from toolkit.errors import BadInput, ProviderUnreachable
from toolkit.run.engine import Engine

from .clouddnslab import FakeDigitalOcean, FakeHetzner
from .conftest import run_cli, tiny_app

ZONE = "lifeboat.test"
TOKEN = "fake-token-5d1c0e9a"  # noqa: S105 - the fakes' token, not a credential
KINDS = {"do": ("digitalocean-dns", FakeDigitalOcean), "hz": ("hetzner-dns", FakeHetzner)}


def write_stack(directory: Path, kind: str, endpoint: str, *, with_app: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    app = tiny_app(directory) if with_app else "."
    path = directory / "lifeboat.yml"
    path.write_text(f"""version: 1
name: clouddns
domain: www.{ZONE}
services:
  web: {{role: web, build: {app}, command: ["python3", "serve.py"], port: 8000}}
providers:
  here: {{type: local, state_dir: state}}
  dns: {{type: {kind}, token_env: LB_TEST_DNS_TOKEN, endpoint: "{endpoint}", confirm_seconds: 20}}
dns:
  provider: dns
  zone: {ZONE}
  ttl: 300
  records:
    - {{name: www, type: A, target: web}}
""")
    return path


@pytest.fixture(params=sorted(KINDS), scope="module")
def fake(request):
    kind, cls = KINDS[request.param]
    with cls(TOKEN, [ZONE]) as server:
        server.kind = kind
        yield server


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("LB_TEST_DNS_TOKEN", TOKEN)


class TestCloudDnsContract(DnsContract):
    zone = ZONE

    @pytest.fixture
    def provider(self, fake, token, tmp_path):
        return Engine(stackfile.load(write_stack(tmp_path, fake.kind, fake.endpoint))).provider("dns")


def test_records_page_and_leave_the_zones_own_alone(fake, token, tmp_path):
    dns = Engine(stackfile.load(write_stack(tmp_path, fake.kind, fake.endpoint))).provider("dns").dns()
    values = tuple(f"192.0.2.{i}" for i in range(1, 6))
    dns.upsert(ZONE, Record("many", "A", 120, values))
    dns.upsert(ZONE, Record("mx", "MX", 600, ("10 mail.example.net.", "20 @".replace("@", f"{ZONE}."))))
    dns.upsert(ZONE, Record("spf", "TXT", 300, ('"v=spf1 -all"',)))
    try:
        found = {(r.name, r.type): r for r in dns.records(ZONE)}  # more than one page in the fakes
        assert found[("many", "A")] == Record("many", "A", 120, values)
        assert found[("mx", "MX")].values == ("10 mail.example.net.", f"20 {ZONE}.")
        assert found[("spf", "TXT")].values == ('"v=spf1 -all"',)
        assert ("@", "NS") not in found and ("@", "SOA") not in found
        dns.upsert(ZONE, Record("many", "A", 60, ("192.0.2.4", "192.0.2.9")))
        held = fake.view(ZONE)  # the fake's own state, not read back through Lifeboat
        assert held[("many", "A")] == (60, ["192.0.2.4", "192.0.2.9"])
    finally:
        for name, rtype in (("many", "A"), ("mx", "MX"), ("spf", "TXT")):
            dns.delete(ZONE, name, rtype)
    assert not fake.view(ZONE)
    with fake.lock:  # the cloud's own NS records are still there
        if isinstance(fake, FakeDigitalOcean):
            assert sum(r["type"] == "NS" for r in fake.domains[ZONE]) == 3
        else:
            assert ("@", "NS") in fake.zones[ZONE]["rrsets"]


def test_a_refused_token_is_a_clear_error_without_the_token(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("LB_TEST_DNS_TOKEN", "wrong-token-value")
    dns = Engine(stackfile.load(write_stack(tmp_path, fake.kind, fake.endpoint))).provider("dns").dns()
    with pytest.raises(ProviderUnreachable, match="refuses the token in LB_TEST_DNS_TOKEN") as caught:
        dns.records(ZONE)
    assert "wrong-token-value" not in str(caught.value) and caught.value.code == "clouddns.auth"
    monkeypatch.delenv("LB_TEST_DNS_TOKEN")
    with pytest.raises(BadInput, match="LB_TEST_DNS_TOKEN"):
        dns.records(ZONE)


def test_plain_http_to_another_machine_is_refused(token, tmp_path):
    provider = Engine(stackfile.load(write_stack(tmp_path, "hetzner-dns", "http://192.0.2.1:8080/v1"))).provider("dns")
    with pytest.raises(BadInput, match="unencrypted"):
        provider.dns()


def test_up_puts_the_stacks_record_at_the_cloud(fake, token, tmp_path):
    stack = write_stack(tmp_path, fake.kind, fake.endpoint, with_app=True)
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    env = {"LB_TEST_DNS_TOKEN": TOKEN}
    try:
        up = run_cli(*lb, "up", "--on", "here", env=env)
        assert up.code == 0, up
        assert fake.view(ZONE)[("www", "A")] == (300, ["127.0.0.1"])
        again = run_cli(*lb, "plan", "--on", "here", env=env)
        assert again.code == 0 and not [c for c in again.envelope["data"]["changes"] if c["action"] != "noop"], again
        assert TOKEN not in up.stdout + up.stderr + again.stdout + again.stderr
    finally:
        run_cli(*lb, "destroy", "--on", "here", env=env)
        Engine(stackfile.load(stack)).provider("dns").dns().delete(ZONE, "www", "A")
