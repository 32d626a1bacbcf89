"""The plan: desired resources against observed ones, as data. Pure: no I/O, no provider calls.

Order matters: secrets, then the infrastructure a cloud provisions (Terraform), then data services come before the services that use them, DNS last; deletion
runs in the reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.config.model import Stack
from toolkit.contract import Resource, SecretValue

KIND_ORDER = ["secret", "infra", "database", "cache", "bucket", "media", "service", "proxy", "record"]
REDACTED = "<redacted>"


def stack_resources(stack: Stack) -> list[Resource]:
    """What the stack asks for, before a provider fills in its own attributes."""
    out: list[Resource] = []
    if stack.postgres:
        pg = stack.postgres
        out.append(Resource("database", pg.database, {"version": pg.version, "extensions": sorted(pg.extensions)}))
    if stack.redis is not None:
        out.append(Resource("cache", "redis", {}))
    for bucket in stack.buckets.values():
        out.append(Resource("bucket", bucket.name, {"public": bucket.public, "versioned": bucket.versioned}))
    for svc in stack.services.values():
        out.append(Resource("service", svc.name, {"role": svc.role, "replicas": svc.replicas}))
    return out


def shown(value: Any) -> Any:
    if isinstance(value, SecretValue):
        return REDACTED
    return value


@dataclass
class Change:
    action: str  # create | update | delete | noop | skip
    kind: str
    name: str
    before: Resource | None = None
    after: Resource | None = None
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"

    def diff(self) -> dict[str, dict[str, Any]]:
        old = self.before.attrs if self.before else {}
        new = self.after.attrs if self.after else {}
        out = {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out[key] = {"before": shown(old.get(key)), "after": shown(new.get(key))}
        return out

    def as_dict(self) -> dict:
        return {"action": self.action, "kind": self.kind, "name": self.name, "changes": self.diff(),
                "reason": self.reason or None}


@dataclass
class Plan:
    target: str
    changes: list[Change] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("create", "update", "delete")]

    @property
    def has_changes(self) -> bool:
        return bool(self.pending)

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "noop": 0, "skip": 0}
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def as_dict(self) -> dict:
        return {"target": self.target, "changes": [c.as_dict() for c in self.changes], "summary": self.summary()}


def order_key(change: Change) -> tuple[int, str]:
    return (KIND_ORDER.index(change.kind) if change.kind in KIND_ORDER else len(KIND_ORDER), change.name)


def compute(target: str, desired: list[Resource], observed: list[Resource], *,
            keep: set[str] | None = None) -> Plan:
    """Changes that turn ``observed`` into ``desired``.

    Observed resources the stack no longer wants are deleted, except kinds listed in ``keep`` (whose
    extra resources are left alone and shown as "skip")."""
    keep = keep or set()
    seen = {r.id: r for r in observed}
    wanted = {r.id: r for r in desired}
    changes: list[Change] = []
    for rid, res in wanted.items():
        now = seen.get(rid)
        if now is None:
            changes.append(Change("create", res.kind, res.name, None, res))
        elif _differs(now, res):
            changes.append(Change("update", res.kind, res.name, now, res))
        else:
            changes.append(Change("noop", res.kind, res.name, now, res))
    deletions = []
    for rid, res in seen.items():
        if rid in wanted:
            continue
        if res.kind in keep:
            deletions.append(Change("skip", res.kind, res.name, res, None, "not in the stack; left alone"))
        else:
            deletions.append(Change("delete", res.kind, res.name, res, None, "no longer in the stack"))
    changes.sort(key=order_key)
    deletions.sort(key=order_key, reverse=True)
    return Plan(target, deletions + changes)


def destroy(target: str, observed: list[Resource]) -> Plan:
    changes = [Change("delete", r.kind, r.name, r, None, "destroy") for r in observed]
    changes.sort(key=order_key, reverse=True)
    return Plan(target, changes)


def _differs(now: Resource, want: Resource) -> bool:
    """Only attributes the desired side names are compared; observed extras do not count."""
    return any(now.attrs.get(k) != v for k, v in want.attrs.items())
