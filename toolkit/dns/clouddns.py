"""DNS services over the JSON APIs of DigitalOcean (v2 domain records) and Hetzner (Cloud API zones and
RRsets), with a bearer token; record values as in a zone file; a change is done when the API reads it
back. The ``digitalocean-dns`` and ``hetzner-dns`` providers (providers/clouddns.py) give them their
settings."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from toolkit.contract import DnsService, Record
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable

ENV_NAME = r"[A-Z_][A-Z0-9_]*"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unquote_txt(value: str) -> str:
    """'"a b" "c"' -> 'a bc' (the strings of a TXT record joined, escapes undone)."""
    text = value.strip()
    if not text.startswith('"'):
        return text
    out, inside, escaped = [], False, False
    for ch in text:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\" and inside:
            escaped = True
        elif ch == '"':
            inside = not inside
        elif inside:
            out.append(ch)
    return "".join(out)


def _quote_txt(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class JsonApi:
    """Requests to one JSON API with a bearer token; failures become clear errors that name the API and
    never the token. 429 and 5xx answers are retried with a backoff."""

    def __init__(self, *, label: str, endpoint: str, token_env: str, timeout: float, retries: int = 4):
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BadInput(f"{label}: endpoint {endpoint!r} is not an http(s) URL.", code="clouddns.endpoint")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise BadInput(f"{label}: endpoint {endpoint} is plain http to another machine; the API token would "
                           "cross the network unencrypted.", hint="use https.", code="clouddns.endpoint")
        self.label, self.endpoint, self.token_env = label, endpoint.rstrip("/"), token_env
        self.timeout, self.retries = timeout, retries

    def _token(self) -> str:
        token = os.environ.get(self.token_env)
        if not token:
            raise BadInput(f"{self.label}: the environment variable {self.token_env} (the API token) is not set.",
                           hint="export it before running Lifeboat (its value is never printed).",
                           code="clouddns.token_missing")
        return token

    def call(self, method: str, path: str, body: Any = None, *, query: dict | None = None,
             missing_ok: bool = False) -> dict | None:
        """The decoded answer; None for 404 when ``missing_ok``."""
        import urllib.error
        import urllib.request

        url = self.endpoint + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - checked scheme
                    raw = answer.read()
                return json.loads(raw) if raw.strip() else {}
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                if status == 404 and missing_ok:
                    return None
                if (status == 429 or status >= 500) and attempt < self.retries:
                    wait = exc.headers.get("Retry-After") if exc.headers else None
                    time.sleep(min(float(wait), 10.0) if wait and wait.isdigit() else 0.5 * 2 ** attempt)
                    continue
                why = self._message(raw)
                where = f"{self.label}: {method} {path}"
                if status in (401, 403):
                    raise ProviderUnreachable(f"{where}: the API refuses the token in {self.token_env} "
                                              f"(HTTP {status}{': ' + why if why else ''}).",
                                              hint="check the token and its scopes (DNS read and write).",
                                              code="clouddns.auth") from None
                raise ProviderError(f"{where}: HTTP {status}{': ' + why if why else ''}.",
                                    code="clouddns.http") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                if attempt < self.retries:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise ProviderUnreachable(f"{self.label}: the API at {self.endpoint} does not answer ({reason}).",
                                          code="clouddns.unreachable") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _message(raw: bytes) -> str:
        try:
            found = json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")[:200]
        if isinstance(found, dict):
            error = found.get("error")
            if isinstance(error, dict):
                return str(error.get("message") or error.get("code") or "")
            return str(found.get("message") or found.get("id") or "")
        return ""


class CloudDns(DnsService):
    """What both APIs share: absolute targets, the zone's own records skipped, managed (name, type)."""

    def __init__(self, api: JsonApi, *, confirm_seconds: float):
        self.api = api
        self.confirm_seconds = confirm_seconds

    @staticmethod
    def absolute(zone: str, target: str) -> str:
        if target == "@":
            return f"{zone.rstrip('.')}."
        return target if target.endswith(".") else f"{target}."

    @staticmethod
    def own(name: str, rtype: str) -> bool:
        return name == "@" and rtype in ("SOA", "NS")


class DigitalOceanDns(CloudDns):
    """Domain records at DigitalOcean: one API record per value; a Lifeboat record is every API record of
    one (name, type), all with its TTL."""

    NAME = "DigitalOcean's DNS API"

    def _path(self, zone: str, suffix: str = "") -> str:
        return f"/v2/domains/{quote(zone.rstrip('.'), safe='')}/records{suffix}"

    def _api_records(self, zone: str) -> list[dict]:
        out, page = [], 1
        while True:
            found = self.api.call("GET", self._path(zone), query={"page": page, "per_page": 200})
            out.extend(found.get("domain_records") or [])
            if not ((found.get("links") or {}).get("pages") or {}).get("next"):
                return out
            page += 1

    def _value(self, zone: str, item: dict) -> str:
        rtype, data = item["type"], str(item.get("data") or "")
        if rtype in ("CNAME", "NS"):
            return self.absolute(zone, data)
        if rtype == "MX":
            return f"{int(item.get('priority') or 0)} {self.absolute(zone, data)}"
        if rtype == "TXT":
            return _quote_txt(data)
        if rtype == "CAA":
            return f'{int(item.get("flags") or 0)} {item.get("tag") or ""} {_quote_txt(data)}'
        return data

    def _body(self, record: Record, value: str) -> dict:
        body: dict[str, Any] = {"type": record.type, "name": record.name, "ttl": record.ttl}
        if record.type == "MX":
            priority, _, target = value.partition(" ")
            body.update(priority=int(priority), data=target.strip())
        elif record.type == "TXT":
            body["data"] = _unquote_txt(value)
        elif record.type == "CAA":
            flags, tag, rest = value.split(None, 2)
            body.update(flags=int(flags), tag=tag, data=_unquote_txt(rest))
        else:
            body["data"] = value
        return body

    def records(self, zone):
        grouped: dict[tuple[str, str], list[dict]] = {}
        for item in self._api_records(zone):
            if not self.own(item["name"], item["type"]):
                grouped.setdefault((item["name"], item["type"]), []).append(item)
        return [Record(name, rtype, min(int(i.get("ttl") or 0) for i in items),
                       tuple(sorted(self._value(zone, i) for i in items)))
                for (name, rtype), items in sorted(grouped.items())]

    def upsert(self, zone, record):
        """Existing records of the name and type are rewritten in place first, then missing values are
        added, then surplus ones removed: the name never answers nothing on the way."""
        have = [i for i in self._api_records(zone) if (i["name"], i["type"]) == (record.name, record.type)]
        values = sorted(record.values)
        keep = {value: i for value, i in ((self._value(zone, i), i) for i in have) if value in values}
        kept = {i["id"] for i in keep.values()}
        rest = [i for i in have if i["id"] not in kept]
        for value in values:
            item = keep.get(value)
            if item is not None:
                if int(item.get("ttl") or 0) != record.ttl:
                    self.api.call("PUT", self._path(zone, f"/{int(item['id'])}"), self._body(record, value))
            elif rest:
                self.api.call("PUT", self._path(zone, f"/{int(rest.pop(0)['id'])}"), self._body(record, value))
            else:
                self.api.call("POST", self._path(zone), self._body(record, value))
        for item in rest:
            self.api.call("DELETE", self._path(zone, f"/{int(item['id'])}"), missing_ok=True)

    def delete(self, zone, name, type):
        for item in self._api_records(zone):
            if (item["name"], item["type"]) == (name, type):
                self.api.call("DELETE", self._path(zone, f"/{int(item['id'])}"), missing_ok=True)


class HetznerDns(CloudDns):
    """RRsets of a primary zone in the Hetzner Cloud API; changes are actions, waited for until they end."""

    NAME = "Hetzner's DNS API"

    def _zone(self, zone: str) -> str:
        return quote(zone.rstrip("."), safe="")

    def _wait(self, answer: dict | None) -> None:
        action = (answer or {}).get("action")
        deadline = time.monotonic() + max(self.confirm_seconds, 30)
        while action and action.get("status") == "running":
            if time.monotonic() > deadline:
                raise ProviderError(f"{self.api.label}: action {action.get('command')} {action.get('id')} is "
                                    "still running.", code="clouddns.action")
            time.sleep(0.2)
            action = (self.api.call("GET", f"/actions/{int(action['id'])}") or {}).get("action")
        if action and action.get("status") == "error":
            error = action.get("error") or {}
            raise ProviderError(f"{self.api.label}: action {action.get('command')} failed: "
                                f"{error.get('message') or error.get('code') or 'error'}.", code="clouddns.action")

    def _default_ttl(self, zone: str) -> int:
        found = self.api.call("GET", f"/zones/{self._zone(zone)}")
        return int((found.get("zone") or {}).get("ttl") or 3600)

    def records(self, zone):
        out, page, default = [], 1, None
        while True:
            found = self.api.call("GET", f"/zones/{self._zone(zone)}/rrsets", query={"page": page, "per_page": 100})
            for rrset in found.get("rrsets") or []:
                name, rtype = rrset["name"], rrset["type"]
                if self.own(name, rtype):
                    continue
                ttl = rrset.get("ttl")
                if ttl is None:
                    default = default if default is not None else self._default_ttl(zone)
                    ttl = default
                out.append(Record(name, rtype, int(ttl), tuple(sorted(str(r["value"])
                                                                      for r in rrset.get("records") or []))))
            if not ((found.get("meta") or {}).get("pagination") or {}).get("next_page"):
                return out
            page += 1

    def _rrset_path(self, zone: str, name: str, rtype: str) -> str:
        return f"/zones/{self._zone(zone)}/rrsets/{quote(name, safe='@')}/{quote(rtype, safe='')}"

    def upsert(self, zone, record):
        path = self._rrset_path(zone, record.name, record.type)
        records = [{"value": v} for v in sorted(record.values)]
        found = self.api.call("GET", path, missing_ok=True)
        if found is None:
            self._wait(self.api.call("POST", f"/zones/{self._zone(zone)}/rrsets",
                                     {"name": record.name, "type": record.type, "ttl": record.ttl,
                                      "records": records}))
            return
        rrset = found.get("rrset") or {}
        if rrset.get("ttl") != record.ttl:  # the new TTL first: resolvers never cache new values for long
            self._wait(self.api.call("POST", path + "/actions/change_ttl", {"ttl": record.ttl}))
        if sorted(str(r["value"]) for r in rrset.get("records") or []) != sorted(record.values):
            self._wait(self.api.call("POST", path + "/actions/set_records", {"records": records}))

    def delete(self, zone, name, type):
        self._wait(self.api.call("DELETE", self._rrset_path(zone, name, type), missing_ok=True))
