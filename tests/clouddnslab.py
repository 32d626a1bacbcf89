"""FAKES of two cloud DNS APIs, because the real ones cannot be reached from CI: DigitalOcean's v2 domain
records and the Hetzner Cloud API's zones and RRsets, as their documentation and official clients
describe them (bearer token, JSON bodies and errors, paging, Hetzner's asynchronous actions). Only the
calls Lifeboat makes are served. They are a stand-in for the clouds, named as such wherever they are used:
passing against them shows Lifeboat speaks the documented API, not that the clouds accept it.

Both keep their state in memory, serve on 127.0.0.1 (port 0: any free one), and page lists in twos so
paging is always exercised. Hetzner's actions finish ``action_seconds`` after they start and only then
change the zone: a client that does not wait for them reads the old records.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

PAGE = 2


class _Fake:
    def __init__(self, token: str):
        self.token = token
        self.lock = threading.Lock()
        self.ids = itertools.count(1001)
        self.requests: list[tuple[str, str]] = []
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, query: dict, body):  # -> (status, dict | None)
        raise NotImplementedError

    def unauthorized(self):
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    fake: _Fake

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.fake.lock:
            self.fake.requests.append((method, parts.path))
            if self.headers.get("Authorization") != f"Bearer {self.fake.token}":
                status, answer = self.fake.unauthorized()
            else:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = "not json"
                status, answer = self.fake.handle(method, unquote(parts.path), parse_qs(parts.query), body)
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def log_message(self, *args):
        pass


def _page(items: list, query: dict) -> tuple[list, int, bool]:
    page = int((query.get("page") or ["1"])[0])
    per_page = min(int((query.get("per_page") or ["20"])[0]), PAGE)
    start = (page - 1) * per_page
    return items[start:start + per_page], page, start + per_page < len(items)


class FakeDigitalOcean(_Fake):
    """FAKE of DigitalOcean's /v2/domains/{domain}/records (one record per value; minimum TTL 30)."""

    def __init__(self, token: str, zones: list[str]):
        super().__init__(token)
        self.domains: dict[str, list[dict]] = {}
        for zone in zones:
            self.domains[zone] = [
                {"id": next(self.ids), "type": "SOA", "name": "@", "data": "1800", "ttl": 1800},
                *({"id": next(self.ids), "type": "NS", "name": "@", "data": f"ns{i}.digitalocean.com", "ttl": 1800}
                  for i in (1, 2, 3)),
            ]

    def unauthorized(self):
        return 401, {"id": "Unauthorized", "message": "Unable to authenticate you"}

    def view(self, zone: str) -> dict[tuple[str, str], tuple[int, list[str]]]:
        """The zone as the fake holds it: (name, type) -> (TTL, sorted data), SOA/NS left out."""
        out: dict = {}
        with self.lock:
            for r in self.domains[zone]:
                if r["type"] in ("SOA", "NS"):
                    continue
                ttl, values = out.get((r["name"], r["type"]), (r["ttl"], []))
                out[(r["name"], r["type"])] = (min(ttl, r["ttl"]), sorted([*values, r["data"]]))
        return out

    def handle(self, method, path, query, body):
        found = re.fullmatch(r"/v2/domains/([^/]+)/records(?:/(\d+))?", path)
        missing = 404, {"id": "not_found", "message": "The resource you were accessing could not be found."}
        if not found or found.group(1) not in self.domains:
            return missing
        records, rid = self.domains[found.group(1)], found.group(2)
        if method == "GET" and rid is None:
            items, page, more = _page(records, query)
            links = {"pages": {"next": f"/v2/domains/{found.group(1)}/records?page={page + 1}"}} if more else {}
            return 200, {"domain_records": items, "links": links, "meta": {"total": len(records)}}
        if method == "POST" and rid is None:
            problem = self._invalid(body)
            if problem:
                return 422, {"id": "unprocessable_entity", "message": problem}
            record = {"id": next(self.ids), **{k: body.get(k) for k in ("type", "name", "data", "ttl", "priority",
                                                                         "flags", "tag")}}
            records.append(record)
            return 201, {"domain_record": record}
        target = next((r for r in records if str(r["id"]) == rid), None)
        if target is None:
            return missing
        if method == "PUT":
            problem = self._invalid(body)
            if problem:
                return 422, {"id": "unprocessable_entity", "message": problem}
            target.update({k: body[k] for k in ("type", "name", "data", "ttl", "priority", "flags", "tag")
                           if k in body})
            return 200, {"domain_record": target}
        if method == "DELETE":
            records.remove(target)
            return 204, None
        return 405, {"id": "method_not_allowed", "message": method}

    @staticmethod
    def _invalid(body) -> str:
        if not isinstance(body, dict) or not body.get("type") or not body.get("name") or body.get("data") is None:
            return "type, name and data are required"
        if not isinstance(body.get("ttl"), int) or body["ttl"] < 30:
            return "ttl must be at least 30"
        if body["type"] == "A" and not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", str(body["data"])):
            return "data is not an IPv4 address"
        if body["type"] == "MX" and not isinstance(body.get("priority"), int):
            return "priority is required for MX"
        return ""


class FakeHetzner(_Fake):
    """FAKE of the Hetzner Cloud API's /zones/{zone}/rrsets and /actions (asynchronous changes)."""

    def __init__(self, token: str, zones: list[str], *, action_seconds: float = 0.3):
        super().__init__(token)
        self.action_seconds = action_seconds
        self.zones: dict[str, dict] = {}
        self.actions: dict[int, dict] = {}
        for zone in zones:
            rrsets = {("@", "SOA"): {"ttl": None, "records": [{"value": "hydrogen.ns.hetzner.com. dns.hetzner.com. "
                                                                       "1 86400 10800 3600000 3600"}]},
                      ("@", "NS"): {"ttl": None, "records": [{"value": f"{n}.ns.hetzner.com."}
                                                             for n in ("hydrogen", "oxygen", "helium")]}}
            self.zones[zone] = {"zone": {"id": next(self.ids), "name": zone, "mode": "primary", "ttl": 3600},
                                "rrsets": rrsets}

    def unauthorized(self):
        return 401, {"error": {"code": "unauthorized", "message": "unable to authenticate"}}

    def view(self, zone: str) -> dict[tuple[str, str], tuple[int | None, list[str]]]:
        with self.lock:
            self._settle()
            return {k: (v["ttl"], sorted(r["value"] for r in v["records"]))
                    for k, v in self.zones[zone]["rrsets"].items() if k[1] not in ("SOA", "NS")}

    def _settle(self) -> None:
        now = time.monotonic()
        for action in self.actions.values():
            if action["status"] == "running" and now >= action["due"]:
                action["apply"]()
                action["status"] = "success"

    def _action(self, command: str, apply) -> dict:
        aid = next(self.ids)
        self.actions[aid] = {"id": aid, "command": command, "status": "running", "apply": apply,
                             "due": time.monotonic() + self.action_seconds}
        return self._shown(self.actions[aid])

    @staticmethod
    def _shown(action: dict) -> dict:
        return {"id": action["id"], "command": action["command"], "status": action["status"], "progress": 0,
                "error": None}

    @staticmethod
    def _rrset(zone: dict, key, value) -> dict:
        return {"id": f"{key[0]}/{key[1]}", "name": key[0], "type": key[1], "ttl": value["ttl"],
                "records": value["records"], "zone": zone["zone"]["id"], "protection": {"change": False},
                "labels": {}}

    def handle(self, method, path, query, body):
        self._settle()
        missing = 404, {"error": {"code": "not_found", "message": "resource not found"}}
        found = re.fullmatch(r"/actions/(\d+)", path)
        if found:
            action = self.actions.get(int(found.group(1)))
            return (200, {"action": self._shown(action)}) if action else missing
        found = re.fullmatch(r"/zones/([^/]+)(/rrsets(?:/([^/]+)/([A-Z]+)(/actions/(\w+))?)?)?", path)
        if not found:
            return missing
        zone = next((z for z in self.zones.values() if found.group(1) in (z["zone"]["name"], str(z["zone"]["id"]))),
                    None)
        if zone is None:
            return missing
        rrsets = zone["rrsets"]
        if found.group(2) is None:
            return (200, {"zone": zone["zone"]}) if method == "GET" else (405, None)
        if found.group(3) is None:
            if method == "GET":
                items, page, more = _page([self._rrset(zone, k, v) for k, v in sorted(rrsets.items())], query)
                return 200, {"rrsets": items, "meta": {"pagination": {
                    "page": page, "per_page": PAGE, "previous_page": page - 1 or None,
                    "next_page": page + 1 if more else None, "total_entries": len(rrsets)}}}
            if method == "POST":
                key = (body.get("name"), body.get("type"))
                if key in rrsets:
                    return 409, {"error": {"code": "uniqueness_error", "message": "rrset already exists"}}
                value = {"ttl": body.get("ttl"), "records": [{"value": r["value"]} for r in body.get("records", [])]}
                action = self._action("create_rrset", lambda: rrsets.__setitem__(key, value))
                return 201, {"rrset": self._rrset(zone, key, value), "action": action}
            return 405, None
        key = (found.group(3), found.group(4))
        if key not in rrsets:
            return missing
        verb = found.group(6)
        if verb is None and method == "GET":
            return 200, {"rrset": self._rrset(zone, key, rrsets[key])}
        if verb is None and method == "DELETE":
            return 200, {"action": self._action("delete_rrset", lambda: rrsets.pop(key, None))}
        if verb == "set_records" and method == "POST":
            records = [{"value": r["value"]} for r in body["records"]]
            return 201, {"action": self._action("set_rrset_records",
                                                lambda: rrsets[key].__setitem__("records", records))}
        if verb == "change_ttl" and method == "POST":
            ttl = body["ttl"]
            return 201, {"action": self._action("change_rrset_ttl", lambda: rrsets[key].__setitem__("ttl", ttl))}
        return 405, None
