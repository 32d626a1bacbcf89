"""Backups and failover: backup, backups list|verify, failover, drill."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.app import Session, cli, complete_targets, envelope_command
from toolkit.errors import (
    BadInput,
    Problem,
)


# ---------------------------------------------------------------------------------------------- backups
@cli.command("backup")
@click.option("--from", "source", required=True, metavar="TARGET", shell_complete=complete_targets, help="Where the stack runs now.")
@click.option("--to", "to", metavar="TARGET", shell_complete=complete_targets, help="Whose object store keeps the backup (default: backup: to:).")
@click.option("--resume", is_flag=True, help="Continue the interrupted backup from its journal.")
@click.option("--wal-only", is_flag=True,
              help="Only ship the archived PostgreSQL WAL (backup: wal: true); cheap enough for every minute.")
@click.option("--parallel", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Objects stored at once.")
@envelope_command("backup")
def backup_(session: Session, source, to, resume, wal_only, parallel):
    """Ship an encrypted, verified backup of the stack off-host: database, new media, secrets, stack file."""
    from toolkit.cli.output import Outcome, human_fields
    from toolkit.workflows.backup import Backup

    if wal_only:
        shipped = Backup(session.engine(), source, to, parallel=parallel).ship_wal()
        return Outcome(shipped, human=lambda console: console.line(
            f"{shipped['wal']['files']} WAL file(s) of {source} shipped to {shipped['at']} "
            f"({shipped['seconds']:.1f}s; newest segment {shipped['wal']['newest'] or '-'})."))
    done = Backup(session.engine(), source, to, parallel=parallel).run(resume=resume)

    def human(console):
        for step in done["steps"]:
            extra = human_fields({k: v for k, v in step.items()
                                  if k in ("objects", "uploaded", "already_held", "removed_blobs", "kept", "names")})
            mark = " (done before)" if step.get("resumed") else ""
            console.line(f"  {step['step']:<10} {step.get('seconds', 0):>7.1f}s{mark} {extra}")
        console.line(f"Backup {done['backup']} of {source} is in {done['at']} ({done['seconds']:.1f}s).")

    return Outcome(done, human=human)


@cli.group()
def backups():
    """The backups a target keeps: list them, verify them."""


@backups.command("list")
@click.option("--at", "at", metavar="TARGET", shell_complete=complete_targets, help="Where the backups are (default: backup: to:).")
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
@click.option("--at", "at", metavar="TARGET", shell_complete=complete_targets, help="Where the backups are (default: backup: to:).")
@click.option("--backup", "backup_id", metavar="ID", help="Only this backup (default: every one kept).")
@envelope_command("backups verify")
def backups_verify(session: Session, at, backup_id):
    """Open every part and media object of the backups and check each against its manifest (exit 4 if any
    fails)."""
    from toolkit.cli.output import Outcome
    from toolkit.errors import EXIT_VERIFY
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
@click.option("--to", "to", required=True, metavar="TARGET", shell_complete=complete_targets, help="Where the stack should run now.")
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
@click.option("--to", "to", required=True, metavar="TARGET", shell_complete=complete_targets, help="Rehearse a failover onto a scratch copy of it.")
@click.option("--at", "at", metavar="TARGET", shell_complete=complete_targets, help="Where the backups are (default: backup: to:).")
@click.option("--backup", "backup_id", metavar="ID", help="Restore this backup (default: the newest).")
@click.option("--against", metavar="TARGET", shell_complete=complete_targets, help="The live source to compare the restored data with.")
@click.option("--report-dir", type=click.Path(file_okay=False), help="Where the report goes "
              "(default .lifeboat/drills next to the stack file).")
@envelope_command("drill")
def drill_(session: Session, to, at, backup_id, against, report_dir):
    """Rehearse a failover: restore the newest backup into a scratch copy of TARGET, verify it (and compare it
    with the live source), tear it down, and write a report with the measured RTO and RPO. DNS and the live
    stack are not touched."""

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


    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--before {text!r} is not a time (ISO 8601, e.g. 2026-11-25T21:00:00Z).",
                       code="usage") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
