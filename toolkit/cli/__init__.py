"""The ``lifeboat`` command line: a thin layer over the engine.

Every command prints one JSON envelope on stdout with ``--output json`` (also on failure) and human text
on stderr otherwise; exit codes are documented in the README and in ``toolkit.errors``. Heavy libraries
(boto3, paramiko, python_terraform, psycopg) are imported only by the code that needs them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from toolkit import __version__, settle
from toolkit.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_PLAN_CHANGES,
    BadInput,
    ConfirmationRequired,
    Problem,
    ToolkitError,
)

_CURRENT: dict = {}


class Session:
    def __init__(self, config: str | None, output: str, yes: bool, verbose: bool):
        self.config = config
        self.output = output
        self.yes = yes
        self.verbose = verbose
        self.command = "lifeboat"
        self._console = None

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def console(self):
        if self._console is None:
            from toolkit.cli.output import Console

            self._console = Console(self.verbose)
        return self._console

    def events(self):
        from toolkit.cli.output import HumanEvents
        from toolkit.run.events import Events

        events = Events() if self.json else HumanEvents(self.console)
        events.verbose = self.verbose
        return events

    def stack(self):
        from toolkit.config import stackfile

        return stackfile.load(stackfile.resolve_path(self.config))

    def engine(self):
        from toolkit.run.engine import Engine

        return Engine(self.stack(), self.events())

    def confirm(self, question: str) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise ConfirmationRequired(f"{question} Refusing without confirmation: no terminal to ask on.",
                                       hint="pass --yes to confirm in scripts.")
        if not click.confirm(question, err=True, default=False):
            raise ConfirmationRequired("not confirmed; nothing was changed.", code="not_confirmed")

    def emit(self, outcome) -> None:
        from toolkit.cli.output import envelope, write_stdout

        if self.json:
            write_stdout(envelope(self.command, outcome))
        else:
            if outcome.human:
                outcome.human(self.console)
            for problem in outcome.errors:
                self.console.error(problem)
        if outcome.exit_code:
            raise SystemExit(outcome.exit_code)


def json_requested(argv: list[str]) -> bool:
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("--output", "-o") and index + 1 < len(argv) and argv[index + 1] == "json":
            return True
        if arg in ("--output=json", "-ojson"):
            return True
    return False


def command_name(argv: list[str]) -> str:
    takes_value = {"--config", "-c", "--output", "-o"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in takes_value:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return "lifeboat"


def _set(attr: str):
    def callback(ctx, param, value):
        if value is not None and value is not False:
            setattr(ctx.find_object(Session), attr, value)
    return callback


def common_options(func):
    """The global options, accepted after the command name too (`lifeboat status --on x -o json`)."""
    options = [
        click.option("--config", "-c", metavar="FILE", expose_value=False, callback=_set("config"),
                     help="Stack file (same as the global option)."),
        click.option("--output", "-o", type=click.Choice(["human", "json"]), default=None, expose_value=False,
                     callback=_set("output"), help="Output format (same as the global option)."),
        click.option("--yes", "-y", is_flag=True, default=False, expose_value=False, callback=_set("yes"),
                     help="Confirm destructive actions."),
        click.option("--verbose", "-v", is_flag=True, default=False, expose_value=False, callback=_set("verbose"),
                     help="More detail."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def envelope_command(name: str):
    """Mark a command: the session knows its name for the envelope; the function returns an Outcome."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            session = click.get_current_context().find_object(Session)
            session.command = name
            outcome = func(session, *args, **kwargs)
            session.emit(outcome)

        return common_options(wrapper)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "-c", metavar="FILE", help="Stack file (default: $LIFEBOAT_CONFIG or ./lifeboat.yml).")
@click.option("--output", "-o", type=click.Choice(["human", "json"]), default="human", show_default=True,
              help="json: one envelope on stdout, also on failure.")
@click.option("--yes", "-y", is_flag=True, help="Confirm destructive actions (required without a terminal).")
@click.option("--verbose", "-v", is_flag=True, help="More detail, and tracebacks for internal errors.")
@click.version_option(__version__, prog_name="lifeboat")
@click.pass_context
def cli(ctx, config, output, yes, verbose):
    """Lifeboat moves a self-hosted social app between hosts, verified and resumable.

    \b
    Exit codes: 0 ok; 1 operation failed; 2 bad input (usage or stack file);
    3 another run holds the lock; 4 verification failed; 5 a provider is
    unreachable or refused the credentials; 10 plan --detailed-exitcode with
    changes pending.
    """
    ctx.obj = Session(config, output, yes, verbose)
    _CURRENT["session"] = ctx.obj


# ---------------------------------------------------------------------------------------------- init
@cli.command()
@click.argument("path", required=False)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@envelope_command("init")
def init(session: Session, path, force):
    """Write an annotated example stack file (a Mastodon-like app)."""
    from toolkit.cli.output import Outcome
    from toolkit.config import stackfile
    from toolkit.paths import example_stack

    target = Path(path) if path else stackfile.resolve_path(session.config)
    if target.exists() and not force:
        raise BadInput(f"{target} already exists; nothing was written.", hint="pass --force to overwrite it.",
                       code="init.exists")
    text = example_stack().read_text()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)

    def human(console):
        console.line(f"wrote {target}: an annotated stack for a Mastodon-like app.")
        console.line(f"next: edit it, then `lifeboat --config {target} validate`.")

    return Outcome({"path": str(target), "bytes": len(text.encode())}, human=human)


# ---------------------------------------------------------------------------------------------- validate
@cli.command()
@envelope_command("validate")
def validate(session: Session):
    """Check the stack file; every problem names file, line and key."""
    from toolkit.cli.output import Outcome

    stack = session.stack()
    data = {
        "path": str(stack.path),
        "name": stack.name,
        "domain": stack.domain,
        "services": {n: {"role": s.role, "replicas": s.replicas} for n, s in stack.services.items()},
        "postgres": stack.postgres.version if stack.postgres else None,
        "redis": stack.redis is not None,
        "buckets": sorted(stack.buckets),
        "secrets": sorted(stack.secrets),
        "targets": {n: t.type for n, t in stack.targets.items()},
        "dns": stack.dns.provider if stack.dns else None,
    }

    def human(console):
        targets = ", ".join(f"{n} ({t.type})" for n, t in stack.targets.items())
        console.line(f"{stack.path}: valid. Stack {stack.name} ({stack.domain}): "
                     f"{len(stack.services)} services, targets {targets}.")

    return Outcome(data, human=human)


# ---------------------------------------------------------------------------------------------- providers
@cli.command()
@envelope_command("providers")
def providers(session: Session):
    """List provider types, the services they offer and their settings."""
    from toolkit.cli.output import Outcome
    from toolkit.contract import registry

    rows = []
    for name in registry.names():
        cls = registry.load(name)
        rows.append({
            "type": name, "description": cls.DESCRIPTION, "services": sorted(cls.SERVICES),
            "features": dict(cls.FEATURES),
            "settings": {k: {"expected": f.spec.expected, "required": f.required, "doc": f.doc}
                         for k, f in cls.SETTINGS.items()},
        })

    def human(console):
        for row in rows:
            console.line(f"{row['type']}: {row['description']}")
            console.line(f"  services: {', '.join(row['services'])}")
            feats = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in row["features"].items())
            console.line(f"  features: {feats}")
            for key, info in row["settings"].items():
                console.line(f"  {key}: {info['expected']}{' (required)' if info['required'] else ''}"
                             f"{' - ' + info['doc'] if info['doc'] else ''}")

    return Outcome({"providers": rows}, human=human)


# ---------------------------------------------------------------------------------------------- plan
def render_plan(console, plan, warnings=()):
    symbols = {"create": "[green]+[/]", "update": "[yellow]~[/]", "delete": "[red]-[/]", "noop": "[dim]=[/]",
               "skip": "[dim]![/]"}
    console.line(f"Plan for target {plan.target}:")
    unchanged_infra = sum(1 for c in plan.changes if c.kind == "infra" and c.action == "noop")
    if unchanged_infra:
        console.print("  [dim]=[/] ", end="")
        console.line(f"noop    {unchanged_infra} Terraform resources")
    for change in plan.changes:
        if change.kind == "infra" and change.action == "noop":
            continue
        if change.kind == "infra" and change.action == "update":
            attrs = change.after.attrs
            detail = ("replace; " if attrs.get("replace") else "") + "changes " + ", ".join(attrs.get("changed") or [])
        else:
            detail = ", ".join(f"{k}: {v['before']} -> {v['after']}" for k, v in change.diff().items()
                               if change.action == "update")
        reason = f" ({change.reason})" if change.reason and change.action in ("skip", "delete") else ""
        console.print(f"  {symbols[change.action]} ", end="")
        console.line(f"{change.action:<7} {change.id}{(' ' + detail) if detail else ''}{reason}")
    s = plan.summary()
    console.line(f"{s['create']} to create, {s['update']} to update, {s['delete']} to delete, "
                 f"{s['noop']} unchanged.")
    for warning in warnings:
        console.warn(warning)


@cli.command()
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 10 when changes are pending.")
@click.option("--take-dns", is_flag=True, help="Point DNS records at this target even if they point elsewhere.")
@envelope_command("plan")
def plan(session: Session, on, detailed_exitcode, take_dns):
    """Show what `up --on TARGET` would change. Changes nothing."""
    from toolkit.cli.output import Outcome

    engine = session.engine()
    engine.preflight(on)
    warnings: list[str] = []
    result = engine.plan(on, take_dns=take_dns, warnings=warnings)
    status = "changes" if result.has_changes else "ok"
    code = EXIT_PLAN_CHANGES if (detailed_exitcode and result.has_changes) else 0
    data = result.as_dict()
    data["warnings"] = warnings
    return Outcome(data, status=status, exit_code=code, human=lambda c: render_plan(c, result, warnings))


# ---------------------------------------------------------------------------------------------- up
@cli.command()
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.option("--take-dns", is_flag=True, help="Point DNS records at this target even if they point elsewhere.")
@envelope_command("up")
def up(session: Session, on, take_dns):
    """Create or update the stack on TARGET until it matches the stack file. Safe to re-run."""
    from toolkit.cli.output import Outcome

    engine = session.engine()
    applied = engine.up(on, take_dns=take_dns)
    status = engine.status(on)
    data = {"target": on, "plan": applied.plan.as_dict(), "applied": applied.applied,
            "seconds": round(applied.seconds, 3), "status": status, "warnings": applied.warnings}
    errors = [Problem("up.unhealthy", f"after up: {p}", f"see `lifeboat status --on {on}` and the service logs.")
              for p in status["problems"]]

    def human(console):
        s = applied.plan.summary()
        if not applied.applied:
            console.line(f"{on}: up to date, nothing to do ({applied.seconds:.1f}s).")
        else:
            console.line(f"{on}: {s['create']} created, {s['update']} updated, {s['delete']} deleted "
                         f"in {applied.seconds:.1f}s.")
        render_status(console, status)

    if errors:
        return Outcome(data, status="error", exit_code=EXIT_FAILED, human=human, errors=errors)
    return Outcome(data, human=human)


# ---------------------------------------------------------------------------------------------- status
def render_status(console, data):
    console.line(f"Stack {data['stack']} on {data['target']} ({data['type']}): "
                 f"{'healthy' if data['healthy'] else 'NOT healthy' if data['deployed'] else 'not deployed'}")
    for inst in data["services"]:
        mark = "[green]ok[/]" if inst["healthy"] else "[red]!![/]"
        console.print(f"  {mark} ", end="")
        name = f"{inst['service']}.{inst['replica']}"
        console.line(f"{name:<14} {inst['host']:<10} {inst['state']:<10} {inst['url'] or '':<28} "
                     f"release {inst['release'] or '-'}")
    for res in data["resources"]:
        if res["kind"] == "service":
            continue
        extra = ", ".join(f"{k}={v}" for k, v in res.items() if k not in ("kind", "name"))
        console.line(f"     {res['kind']}/{res['name']}: {extra}")
    for problem in data.get("problems", []):
        console.warn(problem)


@cli.command()
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@envelope_command("status")
def status(session: Session, on):
    """Services, data and health of the stack on TARGET. Exit 1 when something is not healthy."""
    from toolkit.cli.output import Outcome

    data = session.engine().status(on)
    errors = []
    if not data["deployed"]:
        errors.append(Problem("status.not_deployed", f"the stack is not deployed on {on}.",
                              f"run `lifeboat up --on {on}`."))
    errors += [Problem("status.unhealthy", p) for p in data["problems"]]
    ok = data["healthy"]
    return Outcome(data, status="ok" if ok else "error", exit_code=0 if ok else EXIT_FAILED,
                   human=lambda c: render_status(c, data), errors=errors)


# ---------------------------------------------------------------------------------------------- destroy
@cli.command()
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.option("--delete-backups", is_flag=True, help="Also when TARGET keeps the stack's backups (they go too).")
@envelope_command("destroy")
def destroy(session: Session, on, delete_backups):
    """Stop and remove everything the stack has on TARGET, data included (asks first)."""
    from toolkit.cli.output import Outcome

    engine = session.engine()
    engine.keep_backups(on, delete_backups)
    preview = engine.destroy_plan(on)
    if preview.pending:
        session.confirm(f"Destroy stack {engine.stack.name} on {on}: {len(preview.pending)} resources, "
                        "their data included?")
    applied = engine.destroy(on, delete_backups=delete_backups)

    def human(console):
        console.line(f"{on}: destroyed {len(applied.applied)} resources in {applied.seconds:.1f}s; "
                     "nothing of the stack is left there.")
        for warning in applied.warnings:
            console.warn(warning)

    return Outcome({"target": on, "plan": applied.plan.as_dict(), "applied": applied.applied,
                    "seconds": round(applied.seconds, 3), "warnings": applied.warnings}, human=human)


# ---------------------------------------------------------------------------------------------- migrate
@cli.command()
@click.option("--from", "source", required=True, metavar="TARGET", help="Where the stack runs now.")
@click.option("--to", "target", required=True, metavar="TARGET", help="Where it should run.")
@click.option("--dry-run", is_flag=True, help="Show the steps, data volumes and estimates; change nothing.")
@click.option("--resume", is_flag=True, help="Continue the interrupted migration from its journal.")
@click.option("--no-cutover", is_flag=True, help="Leave DNS pointing at the source.")
@click.option("--keep-source", is_flag=True, help="Keep the source running afterwards (always, in this version).")
@click.option("--parallel", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Objects copied at once.")
@click.option("--db-jobs", type=click.IntRange(0, 32), default=0, show_default=True,
              help="Database parts copied at once (0: 4 from 1 GiB with several tables, else 1).")
@envelope_command("migrate")
def migrate(session: Session, source, target, dry_run, resume, no_cutover, keep_source, parallel, db_jobs):
    """Move the stack from one target to another: secrets, every row, every object, the cache, then the
    services and DNS; every copy verified; resumable."""
    from toolkit.cli.output import Outcome
    from toolkit.run.events import human_bytes
    from toolkit.workflows.migrate import Migration

    engine = session.engine()
    migration = Migration(engine, source, target, cutover=not no_cutover, parallel=parallel,
                          db_jobs=db_jobs or "auto")
    if dry_run:
        plan = migration.plan()

        def show(console):
            console.line(f"Migration {source} -> {target} (dry run, nothing changed):")
            console.line(f"  steps: {', '.join(plan['steps'])}")
            if "database" in plan:
                db = plan["database"]
                console.line(f"  database: PostgreSQL {db['version']}, {db['size_bytes']} bytes, {db['tables']} "
                             f"tables (~{plan['estimated_seconds']['database']} s)")
            media = plan["media"]
            console.line(f"  media: {media['objects']} objects, {media['bytes']} bytes "
                         f"(~{plan['estimated_seconds']['media']} s)")
            console.line(f"  secrets: {', '.join(plan['secrets']) or '-'}")
            for room in plan["space"]["rooms"]:
                console.line(f"  space: {room['where']} has {human_bytes(room['free'])} free, needs about "
                             f"{human_bytes(room['needed'])}")
            for short in plan["space"]["short"]:
                console.line(f"  [red]not enough space:[/] {short}")
            dns = plan.get("dns") or {}
            for rec in dns.get("records", []):
                lowered = f", lowered to {rec['lowered_to']} s first" if rec["lowered_to"] else ""
                console.line(f"  dns: {rec['record']} in {dns['zone']} (TTL {rec['ttl_now']} s{lowered})")
            if dns.get("records"):
                console.line(f"  dns: the freeze waits ~{dns['freeze_waits_seconds']} s: {dns['why']}")
            if plan.get("resumable"):
                console.line(f"  an interrupted migration ({plan['resumable']}) can be continued with --resume")

        return Outcome({"dry_run": True, **plan}, human=show)
    session.confirm(f"Migrate stack {engine.stack.name} from {source} to {target}"
                    + ("" if no_cutover else ", switching DNS at the end") + "?")
    report = migration.run(resume=resume)

    def human(console):
        for step in report.steps:
            extra = ", ".join(f"{k}={v}" for k, v in step.items() if k not in ("at", "step", "seconds", "resumed"))
            mark = " (done before)" if step.get("resumed") else ""
            console.line(f"  {step['step']:<10} {step.get('seconds', 0):>7.1f}s{mark} {extra}")
        console.line(f"Migrated {source} -> {target} in {report.seconds:.1f}s (journal {report.id}).")

    return Outcome(report.as_dict(), human=human)


@cli.command("rollback")
@envelope_command("rollback")
def rollback_(session: Session):
    """After `migrate`: start the source's services again, point DNS back at it, pause the target."""
    from toolkit.cli.output import Outcome
    from toolkit.workflows.migrate import last_migration, rollback

    engine = session.engine()
    last = last_migration(engine)
    if last is not None:
        session.confirm(f"Roll back migration {last.id} ({last.meta.get('from')} -> {last.meta.get('to')}): "
                        f"traffic goes back to {last.meta.get('from')}?")
    done = rollback(engine)
    return Outcome(done, human=lambda c: c.line(
        f"Traffic is back on {done['to']} (DNS: {', '.join(done['records']) or 'no records'}); "
        f"{done['from']} is paused with its data."))


# ---------------------------------------------------------------------------------------------- backups
@cli.command("backup")
@click.option("--from", "source", required=True, metavar="TARGET", help="Where the stack runs now.")
@click.option("--to", "to", metavar="TARGET", help="Whose object store keeps the backup (default: backup: to:).")
@click.option("--resume", is_flag=True, help="Continue the interrupted backup from its journal.")
@click.option("--wal-only", is_flag=True,
              help="Only ship the archived PostgreSQL WAL (backup: wal: true); cheap enough for every minute.")
@click.option("--parallel", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Objects stored at once.")
@envelope_command("backup")
def backup_(session: Session, source, to, resume, wal_only, parallel):
    """Ship an encrypted, verified backup of the stack off-host: database, new media, secrets, stack file."""
    from toolkit.cli.output import Outcome
    from toolkit.workflows.backup import Backup

    if wal_only:
        shipped = Backup(session.engine(), source, to, parallel=parallel).ship_wal()
        return Outcome(shipped, human=lambda console: console.line(
            f"{shipped['wal']['files']} WAL file(s) of {source} shipped to {shipped['at']} "
            f"({shipped['seconds']:.1f}s; newest segment {shipped['wal']['newest'] or '-'})."))
    done = Backup(session.engine(), source, to, parallel=parallel).run(resume=resume)

    def human(console):
        for step in done["steps"]:
            extra = ", ".join(f"{k}={v}" for k, v in step.items()
                              if k in ("objects", "uploaded", "already_held", "removed_blobs", "kept", "names"))
            mark = " (done before)" if step.get("resumed") else ""
            console.line(f"  {step['step']:<10} {step.get('seconds', 0):>7.1f}s{mark} {extra}")
        console.line(f"Backup {done['backup']} of {source} is in {done['at']} ({done['seconds']:.1f}s).")

    return Outcome(done, human=human)


@cli.group()
def backups():
    """The backups a target keeps: list them, verify them."""


@backups.command("list")
@click.option("--at", "at", metavar="TARGET", help="Where the backups are (default: backup: to:).")
@envelope_command("backups list")
def backups_list(session: Session, at):
    """Each backup with its time, size and whether all of it is there (verify opens every byte)."""
    from toolkit.cli.output import Outcome
    from toolkit.run.events import human_bytes
    from toolkit.workflows.backups import list_backups

    found = list_backups(session.engine(), at)

    def human(console):
        console.line(f"Backups in {found['at']}:")
        for b in found["backups"]:
            if "taken_at" not in b:
                console.line(f"  {b['id']}  [red]{'; '.join(b['problems'])}[/]")
                continue
            state = "complete" if b["complete"] else f"[red]{'; '.join(b['problems'])}[/]"
            console.line(f"  {b['id']}  {b['taken_at']}  from {b['source']}  database "
                         f"{human_bytes(b['database_bytes'])}, media {human_bytes(b['media_bytes'])} in "
                         f"{b['objects']} objects{'  +WAL' if b['point_in_time'] else ''}  {state}")
        if not found["backups"]:
            console.line("  none")
        if found["wal"]["files"]:
            console.line(f"Archived WAL: {found['wal']['files']} files, {human_bytes(found['wal']['bytes'])}, "
                         f"newest segment {found['wal']['newest_segment']}.")

    return Outcome(found, human=human)


@backups.command("verify")
@click.option("--at", "at", metavar="TARGET", help="Where the backups are (default: backup: to:).")
@click.option("--backup", "backup_id", metavar="ID", help="Only this backup (default: every one kept).")
@envelope_command("backups verify")
def backups_verify(session: Session, at, backup_id):
    """Open every part and media object of the backups and check each against its manifest (exit 4 if any
    fails)."""
    from toolkit.cli.output import Outcome
    from toolkit.errors import EXIT_VERIFY, Problem
    from toolkit.workflows.backups import verify_backups

    found = verify_backups(session.engine(), at, backup_id)

    def human(console):
        for b in found["backups"]:
            mark = "verified" if b["ok"] else "[red]FAILED[/]"
            console.line(f"  {b['id']}  {mark}  {b['objects']} objects")
            for problem in b["problems"]:
                console.line(f"      {problem}")

    if found["failed"]:
        problems = [Problem("backup.tampered", f"backup {b['id']} does not verify: {'; '.join(b['problems'])}",
                            "failover --backup ID restores one that verifies.")
                    for b in found["backups"] if not b["ok"]]
        return Outcome(found, status="error", exit_code=EXIT_VERIFY, human=human, errors=problems)
    return Outcome(found, human=human)


@cli.command("failover")
@click.option("--to", "to", required=True, metavar="TARGET", help="Where the stack should run now.")
@click.option("--at", "at", metavar="TARGET|TIME", help="Where the backups are (default: backup: to:); "
              "or a TIME, the same as --before TIME.")
@click.option("--backup", "backup_id", metavar="ID", help="Restore this backup (default: the newest).")
@click.option("--before", metavar="TIME", help="Restore the newest backup taken at or before TIME (ISO 8601, UTC) "
              "and, with archived WAL, replay up to TIME.")
@click.option("--no-cutover", is_flag=True, help="Leave DNS as it is.")
@click.option("--no-wal", is_flag=True, help="Restore the backup's dump alone, without replaying archived WAL.")
@click.option("--resume", is_flag=True, help="Continue the interrupted failover from its journal.")
@click.option("--parallel", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Objects restored at once.")
@envelope_command("failover")
def failover_(session: Session, to, at, backup_id, before, no_cutover, no_wal, resume, parallel):
    """Bring the stack up on TARGET from its newest backup, needing nothing from where it ran: restore,
    verify, deploy, switch DNS; report the recovery point (RPO) and time (RTO)."""
    from toolkit.cli.output import Outcome
    from toolkit.workflows.failover import Failover

    engine = session.engine()
    engine.provider(to)  # an unknown target is bad input before anything is asked
    if at is not None and at not in engine.stack.targets:
        at, before = None, _at_time(at, before, engine.stack)
    when = _parse_time(before) if before else None
    session.confirm(f"Fail stack {engine.stack.name} over to {to} from its backups"
                    + ("" if no_cutover else ", switching DNS") + "?")
    done = Failover(engine, to, at=at, backup_id=backup_id, before=when, cutover=not no_cutover,
                    parallel=parallel, wal=not no_wal).run(resume=resume)

    def human(console):
        for step in done["steps"]:
            mark = " (done before)" if step.get("resumed") else ""
            console.line(f"  {step['step']:<10} {step.get('seconds', 0):>7.1f}s{mark}")
        console.line(f"Failed over to {to} from backup {done['backup']}: recovery point {done['recovery_point']} "
                     f"(RPO {done['rpo_seconds']:.0f} s), recovery time {done['rto_seconds']:.1f} s.")

    return Outcome(done, human=human)


@cli.command("drill")
@click.option("--to", "to", required=True, metavar="TARGET", help="Rehearse a failover onto a scratch copy of it.")
@click.option("--at", "at", metavar="TARGET", help="Where the backups are (default: backup: to:).")
@click.option("--backup", "backup_id", metavar="ID", help="Restore this backup (default: the newest).")
@click.option("--against", metavar="TARGET", help="The live source to compare the restored data with.")
@click.option("--report-dir", type=click.Path(file_okay=False), help="Where the report goes "
              "(default .lifeboat/drills next to the stack file).")
@envelope_command("drill")
def drill_(session: Session, to, at, backup_id, against, report_dir):
    """Rehearse a failover: restore the newest backup into a scratch copy of TARGET, verify it (and compare it
    with the live source), tear it down, and write a report with the measured RTO and RPO. DNS and the live
    stack are not touched."""
    from pathlib import Path

    from toolkit.cli.output import Outcome
    from toolkit.workflows.drill import Drill

    done = Drill(session.engine(), to, at=at, backup_id=backup_id, against=against,
                 report_dir=Path(report_dir) if report_dir else None).run()

    def human(console):
        console.line(f"Drill on {to} from backup {done['backup']}: RTO {done['rto_seconds']:.1f} s, RPO "
                     f"{done['rpo_seconds']:.0f} s; scratch copy {'torn down' if done['torn_down'] else 'LEFT'}.")
        console.line(f"Report: {done['report']['markdown']}")

    return Outcome(done, human=human)


def _at_time(text: str, before: str | None, stack) -> str:
    """`failover --at` names the target holding the backups or, when it is no target, the point in time to
    restore (the issue's `failover --to B --at TIME`); a time there and --before both is ambiguous."""
    from toolkit.errors import BadInput

    try:
        _parse_time(text)
    except BadInput:
        raise BadInput(f'--at {text!r} is neither a target under providers: in {stack.path.name} nor a time '
                       f'(ISO 8601, e.g. 2026-11-25T21:00:00Z).', hint=f"targets: {', '.join(stack.targets)}.",
                       code="target.unknown") from None
    if before is not None:
        raise BadInput(f"--at {text} and --before {before} both give the time to restore; give one.", code="usage")
    return text


def _parse_time(text: str) -> float:
    from datetime import UTC, datetime

    from toolkit.errors import BadInput

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--before {text!r} is not a time (ISO 8601, e.g. 2026-11-25T21:00:00Z).",
                       code="usage") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# ---------------------------------------------------------------------------------------------- exec
@cli.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.argument("service")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@envelope_command("exec")
def exec_(session: Session, on, service, argv):
    """Run a one-off command in SERVICE's environment on TARGET (e.g. a seed or a migration)."""
    from toolkit.cli.output import Outcome

    engine = session.engine()
    code = engine.provider(on).compute().exec(service, list(argv))
    errors = [] if code == 0 else [Problem("exec.failed", f"`{' '.join(argv)}` exited with {code}.")]
    return Outcome({"target": on, "service": service, "exit_code": code}, status="ok" if code == 0 else "error",
                   exit_code=0 if code == 0 else EXIT_FAILED, errors=errors)


# ---------------------------------------------------------------------------------------------- lock
@cli.group()
def lock():
    """Who holds a target's lock; break a lock whose holder died."""


@lock.command("status")
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
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
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
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
@cli.group()
def release():
    """Releases a target keeps (the last three per service): list them, go back to the previous one."""


def _release_provider(session: Session, on: str):
    provider = session.engine().provider(on)
    if not provider.supports("releases"):
        raise BadInput(f"target {on} ({provider.TYPE}) keeps no releases to go back to.", code="release.unsupported")
    return provider


@release.command("list")
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@envelope_command("release list")
def release_list(session: Session, on):
    """Per service: the running release, the one `release rollback` goes to, and what the hosts keep."""
    from toolkit.cli.output import Outcome

    found = _release_provider(session, on).ex_releases()

    def human(console):
        for name, info in found.items():
            console.line(f"{name}: running {info['release']}, rollback to {info['previous'] or '-'}; "
                         f"kept: {', '.join(info['kept']) or '-'}")

    return Outcome({"target": on, "services": found}, human=human)


@release.command("rollback")
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.argument("services", nargs=-1)
@envelope_command("release rollback")
def release_rollback(session: Session, on, services):
    """Put the previous release of SERVICES (default: all) back, one host and one replica at a time.
    The next `up` deploys the stack's own release again."""
    from toolkit.cli.output import Outcome
    from toolkit.run.engine import operator

    provider = _release_provider(session, on)
    provider.events = session.events()
    found = provider.ex_releases()
    targets = list(services) or sorted(found)
    session.confirm(f"Roll back {', '.join(targets)} on {on}?")
    with provider.lock(operator()):
        done = provider.ex_rollback(list(services) or None)
    return Outcome({"target": on, "rolled_back": done},
                   human=lambda c: [c.line(f"{d['service']}: {d['from']} -> {d['to']}") for d in done])


# ---------------------------------------------------------------------------------------------- hosts
@cli.group()
def hosts():
    """SSH hosts of a target: check them, trust their keys."""


def _ssh_provider(session: Session, on: str):
    provider = session.engine().provider(on)
    if not provider.supports("ssh_hosts"):
        raise BadInput(f"target {on} ({provider.TYPE}) has no SSH hosts.", code="hosts.none")
    return provider


@hosts.command("trust")
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.argument("names", nargs=-1)
@envelope_command("hosts trust")
def hosts_trust(session: Session, on, names):
    """Record the host keys of TARGET's hosts in its known_hosts after you confirm each fingerprint."""
    from toolkit.cli.output import Outcome
    from toolkit.transport.connection import ChangedHostKey, fingerprint

    provider = _ssh_provider(session, on)
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
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@click.option("--check", "check_only", is_flag=True, help="Only report what is missing; change nothing.")
@envelope_command("hosts bootstrap")
def hosts_bootstrap(session: Session, on, check_only):
    """Prepare bare Debian/Ubuntu hosts: install the packages their roles need, create accounts and folders."""
    from toolkit.cli.output import Outcome

    provider = _ssh_provider(session, on)
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
@click.option("--on", "on", required=True, metavar="TARGET", help="Target from providers:.")
@envelope_command("hosts check")
def hosts_check(session: Session, on):
    """Connect to every host of TARGET (keys verified) and report what each one is."""
    from toolkit.cli.output import Outcome

    facts = session.engine().preflight(on)
    return Outcome({"target": on, "facts": facts},
                   human=lambda c: [c.line(f"{k}: {v}") for k, v in facts.items()])


# ---------------------------------------------------------------------------------------------- entry point
def run() -> int:
    """The ``lifeboat`` command (pyproject's script): :func:`main`, then what it leaves is freed at exit
    without a last garbage collection over every object it ever made (see :func:`toolkit.settle`)."""
    code = main()
    settle()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]  # a bare `lifeboat` shows what it can do
    as_json = json_requested(argv)
    verbose = "--verbose" in argv or "-v" in argv
    _CURRENT.clear()
    if hasattr(sys.stderr, "reconfigure"):  # human text never fails on a character the terminal lacks
        sys.stderr.reconfigure(errors="backslashreplace")
    _unwind_on_sigterm()
    try:
        cli.main(args=argv, prog_name="lifeboat", standalone_mode=False)
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C (and an end of input at a prompt) into Abort when it does not exit itself
        if isinstance(exc.__context__, KeyboardInterrupt):
            return interrupted(argv, as_json, terminated=isinstance(exc.__context__, Terminated))
        return report(argv, as_json, [Problem("aborted", "aborted; nothing more was done.")], EXIT_BAD_INPUT)
    except click.ClickException as exc:
        problem = Problem("usage", exc.format_message(), "see `lifeboat --help`.")
        return report(argv, as_json, [problem], EXIT_BAD_INPUT)
    except ToolkitError as exc:
        return report(argv, as_json, exc.problems, exc.exit_code)
    except KeyboardInterrupt as exc:
        return interrupted(argv, as_json, terminated=isinstance(exc, Terminated))
    except Exception as exc:  # a bug: say so plainly, keep the envelope contract
        if verbose:
            import traceback

            traceback.print_exc()
        problem = Problem("internal", f"internal error: {type(exc).__name__}: {exc}",
                          "this is a bug in Lifeboat; re-run with --verbose for the traceback and report it.")
        return report(argv, as_json, [problem], EXIT_FAILED)


RESUMABLE = ("migrate", "backup", "failover")  # journalled: --resume continues after the last finished step
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, a CI timeout, `kill`), raised where the program is so that it unwinds as for
    Ctrl-C: ``finally`` blocks run (scratch clusters stopped, locks released, writers ended)."""


def _unwind_on_sigterm() -> None:
    import signal
    import threading

    def raise_terminated(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def interrupted(argv: list[str], as_json: bool, *, terminated: bool = False) -> int:
    """Ctrl-C (exit 130) or SIGTERM (exit 143), saying how to go on. What finished is kept (journal,
    copied data); locks were released on the way out."""
    session = _CURRENT.get("session")
    command = session.command if session is not None and session.command != "lifeboat" else command_name(argv)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    if command in RESUMABLE:
        problem = Problem("interrupted", f"{what}; what finished is kept: re-run with --resume to continue.",
                          f"the same command with --resume (lifeboat {command} ... --resume).")
    else:
        problem = Problem("interrupted", f"{what}; re-running the command is safe and continues the work.")
    return report(argv, as_json, [problem], EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def report(argv: list[str], as_json: bool, problems: list[Problem], code: int) -> int:
    from toolkit.cli.output import Outcome, envelope, write_stdout

    command = command_name(argv)
    session = _CURRENT.pop("session", None)
    if session is not None and session.command != "lifeboat":
        command = session.command
    outcome = Outcome({}, status="error", exit_code=code, errors=problems)
    if as_json:
        write_stdout(envelope(command, outcome))
    else:
        from toolkit.cli.output import Console

        console = Console()
        for problem in problems:
            console.error(problem)
    return code


def entry() -> None:  # python -m toolkit.cli (toolkit/cli/__main__.py)
    sys.exit(run())
