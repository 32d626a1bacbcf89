"""The engine: stack + provider -> plan -> applied changes, status, destroy.

It never prints: it reports through an :class:`Events` object the CLI supplies. Providers do the I/O;
secrets and DNS records are handled here through the providers' SecretStore and DnsService, so every
provider gets the same behaviour.
"""

from __future__ import annotations

import getpass
import os
import secrets as pysecrets
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass

from toolkit.config.model import Stack
from toolkit.contract import Provider, Record, Resource, SecretValue, Unsupported, registry
from toolkit.errors import (
    BadInput,
    ManyProblems,
    Problem,
    ProviderError,
    ProviderUnreachable,
    ToolkitError,
    Warned,
)
from toolkit.plan import planner
from toolkit.run.events import Events


@dataclass
class Applied:
    plan: planner.Plan
    seconds: float
    applied: list[dict]
    warnings: list[str]


def operator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def operator_secret(ref) -> SecretValue:
    """The value of a secret the operator holds (``from: env`` or ``from: file``)."""
    if ref.source == "env":
        value = os.environ.get(ref.var)
        if value is None:
            raise BadInput(f'secret {ref.name}: the environment variable {ref.var} is not set.',
                           hint=f"export {ref.var} before running Lifeboat (its value is never printed).",
                           code="secret.missing")
        return SecretValue(value)
    try:
        return SecretValue(ref.path.read_bytes().rstrip(b"\n"))
    except OSError as exc:
        raise BadInput(f"secret {ref.name}: cannot read {ref.path} ({exc.strerror}).",
                       code="secret.missing") from None


def missing_operator_secrets(stack: Stack, *, backup_key: bool = True) -> list[Problem]:
    """Every secret the operator gives (from: env, from: file) that this machine does not have now, each a
    problem naming it and where it should come from (``backup_key``: the backup key too)."""
    out = []
    for ref in stack.secrets.values():
        if ref.source not in ("env", "file") or (ref.name == stack.backup_key and not backup_key):
            continue
        try:
            operator_secret(ref)
        except BadInput as exc:
            out.append(Problem("secret.missing", exc.message, exc.hint, file=str(stack.path),
                               key=f"secrets.{ref.name}"))
    return out


class Engine:
    def __init__(self, stack: Stack, events: Events | None = None):
        self.stack = stack
        self.events = events or Events()
        self._providers: dict[str, Provider] = {}

    # ------------------------------------------------------------------ providers
    def provider(self, name: str) -> Provider:
        if name not in self.stack.targets:
            raise BadInput(f'no target "{name}" under providers: in {self.stack.path.name}.',
                           hint=f"targets: {', '.join(self.stack.targets)}.", code="target.unknown")
        if name not in self._providers:
            target = self.stack.targets[name]
            provider = registry.load(target.type)(self.stack, target)
            provider.events = self.events
            self._providers[name] = provider
        return self._providers[name]

    def runner(self, name: str, *, change: bool = False) -> Provider:
        """The provider of a target that can run the stack (not a DNS-only one). ``change``: the caller will
        deploy, restore or destroy there, which a deployment Lifeboat did not make refuses (exit 2)."""
        provider = self.provider(name)
        if "compute" not in provider.SERVICES:
            raise BadInput(f'target "{name}" ({provider.TYPE}) only offers {", ".join(sorted(provider.SERVICES))}; '
                           "it cannot run the stack.",
                           hint="name it under dns: provider: and deploy on another target.", code="target.not_runnable")
        if change and provider.supports("adopted"):
            raise provider.refuse()
        return provider

    def preflight(self, name: str, *, fresh: bool = False, planning: bool = False) -> dict:
        """The target's preflight. ``fresh``: through a new provider instance (new connections), to learn
        whether it answers now rather than reuse a connection that may have died. What the target lacks for
        the stack (``unavailable``: an emulator without RDS, say) stops everything but a plan (``planning``),
        which computes its changes all the same and lists them as warnings (``facts["warnings"]``)."""
        provider = self.provider(name)
        if fresh:
            provider = type(provider)(self.stack, provider.target)
        try:
            facts = provider.check()
        except ToolkitError:
            raise
        except OSError as exc:
            raise ProviderUnreachable(f"{provider.label}: {exc}") from None
        lacking = facts.pop("unavailable", None) or []
        if lacking and not planning:
            first = lacking[0]
            raise ProviderUnreachable(first.message, hint=first.hint, code=first.code)
        if lacking:
            facts["warnings"] = [Warned(f"{e.message} (`plan` goes on; `up` stops here.)"
                                        + (f" Hint: {e.hint}" if e.hint else ""), e.code) for e in lacking]
        return facts

    # ------------------------------------------------------------------ plan
    def plan(self, on: str, *, take_dns: bool = False, warnings: list[str] | None = None,
             records: bool = True) -> planner.Plan:
        """What ``up`` would change on ``on``. ``records=False`` leaves DNS out (not even read: a failover
        deploys while the DNS provider may be the host that is gone)."""
        provider = self.runner(on)
        warnings = warnings if warnings is not None else []
        if provider.supports("adopted"):
            return self._adopted_plan(on, provider, warnings)
        secret_changes = self._secret_changes(provider)
        values = {c.name: c.after.attrs["value"] for c in secret_changes}
        desired = provider.desired(planner.stack_resources(self.stack), values)
        observed = self._observed(provider)
        plan = planner.compute(on, desired, observed)
        plan.changes[:0] = secret_changes
        if records:
            plan.changes.extend(self._record_changes(provider, take_dns, warnings))
        if self.stack.tls is not None and self.stack.web_services() and not provider.supports("tls"):
            warnings.append(Warned(f"tls: is not applied on {provider.label}, which runs no TLS proxy: its web "
                                   "services answer plain HTTP there.", "plan.tls_unsupported"))
        served = sorted(s.name for s in self.stack.services.values() if s.serve)
        if served and not (self.stack.tls and provider.supports("tls")):
            warnings.append(Warned(f"serve: of {', '.join(served)} is answered by the TLS proxy, which {provider.label} "
                                   "runs only with tls: (and on hosts); here those paths reach the app, which must "
                                   "serve them.", "plan.serve_without_proxy"))
        plan.changes.sort(key=lambda c: (c.action != "delete", planner.order_key(c)))
        return plan

    def _adopted_plan(self, on: str, provider: Provider, warnings: list[str]) -> planner.Plan:
        """What a deployment Lifeboat did not make holds, as found (nothing is ever planned there), and what
        of the stack it lacks as warnings."""
        found = self._observed(provider)
        store = provider.secrets()
        found += [Resource("secret", n, {"value": store.read(n)}) for n in store.names()]
        plan = planner.Plan(on, [planner.Change("noop", r.kind, r.name, r, r) for r in found])
        have = {r.id for r in found}
        wanted = planner.stack_resources(self.stack) + [Resource("secret", n) for n in self.stack.secrets]
        warnings += [Warned(f"{r.kind} {r.name} of the stack was not found on {provider.label}", "adopted.missing")
                     for r in wanted if r.id not in have]
        warnings += [Warned(f"{r.kind} {r.name} on {provider.label} is not running", "adopted.not_running")
                     for r in found if r.attrs.get("running") is False]
        warnings += [Warned(f"{i.service}.{i.replica} on {provider.label} is not healthy ({i.url})",
                            "adopted.unhealthy") for i in provider.compute().instances() if not i.healthy]
        return plan

    def _observed(self, provider: Provider) -> list[Resource]:
        """What the provider observes, less the backup repository's bucket: not the stack's to plan or
        destroy (`destroy --delete-backups` removes it with everything else)."""
        kept = self.stack.backup.repository_bucket if self.stack.backup else None
        return [r for r in provider.observe() if not (r.kind == "bucket" and r.name == kept)]

    def holds_backups(self, on: str) -> bool:
        """Whether the target's object store holds this stack's backup repository."""
        backup = self.stack.backup
        provider = self.provider(on)
        if backup is None or "objects" not in provider.SERVICES:
            return False
        try:
            return provider.objects().head(backup.repository_bucket, f"{self.stack.name}/repository.json") is not None
        except ProviderError as exc:
            if exc.code == "objects.no_bucket":
                return False
            raise

    def keep_backups(self, on: str, delete_backups: bool) -> None:
        """Refuse (exit 2) to destroy a target that keeps the stack's backups unless told to."""
        if not delete_backups and self.holds_backups(on):
            raise BadInput(f"{self.provider(on).label} keeps the backups of stack {self.stack.name} (bucket "
                           f"{self.stack.backup.repository_bucket}); destroying it would delete them. Nothing was "
                           "changed.", hint="move backup: to: elsewhere and back up there first, or pass "
                           "--delete-backups.", code="destroy.holds_backups")

    def _secret_changes(self, provider: Provider) -> list[planner.Change]:
        refs = [ref for ref in self.stack.secrets.values() if ref.name != self.stack.backup_key]
        if not refs:
            return []
        missing = missing_operator_secrets(self.stack, backup_key=False)
        if missing:  # every one of them, not the first
            raise ManyProblems(missing, code="secret.missing")
        store = provider.secrets()
        changes = []
        for ref in refs:
            current = store.read(ref.name)
            now = Resource("secret", ref.name, {"value": current}) if current is not None else None
            if ref.source in ("env", "file"):
                want = operator_secret(ref)
            elif ref.source == "store":
                if current is None:
                    raise BadInput(f"secret {ref.name} comes from the secret store of {provider.label}, "
                                   "which does not hold it.", hint=f"`lifeboat secrets set --on {provider.target.name} "
                                   f"{ref.name}` (the value from stdin), or take it from env:/file:.",
                                   code="secret.missing")
                want = current
            else:  # generate: made once, then kept
                want = current if current is not None else SecretValue(pysecrets.token_urlsafe(ref.length))
            after = Resource("secret", ref.name, {"value": want})
            if now is None:
                changes.append(planner.Change("create", "secret", ref.name, None, after))
            elif current != want:
                changes.append(planner.Change("update", "secret", ref.name, now, after))
            else:
                changes.append(planner.Change("noop", "secret", ref.name, now, after))
        return changes

    def dns_provider(self) -> Provider | None:
        if not self.stack.dns:
            return None
        return self.provider(self.stack.dns.provider)

    def _record_changes(self, provider: Provider, take_dns: bool, warnings: list[str]) -> list[planner.Change]:
        dns = self.stack.dns
        if not dns or not dns.records:
            return []
        existing = {(r.name, r.type): r for r in self.dns_provider().dns().records(dns.zone)}
        changes = []
        for rec in dns.records:
            if rec.target:
                try:
                    values = tuple(sorted(provider.compute().addresses(rec.target)))
                except Unsupported:
                    continue
            else:
                values = tuple(rec.values)
            name = f"{rec.name} {rec.type}"
            after = Resource("record", name, {"ttl": rec.ttl, "values": list(values)})
            now = existing.get((rec.name, rec.type))
            if now is None:
                changes.append(planner.Change("create", "record", name, None, after))
                continue
            before = Resource("record", name, {"ttl": now.ttl, "values": list(now.values)})
            if list(now.values) == list(values):
                action = "noop" if now.ttl == rec.ttl else "update"
                changes.append(planner.Change(action, "record", name, before, after))
            elif take_dns or not rec.target:
                changes.append(planner.Change("update", "record", name, before, after, "switching traffic"))
            else:
                warnings.append(Warned(f"DNS {name} in {dns.zone} points at {', '.join(now.values)}, not at "
                                       f"{provider.label}; left alone (traffic moves with `lifeboat migrate`, or "
                                       "`up --take-dns`).", "dns.points_elsewhere"))
                changes.append(planner.Change("skip", "record", name, before, after, "points at another target"))
        return changes

    # ------------------------------------------------------------------ apply
    def up(self, on: str, *, take_dns: bool = False, kinds: set[str] | None = None,
           locked: bool = False, records: bool = True) -> Applied:
        """Apply the plan for ``on``. ``kinds`` limits it to some resource kinds (a migration prepares the
        data services before the apps); ``locked`` says the caller already holds the target's lock."""
        provider = self.runner(on, change=True)
        start = time.monotonic()
        warnings: list[str] = []
        self.events.step(f"checking {provider.label}")
        self.preflight(on)
        with nullcontext() if locked else provider.lock(operator()):
            plan = self.plan(on, take_dns=take_dns, warnings=warnings, records=records)
            if kinds is not None:
                plan.changes = [c for c in plan.changes if c.kind in kinds]
            for message in warnings:
                self.events.warn(message)
            applied = self._apply(provider, plan)
        return Applied(plan, time.monotonic() - start, applied, warnings)

    def _apply(self, provider: Provider, plan: planner.Plan) -> list[dict]:
        applied = []
        for change in plan.pending:
            began = time.monotonic()
            self.events.step(f"{change.action} {change.id}")
            try:
                if change.kind == "secret":
                    self._apply_secret(provider, change)
                elif change.kind == "record":
                    self._apply_record(change)
                elif change.action == "create":
                    provider.create(change.after)
                elif change.action == "update":
                    provider.update(change.before, change.after)
                else:
                    provider.delete(change.before)
            except ToolkitError as exc:
                exc.message = f"{change.action} {change.id} failed: {exc.message}"
                exc.args = (exc.message,)
                raise
            seconds = time.monotonic() - began
            applied.append({"action": change.action, "resource": change.id, "seconds": round(seconds, 3)})
            self.events.done(f"{change.action} {change.id}", seconds)
        return applied

    def _apply_secret(self, provider: Provider, change: planner.Change) -> None:
        store = provider.secrets()
        if change.action == "delete":
            store.delete(change.name)
        else:
            store.write(change.name, change.after.attrs["value"])

    def _apply_record(self, change: planner.Change) -> None:
        dns = self.stack.dns
        service = self.dns_provider().dns()
        name, rtype = change.name.rsplit(" ", 1)
        if change.action == "delete":
            service.delete(dns.zone, name, rtype)
        else:
            attrs = change.after.attrs
            service.upsert(dns.zone, Record(name, rtype, attrs["ttl"], tuple(attrs["values"])))

    # ------------------------------------------------------------------ destroy
    def destroy_plan(self, on: str) -> planner.Plan:
        provider = self.runner(on, change=True)
        observed = self._observed(provider)
        plan = planner.destroy(on, observed)
        try:
            store = provider.secrets()
            for name in store.names():
                plan.changes.append(planner.Change("delete", "secret", name, Resource("secret", name), None,
                                                   "destroy"))
        except Unsupported:
            pass
        dns = self.stack.dns
        if dns and dns.provider == on:
            for rec in provider.dns().records(dns.zone):
                name = f"{rec.name} {rec.type}"
                plan.changes.append(planner.Change("delete", "record", name, Resource("record", name), None,
                                                   "destroy"))
        plan.changes.sort(key=planner.order_key, reverse=True)
        return plan

    def destroy(self, on: str, *, delete_backups: bool = False) -> Applied:
        provider = self.runner(on, change=True)
        self.keep_backups(on, delete_backups)
        start = time.monotonic()
        with provider.lock(operator()):
            plan = self.destroy_plan(on)
            served = self._served_addresses(provider)
            applied = self._apply(provider, plan)
            provider.finish_destroy()
        return Applied(plan, time.monotonic() - start, applied, self._dangling_records(on, served))

    def _served_addresses(self, provider: Provider) -> dict[str, set[str]]:
        """Role -> addresses ``provider`` serves it at, for the records that follow a role, where the zone
        is kept by another target (it stays when this one is destroyed)."""
        dns = self.stack.dns
        if not dns or dns.provider == provider.target.name:
            return {}
        out = {}
        for rec in dns.records:
            if rec.target and rec.target not in out:
                try:
                    out[rec.target] = set(provider.compute().addresses(rec.target))
                except Exception:  # noqa: BLE001 - nothing deployed, or a runtime that cannot say: no warning
                    continue
        return out

    def _dangling_records(self, on: str, served: dict[str, set[str]]) -> list[str]:
        """Records that still point at the addresses ``on`` had, once it is destroyed: traffic goes nowhere
        until another target takes them (``up --take-dns``), which a plain ``up`` does not do."""
        if not served:
            return []
        dns = self.stack.dns
        try:
            existing = {(r.name, r.type): r for r in self.dns_provider().dns().records(dns.zone)}
        except Exception as exc:  # noqa: BLE001 - said, not raised: the destroy itself is done
            return [f"could not read zone {dns.zone} on {dns.provider} to check its records ({exc})."]
        others = [n for n in self.stack.targets if n not in (on, dns.provider)]
        warnings = []
        for rec in dns.records:
            now = existing.get((rec.name, rec.type))
            if rec.target and now is not None and set(now.values) & served.get(rec.target, set()):
                warnings.append(f"DNS {rec.name} {rec.type} in {dns.zone} still points at {', '.join(now.values)}, "
                                f"where {on} served it; nothing answers there now. Point it at where the stack "
                                f"runs: lifeboat up --on {others[0] if others else 'TARGET'} --take-dns")
        return warnings

    # ------------------------------------------------------------------ status
    def status(self, on: str) -> dict:
        provider = self.runner(on)
        observed = {r.id: r for r in provider.observe()}
        data: dict = {"target": on, "type": provider.TYPE, "stack": self.stack.name}
        instances = []
        try:
            instances = provider.compute().instances()
        except Unsupported:
            pass
        data["services"] = [
            {"service": i.service, "replica": i.replica, "host": i.host, "state": i.state, "healthy": i.healthy,
             "url": i.url, "release": i.release, **{k: v for k, v in i.extra.items() if k in ("pid", "restarts")}}
            for i in instances
        ]
        data["resources"] = [
            {"kind": r.kind, "name": r.name, **{k: v for k, v in r.attrs.items()
                                                 if not isinstance(v, SecretValue)}, **r.extra}
            for r in observed.values()
        ]
        if self.stack.postgres and f"database/{self.stack.postgres.database}" in observed:
            db = observed[f"database/{self.stack.postgres.database}"]
            if db.attrs.get("running"):
                try:
                    info = provider.database().info()
                    data["database"] = {"version": info.version, "database": info.database,
                                        "size_bytes": info.size_bytes, "extensions": list(info.extensions)}
                except Exception as exc:  # status reports, it does not fail on one part
                    data["database"] = {"error": str(exc)}
        data["deployed"] = bool(observed)
        unhealthy = [f"{i.service}.{i.replica}" for i in instances if not i.healthy]
        down = [r.id for r in observed.values() if r.attrs.get("running") is False]
        # a service the stack declares that this target does not run (a failover stopped before deploying,
        # a service added since the last `up`) is a problem, not an absence to overlook
        deployed = {r.name for r in observed.values() if r.kind == "service"}
        missing = [name for name in self.stack.services if name not in deployed] \
            if observed and "compute" in provider.SERVICES else []
        data["healthy"] = bool(observed) and not unhealthy and not down and not missing
        data["problems"] = ([f"{x} is not healthy" for x in unhealthy] + [f"{x} is not running" for x in down]
                            + [f"service {x} is declared but not deployed here (run `lifeboat up --on {on}`)"
                               for x in missing])
        return data


__all__ = ["Engine", "Events", "Applied"]
