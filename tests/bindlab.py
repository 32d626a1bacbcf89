"""Real BIND 9 servers on loopback for the DNS tests: a primary that takes RFC 2136 updates signed with
TSIG, and a secondary that follows it by NOTIFY + zone transfer (signed with the same key), so a change is
visible on every authoritative server only after the transfer, as on the internet."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import require

KEY_NAME = "lifeboat-test"


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))  # named needs both on the same number
        return port


@dataclass
class Named:
    role: str
    port: int
    directory: Path
    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.directory / "named.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@dataclass
class DnsLab:
    zone: str
    primary: Named
    secondary: Named
    key_file: Path
    secret: str
    base: Path
    extra: list = field(default_factory=list)

    def stop(self) -> None:
        for server in (self.primary, self.secondary):
            server.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def query(self, name: str, rtype: str = "A", *, server: Named | None = None):
        """What an authoritative server answers (no recursion): (ttl, sorted values) or None."""
        import dns.message
        import dns.query
        import dns.rcode

        server = server or self.primary
        fqdn = f"{name}.{self.zone}." if name != "@" else f"{self.zone}."
        request = dns.message.make_query(fqdn, rtype)
        request.flags &= ~dns.flags.RD
        answer = dns.query.udp(request, "127.0.0.1", port=server.port, timeout=3)
        if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return None
        rrset = answer.answer[0]
        return rrset.ttl, sorted(r.to_text() for r in rrset)


def _conf(directory: Path, port: int, body: str) -> Path:
    conf = directory / "named.conf"
    conf.write_text(f"""include "{directory.parent / 'tsig.key'}";
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify-source 127.0.0.1;
    transfer-source 127.0.0.1;
}};
controls {{ }};
logging {{ channel main {{ file "{directory}/named.log"; severity info; print-time yes; }};
           category default {{ main; }}; category xfer-in {{ main; }}; category notify {{ main; }};
           category update {{ main; }}; }};
{body}
""")
    return conf


def _start(server: Named, conf: Path) -> None:
    named = require("named", "apt-get install -y bind9 bind9-dnsutils")
    check = subprocess.run([require("named-checkconf", "apt-get install -y bind9"), str(conf)],
                           capture_output=True, text=True)
    assert check.returncode == 0, f"named-checkconf {conf}: {check.stdout}{check.stderr}"
    server.proc = subprocess.Popen([named, "-f", "-u", "bind", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)


def _wait_soa(lab: DnsLab, server: Named, deadline: float) -> None:
    import dns.exception

    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"named ({server.role}) exited {server.proc.returncode}: "
                                 f"{server.proc.stderr.read().decode(errors='replace')[-2000:]}\n{server.log()}")
        try:
            if lab.query("@", "SOA", server=server):
                return
        except (dns.exception.Timeout, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"named ({server.role}) does not serve {lab.zone}: {server.log()}")
        time.sleep(0.05)


def start_dns_lab(base: Path, *, zone: str = "lifeboat.test", records: str = "") -> DnsLab:
    """A primary and a secondary BIND for ``zone``, both answering on 127.0.0.1 (two ports). ``records`` are
    extra zone-file lines for the primary."""
    import pwd

    bind = pwd.getpwnam("bind")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    key_file = base / "tsig.key"
    key_file.write_text(f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    os.chown(key_file, 0, bind.pw_gid)
    key_file.chmod(0o640)
    primary = Named("primary", free_port(), base / "primary")
    secondary = Named("secondary", free_port(), base / "secondary")
    for server in (primary, secondary):
        server.directory.mkdir()
        os.chown(server.directory, bind.pw_uid, bind.pw_gid)
    zone_file = primary.directory / f"{zone}.zone"
    zone_file.write_text(f"""$ORIGIN {zone}.
$TTL 300
@   IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 30 604800 30
@   IN NS ns1.{zone}.
@   IN NS ns2.{zone}.
ns1 IN A 127.0.0.1
ns2 IN A 127.0.0.1
{records}""")
    os.chown(zone_file, bind.pw_uid, bind.pw_gid)
    primary_conf = _conf(primary.directory, primary.port, f"""zone "{zone}" {{
    type primary;
    file "{zone_file}";
    allow-update {{ key "{KEY_NAME}"; }};
    allow-transfer {{ key "{KEY_NAME}"; }};
    notify explicit;
    also-notify {{ 127.0.0.1 port {secondary.port}; }};
}};""")
    secondary_conf = _conf(secondary.directory, secondary.port, f"""zone "{zone}" {{
    type secondary;
    file "{secondary.directory}/{zone}.zone";
    primaries {{ 127.0.0.1 port {primary.port} key "{KEY_NAME}"; }};
    allow-notify {{ 127.0.0.1; }};
}};""")
    lab = DnsLab(zone, primary, secondary, key_file, secret, base)
    try:
        _start(primary, primary_conf)
        _wait_soa(lab, primary, time.monotonic() + 15)
        _start(secondary, secondary_conf)
        _wait_soa(lab, secondary, time.monotonic() + 15)
    except BaseException:
        lab.stop()
        raise
    return lab
