"""``rfc2136``: DNS only. Records on any authoritative server that takes RFC 2136 dynamic updates signed
with TSIG (BIND 9, Knot, PowerDNS), independent of where the stack runs.

A stack names such a target under ``dns: provider:``; it cannot run services (``up --on`` it is refused).

- Updates go to the primary (``server``/``port``) over TCP, signed with the TSIG key; the key comes from a
  BIND key file (what ``tsig-keygen`` writes) or from an environment variable, and never reaches argv, logs
  or journals.
- ``records()`` asks the primary for the names the stack manages (signed queries over TCP), so no zone
  transfer permission is needed.
- ``confirm()`` asks every server in ``check_servers`` (default: the primary) directly, without recursion,
  until each answers the new values and TTL: the change is live on the authoritative servers, not only
  accepted by the primary. Secondaries that follow the primary by NOTIFY and zone transfer are listed there.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from toolkit.config.schema import Field, Int, ListOf, Str
from toolkit.contract import DnsOnlyProvider
from toolkit.dns.rfc2136 import ALGORITHMS, SERVER, Rfc2136Dns, parse_key_file, split_server
from toolkit.errors import BadInput


def check_settings(settings: dict, where, report, raw: Any) -> None:
    """Exactly one source for the TSIG key: a key file, or a name plus an environment variable."""
    has_file, has_env = settings.get("key_file") is not None, settings.get("key_secret_env") is not None
    if has_file == has_env:
        report.add(where, 'needs exactly one TSIG key source: "key_file" (a BIND key file, as tsig-keygen '
                          'writes) or "key_secret_env" (an environment variable holding the base64 secret) with '
                          '"key_name".')
    elif has_env and settings.get("key_name") is None:
        report.add(where, '"key_secret_env" needs "key_name", the name the server knows the key by.')


class Rfc2136Provider(DnsOnlyProvider):
    TYPE = "rfc2136"
    DESCRIPTION = "DNS only: RFC 2136 dynamic updates signed with TSIG to any authoritative server (BIND, Knot, ...)"
    FEATURES = {"confirm_on_authoritative": True}
    SETTINGS = {
        "server": Field(Str(pattern=SERVER, expected="the primary server's address (host or IP, optional :port)"),
                        required=True),
        "port": Field(Int(min=1, max=65535), default=53),
        "key_file": Field(Str(expected="a BIND key file (tsig-keygen output)")),
        "key_name": Field(Str(pattern=r"[A-Za-z0-9._-]+\.?", expected="a TSIG key name")),
        "key_algorithm": Field(Str(choices=ALGORITHMS), default="hmac-sha256"),
        "key_secret_env": Field(Str(pattern=r"[A-Z_][A-Z0-9_]*", expected="an environment variable name")),
        "check_servers": Field(ListOf(Str(pattern=SERVER, expected="an authoritative server (host or IP, :port)"),
                                      min_items=1, unique=True),
                               doc="servers that must answer a change before it counts as done; default the primary"),
        "timeout": Field(Int(min=1, max=120), default=10),
        "confirm_seconds": Field(Int(min=1, max=3600), default=300),
    }
    check_settings = staticmethod(check_settings)

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self._dns: Rfc2136Dns | None = None

    def _keyring(self) -> tuple[dict, str]:
        import dns.name
        import dns.tsig

        s = self.settings
        if s.get("key_file"):
            path = (self.stack.root / Path(s["key_file"]).expanduser()).resolve()
            name, algorithm, secret = parse_key_file(path, s.get("key_name"), self.label)
        else:
            import os

            name, algorithm = s["key_name"].rstrip("."), s.get("key_algorithm") or "hmac-sha256"
            secret = os.environ.get(s["key_secret_env"])
            if not secret:
                raise BadInput(f"{self.label}: the environment variable {s['key_secret_env']} (the TSIG secret) is "
                               "not set.", hint="export it before running Lifeboat (its value is never printed).",
                               code="rfc2136.key_missing")
        if algorithm not in ALGORITHMS:
            raise BadInput(f"{self.label}: TSIG algorithm {algorithm} is not supported (use one of "
                           f"{', '.join(ALGORITHMS)}).", code="rfc2136.algorithm")
        try:
            raw = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"{self.label}: the TSIG secret of key {name} is not base64.",
                           code="rfc2136.key_secret") from None
        key_name = dns.name.from_text(name)
        return {key_name: dns.tsig.Key(key_name, raw, algorithm)}, name

    def dns(self) -> Rfc2136Dns:
        if self._dns is None:
            server, port = split_server(self.settings["server"], self.settings.get("port") or 53)
            checks = [split_server(x, 53) for x in self.settings.get("check_servers") or []] or [(server, port)]
            managed = [(r.name, r.type) for r in (self.stack.dns.records if self.stack.dns else ())]
            keyring, name = self._keyring()
            self._dns = Rfc2136Dns(label=self.label, server=server, port=port, keyring=keyring, key_name=name,
                                   check_servers=checks, managed=managed,
                                   timeout=float(self.settings.get("timeout") or 10),
                                   confirm_seconds=float(self.settings.get("confirm_seconds") or 300))
        return self._dns

    def check(self) -> dict:
        service = self.dns()
        zone = self.stack.dns.zone if self.stack.dns else None
        out: dict = {"server": f"{service.server}:{service.port}", "key": service.key_name,
                     "check_servers": [f"{s}:{p}" for s, p in service.check_servers]}
        if zone:  # a signed query: a wrong key is refused here, before anything else runs
            serial, primary = service.soa(zone)
            out.update(zone=zone, serial=serial, primary=primary)
        return out
