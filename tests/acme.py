"""A private ACME CA for tests: pebble (Let's Encrypt's test server) with pebble-challtestsrv as its DNS,
both on loopback, with a throwaway CA for pebble's own HTTPS."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .conftest import require


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """CA cert, and a server cert/key for 127.0.0.1 and localhost signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lifeboat test CA for pebble")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Pebble:
    directory_url: str
    https_ca: Path  # signs pebble's own HTTPS (Caddy's acme_ca_root)
    management: str
    processes: list[subprocess.Popen]

    def issuing_roots(self) -> bytes:
        """The roots pebble issues under (new on every start), to verify served certificates."""
        ctx = ssl.create_default_context(cafile=str(self.https_ca))
        out = b""
        for path in ("/roots/0", "/intermediates/0"):
            with urllib.request.urlopen(self.management + path, context=ctx, timeout=10) as resp:  # noqa: S310
                out += resp.read()
        return out

    def stop(self) -> None:
        for proc in self.processes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def start_pebble(directory: Path, *, default_ipv4: str, http_port: int, always_valid: bool = False) -> Pebble:
    require("pebble", "apt-get install pebble")
    require("pebble-challtestsrv", "apt-get install pebble")
    ca, cert, key = make_ca(directory)
    dns_port, mgmt_dns, acme_port, mgmt_port = free_port(), free_port(), free_port(), free_port()
    challtest = subprocess.Popen(
        ["timeout", "3600", "pebble-challtestsrv", "-defaultIPv4", default_ipv4, "-defaultIPv6", "",
         "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
         "-management", f"127.0.0.1:{mgmt_dns}"],
        stdout=open(directory / "challtestsrv.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    config = directory / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    if always_valid:
        env["PEBBLE_VA_ALWAYS_VALID"] = "1"
    pebble = subprocess.Popen(["timeout", "3600", "pebble", "-config", str(config), "-strict=false",
                               "-dnsserver", f"127.0.0.1:{dns_port}"], env=env,
                              stdout=open(directory / "pebble.log", "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    result = Pebble(f"https://127.0.0.1:{acme_port}/dir", ca, f"https://127.0.0.1:{mgmt_port}",
                    [challtest, pebble])
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            result.issuing_roots()
            return result
        except OSError:
            time.sleep(0.1)
    result.stop()
    raise RuntimeError(f"pebble did not start: {(directory / 'pebble.log').read_text()}")


def fetch_verified(address: str, port: int, domain: str, roots: bytes, path: str = "/", *, method: str = "GET",
                   body: bytes = b"") -> tuple[int, bytes, dict]:
    """``method`` https://domain{path} from address:port, verifying the chain against ``roots`` and the name."""
    ctx = ssl.create_default_context(cadata=roots.decode())
    with socket.create_connection((address, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=domain) as tls:
        cert = tls.getpeercert()
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, body, cert
