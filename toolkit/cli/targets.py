"""A target's machinery: its lock, the releases its hosts keep, its SSH hosts."""

from __future__ import annotations

import click

from toolkit.cli.app import Session, cli, complete_services, envelope_command, target_option
from toolkit.errors import (
    BadInput,
)


# ---------------------------------------------------------------------------------------------- lock
@cli.group()
def lock():
    """Who holds a target's lock; break a lock whose holder died."""


@lock.command("status")
@target_option
@envelope_command("lock status")
def lock_status(session: Session, on):
    """Show who holds the lock on TARGET, and since when."""
    from toolkit.cli.output import Outcome

    holder = session.engine().provider(on).lock_status()

    def human(console):
        if holder:
            console.line(f"{on}: locked by {holder.get('owner', 'unknown')} since {holder.get('since', '?')} "
                         f"(`{holder.get('command', '?')}`).")
        else:
            console.line(f"{on}: not locked.")

    return Outcome({"target": on, "locked": bool(holder), "holder": holder}, human=human)


@lock.command("release")
@target_option
@envelope_command("lock release")
def lock_release(session: Session, on):
    """Break the lock on TARGET (only after checking its holder is gone)."""
    from toolkit.cli.output import Outcome

    provider = session.engine().provider(on)
    holder = provider.lock_status()
    if holder:
        session.confirm(f"Break the lock on {on} held by {holder.get('owner', 'unknown')} since "
                        f"{holder.get('since', '?')}?")
        provider.lock_release()
    return Outcome({"target": on, "released": bool(holder), "holder": holder},
                   human=lambda c: c.line(f"{on}: lock released." if holder else f"{on}: was not locked."))


# ---------------------------------------------------------------------------------------------- releases
KEEPS_RELEASES = {"feature": "releases", "lacks": "keeps no releases to go back to", "code": "release.unsupported"}


@cli.group()
def release():
    """Releases a target keeps (the last three per service): list them, go back to the previous one."""


@release.command("list")
@target_option
@envelope_command("release list")
def release_list(session: Session, on):
    """Per service: the running release, the one `release rollback` goes to, and what the hosts keep."""
    from toolkit.cli.output import Outcome

    found = session.provider_with(on, **KEEPS_RELEASES).ex_releases()

    def human(console):
        for name, info in found.items():
            console.line(f"{name}: running {info['release']}, rollback to {info['previous'] or '-'}; "
                         f"kept: {', '.join(info['kept']) or '-'}")

    return Outcome({"target": on, "services": found}, human=human)


@release.command("rollback")
@target_option
@click.argument("services", nargs=-1, shell_complete=complete_services)
@envelope_command("release rollback")
def release_rollback(session: Session, on, services):
    """Put the previous release of SERVICES (default: all) back, one host and one replica at a time.
    The next `up` deploys the stack's own release again. Code only, on one target: undoing a migration
    (the stack back on its source) is `rollback`."""
    from toolkit.cli.output import Outcome
    from toolkit.run.engine import operator

    provider = session.provider_with(on, **KEEPS_RELEASES)
    provider.events = session.events()
    found = provider.ex_releases()
    targets = list(services) or sorted(found)
    session.confirm(f"Roll back {', '.join(targets)} on {on}?")
    with provider.lock(operator()):
        done = provider.ex_rollback(list(services) or None)
    return Outcome({"target": on, "rolled_back": done},
                   human=lambda c: [c.line(f"{d['service']}: {d['from']} -> {d['to']}") for d in done])


# ---------------------------------------------------------------------------------------------- hosts
HAS_HOSTS = {"feature": "ssh_hosts", "lacks": "has no SSH hosts", "code": "hosts.none"}
# trusting keys only reads the hosts: an existing target's too (it has no hosts Lifeboat may change)
HAS_KEYS = {"feature": "ssh_keys", "lacks": "has no SSH hosts", "code": "hosts.none"}


@cli.group()
def hosts():
    """SSH hosts of a target: check them, trust their keys."""


@hosts.command("trust")
@target_option
@click.argument("names", nargs=-1)
@envelope_command("hosts trust")
def hosts_trust(session: Session, on, names):
    """Record the host keys of TARGET's hosts in its known_hosts after you confirm each fingerprint."""
    from toolkit.cli.output import Outcome
    from toolkit.transport.ssh import ChangedHostKey, fingerprint

    provider = session.provider_with(on, **HAS_KEYS)
    directory = provider.directory
    chosen = list(names) or [s.name for s in provider.specs]
    unknown = [n for n in chosen if n not in directory.specs]
    if unknown:
        raise BadInput(f"no host {', '.join(unknown)} in target {on}.",
                       hint=f"hosts: {', '.join(directory.specs)}.", code="hosts.unknown")
    rows = []
    for name in chosen:
        if directory.specs[name].host_keys:
            rows.append({"host": name, "action": "pinned", "fingerprint": None})
            continue
        existing = directory.known_line(name)
        entry, key = directory.scan(name)
        shown = f"{key.get_name()} {fingerprint(key)}"
        if existing:
            same = shown in existing
            rows.append({"host": name, "entry": entry, "fingerprint": shown,
                         "action": "already trusted" if same else "CHANGED"})
            if not same:  # the same condition, the same exit code (5) as every other command meeting it
                raise ChangedHostKey(f"{name}: {entry} presents {shown}, but {directory.known_hosts} has {existing}; "
                                     "nothing was changed.", hint="if the host was rebuilt, remove the old line by "
                                     "hand after checking the new fingerprint out of band.")
            continue
        if not session.json:
            session.console.line(f"{name} ({entry}) presents {shown}")
        session.confirm(f"Trust {name} ({entry}) with key {shown}?")
        directory.record(entry, key)
        rows.append({"host": name, "entry": entry, "fingerprint": shown, "action": "trusted"})

    def human(console):
        for row in rows:
            console.line(f"{row['host']}: {row['action']} {row.get('fingerprint') or ''}")

    return Outcome({"target": on, "known_hosts": directory.known_hosts, "hosts": rows}, human=human)


@hosts.command("bootstrap")
@target_option
@click.option("--check", "check_only", is_flag=True, help="Only report what is missing; change nothing.")
@envelope_command("hosts bootstrap")
def hosts_bootstrap(session: Session, on, check_only):
    """Prepare bare Debian/Ubuntu hosts: install the packages their roles need, create accounts and folders."""
    from toolkit.cli.output import Outcome

    provider = session.provider_with(on, **HAS_HOSTS)
    plan = provider.bootstrap_plan()
    missing = {h: p["missing"] for h, p in plan.items() if p["missing"]}
    if missing and not check_only:
        listing = "; ".join(f"{h}: {', '.join(pkgs)}" for h, pkgs in missing.items())
        session.confirm(f"Install on {on}: {listing}?")
    if not check_only:
        provider.bootstrap(plan)

    def human(console):
        for host, item in plan.items():
            state = ("missing " + ", ".join(item["missing"])) if item["missing"] else "everything present"
            console.line(f"{host} ({item['os']}): {state}"
                         + ("" if check_only or not item["missing"] else " -> installed"))

    return Outcome({"target": on, "hosts": plan, "changed": bool(missing) and not check_only}, human=human)


@hosts.command("check")
@target_option
@envelope_command("hosts check")
def hosts_check(session: Session, on):
    """Connect to every host of TARGET (keys verified) and report what each one is."""
    from toolkit.cli.output import Outcome

    facts = session.engine().preflight(on)
    return Outcome({"target": on, "facts": facts},
                   human=lambda c: [c.line(f"{k}: {v}") for k, v in facts.items()])
