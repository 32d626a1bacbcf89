"""DNS over RFC 2136 dynamic updates signed with TSIG (BIND 9, Knot, PowerDNS): records read by signed
queries to the primary, changes confirmed on every authoritative server named. The ``rfc2136`` provider
(providers/rfc2136.py) reads the key and gives it its settings."""

from __future__ import annotations

import re
import time
from pathlib import Path

from toolkit.contract import DnsService, Record
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable

ALGORITHMS = ["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5"]
SERVER = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|[0-9A-Fa-f:]+)(:[0-9]{1,5})?"
KEY_STATEMENT = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)


def parse_key_file(path: Path, wanted: str | None, label: str) -> tuple[str, str, str]:
    """(name, algorithm, base64 secret) from a BIND key file; the secret is returned, never shown."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"{label}: cannot read the TSIG key file {path} ({exc.strerror}).",
                       code="rfc2136.key_file") from None
    found = {}
    for name, body in KEY_STATEMENT.findall(text):
        algorithm = re.search(r"algorithm\s+\"?([A-Za-z0-9.-]+)\"?\s*;", body)
        secret = re.search(r'secret\s+"([^"]+)"\s*;', body)
        if algorithm and secret:
            found[name.rstrip(".")] = (algorithm.group(1).lower(), secret.group(1))
    if not found:
        raise BadInput(f'{label}: {path} holds no key statement (key "NAME" {{ algorithm ...; secret "..."; }};).',
                       hint="write it with `tsig-keygen -a hmac-sha256 NAME > FILE`.", code="rfc2136.key_file")
    if wanted is None and len(found) > 1:
        raise BadInput(f"{label}: {path} holds several keys ({', '.join(sorted(found))}); say which with key_name.",
                       code="rfc2136.key_file")
    name = wanted.rstrip(".") if wanted else next(iter(found))
    if name not in found:
        raise BadInput(f"{label}: {path} holds no key named {name} (it has {', '.join(sorted(found))}).",
                       code="rfc2136.key_file")
    algorithm, secret = found[name]
    return name, algorithm, secret


def split_server(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


class _TransferRefused(Exception):
    pass


class Rfc2136Dns(DnsService):
    """One zone's records through RFC 2136 updates and direct queries to its authoritative servers."""

    NAME = "the primary server"

    def __init__(self, *, label: str, server: str, port: int, keyring: dict, key_name: str,
                 check_servers: list[tuple[str, int]], managed: list[tuple[str, str]], timeout: float,
                 confirm_seconds: float = 300.0):
        self.label = label
        self.server, self.port = server, port
        self.keyring, self.key_name = keyring, key_name
        self.check_servers = check_servers
        self.managed = managed
        self.timeout = timeout
        self.confirm_seconds = confirm_seconds

    @staticmethod
    def _fqdn(zone: str, name: str) -> str:
        return f"{zone.rstrip('.')}." if name == "@" else f"{name}.{zone.rstrip('.')}."

    def _send(self, message, *, server: str | None = None, port: int | None = None, tcp: bool = True):
        import dns.query

        server, port = server or self.server, port or self.port
        if tcp:
            return self._guard(lambda: dns.query.tcp(message, server, port=port, timeout=self.timeout), server, port)
        return self._guard(lambda: dns.query.udp(message, server, port=port, timeout=self.timeout), server, port)

    def _guard(self, call, server: str | None = None, port: int | None = None):
        """Run one exchange; a rejected key or a silent server becomes a clear error (exit 5)."""
        import dns.exception
        import dns.tsig

        server, port = server or self.server, port or self.port
        try:
            return call()
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime,
                dns.tsig.PeerBadTruncation) as exc:
            why = {"PeerBadKey": "it does not know this key name", "PeerBadSignature": "the secret is wrong",
                   "PeerBadTime": "the clocks differ by more than the allowed fudge"}.get(type(exc).__name__, str(exc))
            raise ProviderUnreachable(f"{self.label}: the DNS server {server}:{port} rejects the TSIG key "
                                      f"{self.key_name} ({why}).",
                                      hint="check key_name, the key file or variable, and the server's key "
                                           "statement.", code="rfc2136.tsig") from None
        except (dns.exception.Timeout, OSError, EOFError, ConnectionError) as exc:
            raise ProviderUnreachable(f"{self.label}: the DNS server {server}:{port} does not answer "
                                      f"({exc.__class__.__name__}: {exc or 'timed out'}).",
                                      code="rfc2136.unreachable") from None

    def _query(self, zone: str, name: str, rtype: str, *, server: str | None = None, port: int | None = None,
               signed: bool = True):
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype

        request = dns.message.make_query(self._fqdn(zone, name), rtype)
        request.flags &= ~dns.flags.RD
        if signed:
            request.use_tsig(self.keyring, keyname=self.key_name)
        answer = self._send(request, server=server, port=port, tcp=signed)
        rcode = answer.rcode()
        where = f"{server or self.server}:{port or self.port}"
        if rcode == dns.rcode.REFUSED or (rcode == dns.rcode.NOERROR and not answer.flags & dns.flags.AA):
            raise ProviderError(f"{self.label}: {where} is not authoritative for {zone} "
                                f"({dns.rcode.to_text(rcode)}).", code="rfc2136.not_authoritative")
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ProviderError(f"{self.label}: {where} answers {dns.rcode.to_text(rcode)} for "
                                f"{self._fqdn(zone, name)} {rtype}.", code="rfc2136.query")
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rtype):
                return rrset
        return None

    def soa(self, zone: str) -> tuple[int, str]:
        rrset = self._query(zone, "@", "SOA")
        if rrset is None:
            raise ProviderError(f"{self.label}: {self.server}:{self.port} has no SOA for {zone}.",
                                code="rfc2136.not_authoritative")
        return rrset[0].serial, rrset[0].mname.to_text()

    def records(self, zone):
        """Every record of the zone by a signed zone transfer; where the server allows no transfer to this
        key, the names the stack manages, one signed query each."""
        try:
            return self._transfer(zone)
        except _TransferRefused:
            return self._managed_records(zone)

    def _transfer(self, zone: str) -> list[Record]:
        import dns.exception
        import dns.name
        import dns.query
        import dns.rdatatype
        import dns.xfr

        origin = dns.name.from_text(zone)
        found: dict[tuple[str, str], Record] = {}

        def run():
            for message in dns.query.xfr(self.server, origin, port=self.port, keyring=self.keyring,
                                         keyname=self.key_name, timeout=self.timeout, lifetime=self.timeout * 6):
                for rrset in message.answer:
                    rtype = dns.rdatatype.to_text(rrset.rdtype)
                    name = rrset.name.relativize(origin).to_text()
                    if name == "@" and rtype in ("SOA", "NS"):
                        continue  # the zone's own records belong to its operator
                    values = {r.to_text() for r in rrset}
                    if (name, rtype) in found:
                        values |= set(found[(name, rtype)].values)
                    found[(name, rtype)] = Record(name, rtype, rrset.ttl, tuple(sorted(values)))

        try:
            self._guard(run)
        except dns.xfr.TransferError as exc:
            raise _TransferRefused(str(exc)) from None
        except dns.exception.FormError as exc:
            raise _TransferRefused(str(exc)) from None
        return list(found.values())

    def _managed_records(self, zone: str) -> list[Record]:
        out = []
        for name, rtype in self.managed:
            rrset = self._query(zone, name, rtype)
            if rrset is not None:
                out.append(Record(name, rtype, rrset.ttl, tuple(sorted(r.to_text() for r in rrset))))
        return out

    def _update(self, zone: str, build) -> None:
        import dns.rcode
        import dns.update

        update = dns.update.Update(f"{zone.rstrip('.')}.", keyring=self.keyring, keyname=self.key_name)
        build(update)
        answer = self._send(update)
        rcode = answer.rcode()
        if rcode != dns.rcode.NOERROR:
            why = {dns.rcode.REFUSED: f"the server's allow-update / update-policy does not admit key {self.key_name}",
                   dns.rcode.NOTAUTH: "the server is not authoritative for the zone or rejects the key",
                   dns.rcode.NOTZONE: "a name is outside the zone",
                   dns.rcode.SERVFAIL: "the server could not apply it (see its log)"}.get(rcode, "")
            raise ProviderError(f"{self.label}: the update of {zone} was answered {dns.rcode.to_text(rcode)}"
                                + (f": {why}." if why else "."), code="rfc2136.update")

    def upsert(self, zone, record):
        self._update(zone, lambda u: u.replace(record.name, record.ttl, record.type, *record.values))

    def delete(self, zone, name, type):
        self._update(zone, lambda u: u.delete(name, type))

    def confirm(self, zone: str, record: Record, *, timeout: float | None = None) -> list[str]:
        """Poll every authoritative server until it answers ``record`` (values and TTL)."""
        timeout = self.confirm_seconds if timeout is None else timeout
        want = (record.ttl, tuple(sorted(record.values)))
        pending = list(self.check_servers)
        deadline = time.monotonic() + timeout
        confirmed, last = [], {}
        while pending:
            for server, port in list(pending):
                try:
                    rrset = self._query(zone, record.name, record.type, server=server, port=port, signed=False)
                except (ProviderError, ProviderUnreachable) as exc:
                    last[(server, port)] = exc.message
                    continue
                got = (rrset.ttl, tuple(sorted(r.to_text() for r in rrset))) if rrset is not None else None
                if got == want:
                    pending.remove((server, port))
                    confirmed.append(f"{server}:{port}")
                else:
                    last[(server, port)] = f"answers {got[1] if got else 'nothing'}" + \
                        (f" with TTL {got[0]}" if got else "")
            if pending and time.monotonic() > deadline:
                detail = "; ".join(f"{s}:{p} {last.get((s, p), 'no answer')}" for s, p in pending)
                raise ProviderError(f"{self.label}: {record.name}.{zone} {record.type} is not yet "
                                    f"{', '.join(record.values)} (TTL {record.ttl}) on every authoritative server "
                                    f"after {timeout:.0f} s: {detail}.",
                                    hint="a secondary that does not follow the primary (NOTIFY / zone transfer) "
                                         "keeps serving the old answer; check its transfer log.",
                                    code="rfc2136.not_confirmed")
            if pending:
                time.sleep(0.2)
        return confirmed
