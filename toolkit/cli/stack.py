"""Commands on one target's stack: init, validate, providers, plan, up, status, destroy, exec."""

from __future__ import annotations

import os
from pathlib import Path

import click

from toolkit.cli.app import Session, cli, complete_services, envelope_command, target_option
from toolkit.errors import (
    EXIT_FAILED,
    EXIT_PLAN_CHANGES,
    BadInput,
    Problem,
    warning_dict,
)


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
@click.option("--strict", is_flag=True, help="Also check that every secret given from env: or file: is there "
                                             "now, on this machine (every missing one, in one run).")
@envelope_command("validate")
def validate(session: Session, strict):
    """Check the stack file; every problem names file, line and key."""
    from toolkit.cli.output import Outcome
    from toolkit.errors import ManyProblems
    from toolkit.run.engine import missing_operator_secrets

    stack = session.stack()
    if strict:
        missing = missing_operator_secrets(stack)
        if missing:
            raise ManyProblems(missing, code="secret.missing")
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
@target_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 10 when changes are pending.")
@click.option("--take-dns", is_flag=True, help="Point DNS records at this target even if they point elsewhere.")
@envelope_command("plan")
def plan(session: Session, on, detailed_exitcode, take_dns):
    """Show what `up --on TARGET` would change. Changes nothing."""
    from toolkit.cli.output import Outcome

    engine = session.engine()
    warnings: list[str] = list(engine.preflight(on, planning=True).get("warnings") or [])
    result = engine.plan(on, take_dns=take_dns, warnings=warnings)
    status = "changes" if result.has_changes else "ok"
    code = EXIT_PLAN_CHANGES if (detailed_exitcode and result.has_changes) else 0
    data = result.as_dict()
    data["warnings"] = [warning_dict(w) for w in warnings]
    return Outcome(data, status=status, exit_code=code, human=lambda c: render_plan(c, result, warnings))


# ---------------------------------------------------------------------------------------------- up
@cli.command()
@target_option
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
    from toolkit.cli.output import human_fields

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
        extra = human_fields(res, skip=("kind", "name"))
        console.line(f"     {res['kind']}/{res['name']}: {extra}")
    # (the problems are the command's errors, printed once after this)


@cli.command()
@target_option
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
@target_option
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


# ---------------------------------------------------------------------------------------------- config
@cli.command("config")
@target_option
@envelope_command("config")
def config_(session: Session, on):
    """Print the stack as TARGET gets it: every setting with its default filled in, the target's env over the
    services' (templates as written: values are resolved only into the processes), where each service runs
    there. Reads the stack file only: contacts nothing, shows no secret value."""
    import dataclasses
    import json

    from toolkit.cli.output import Outcome

    engine = session.engine()
    stack = engine.stack
    provider = engine.provider(on)

    def plain(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if hasattr(value, "as_posix"):
            return str(value)
        return value

    services = {}
    for name, svc in stack.services.items():
        one = plain(svc)
        one["env"] = provider.env_templates(svc)
        placement = getattr(provider, "placement", None)
        if placement is not None and provider.supports("ssh_hosts"):
            one["hosts"] = placement(svc)
        services[name] = one
    target = stack.targets[on]
    data = {"target": {"name": on, "type": target.type, "settings": plain(target.settings),
                       "features": dict(provider.FEATURES)},
            "stack": {"name": stack.name, "domain": stack.domain, "file": str(stack.path), "services": services,
                      "postgres": plain(stack.postgres), "redis": plain(stack.redis), "buckets": plain(stack.buckets),
                      "tls": plain(stack.tls), "dns": plain(stack.dns), "backup": plain(stack.backup),
                      "secrets": {n: {"from": r.source, **({"var": r.var} if r.var else {}),
                                      **({"path": str(r.path)} if r.path else {})}
                                  for n, r in stack.secrets.items()}}}

    def human(console):
        import sys

        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")

    return Outcome(data, human=human)


# ---------------------------------------------------------------------------------------------- logs
@cli.command("logs")
@target_option
@click.argument("service", required=False, shell_complete=complete_services)
@click.option("--replica", type=int, help="Only this replica (0, 1, ...).")
@click.option("-n", "--lines", "lines", type=click.IntRange(0, 100000), default=200, show_default=True,
              help="Lines of each replica's log to show first.")
@click.option("--since", metavar="WHEN", help="Only lines since (docker runtime: 10m, 2h, an ISO time).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they come (Ctrl-C ends it).")
@envelope_command("logs")
def logs(session: Session, on, service, replica, lines, since, follow):
    """Print the services' output on TARGET (every service, or SERVICE), each line after its replica
    (HOST/SERVICE.N | ...). Lines go to stdout; with -o json, an envelope holding them, or with -f one JSON
    object per line and the envelope when it ends."""
    import json
    import sys

    from toolkit.cli.output import Outcome
    from toolkit.workflows import logs as reading

    def write_stdout(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    engine = session.engine()
    if service is not None and service not in engine.stack.services:
        raise BadInput(f'no service "{service}" in the stack.', hint=f"services: {', '.join(engine.stack.services)}.",
                       code="logs.unknown_service")
    sources = [s for s in engine.provider(on).compute().log_sources(service)
               if replica is None or s.replica == replica]
    if not sources:
        which = f" as replica {replica}" if replica is not None else ""
        raise BadInput(f"nothing of {service or 'the stack'} is deployed on {on}{which}: no log to read.",
                       hint=f"`lifeboat status --on {on}`.", code="logs.none")
    width = max(len(s.label) for s in sources)
    if not follow:
        found = reading.tail(sources, lines, since)
        if not session.json:
            write_stdout("".join(f"{s.label:<{width}} | {line}\n" for s, text in found for line in text))
        return Outcome({"target": on, "logs": [{**s.where(), "lines": text} for s, text in found]})
    count = 0

    def emit(source, line: str) -> None:
        nonlocal count
        count += 1
        if session.json:
            write_stdout(json.dumps({**source.where(), "line": line}, ensure_ascii=False) + "\n")
        else:
            write_stdout(f"{source.label:<{width}} | {line}\n")

    try:
        reading.follow(sources, lines, emit, since)
    except KeyboardInterrupt:
        pass
    return Outcome({"target": on, "followed": [s.label for s in sources], "lines": count})


# ---------------------------------------------------------------------------------------------- console
@cli.command("console", context_settings={"ignore_unknown_options": True})
@target_option
@click.argument("service", shell_complete=complete_services)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@envelope_command("console")
def console_(session: Session, on, service, argv):
    """An interactive terminal in SERVICE's environment on TARGET, as the account it runs as: a shell, or
    ARGV (`-- python manage.py shell`). Needs a terminal; `exec` runs a command without one."""
    import sys

    from toolkit.cli.output import Outcome

    if session.json or not sys.stdin.isatty():
        raise BadInput("console needs a terminal (and human output).",
                       hint=f"`lifeboat exec --on {on} {service} -- ARGV` runs a command without one.",
                       code="console.no_terminal")
    engine = session.engine()
    command = list(argv) or ["sh", "-c", 'if command -v bash >/dev/null; then exec bash; else exec sh; fi']
    code = engine.provider(on).compute().console(service, command)
    return Outcome({"target": on, "service": service, "exit_code": code}, status="ok" if code == 0 else "error",
                   exit_code=code)


# ---------------------------------------------------------------------------------------------- exec
@cli.command("exec", context_settings={"ignore_unknown_options": True})
@target_option
@click.argument("service", shell_complete=complete_services)
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
