"""Moving the stack between targets: migrate, and rollback of a migration."""

from __future__ import annotations

import click

from toolkit.cli.app import Session, cli, complete_targets, envelope_command


# ---------------------------------------------------------------------------------------------- migrate
@cli.command()
@click.option("--from", "source", required=True, metavar="TARGET", shell_complete=complete_targets, help="Where the stack runs now.")
@click.option("--to", "target", required=True, metavar="TARGET", shell_complete=complete_targets, help="Where it should run.")
@click.option("--dry-run", is_flag=True, help="Show the steps, data volumes and estimates; change nothing.")
@click.option("--resume", is_flag=True, help="Continue the interrupted migration from its journal.")
@click.option("--no-cutover", is_flag=True, help="Leave DNS pointing at the source.")
@click.option("--parallel", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Objects copied at once.")
@click.option("--db-jobs", type=click.IntRange(0, 32), default=0, show_default=True,
              help="Database parts copied at once (0: 4 from 1 GiB with several tables, else 1).")
@envelope_command("migrate")
def migrate(session: Session, source, target, dry_run, resume, no_cutover, parallel, db_jobs):
    """Move the stack from one target to another: secrets, every row, every object, the cache, then the
    services and DNS; every copy verified; resumable. The source is never removed: its services stay
    paused with all its data (`lifeboat rollback` goes back to it; `lifeboat destroy --on SOURCE` once you
    are sure)."""
    from toolkit.cli.output import Outcome, human_fields
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
            extra = human_fields(step)
            mark = " (done before)" if step.get("resumed") else ""
            console.line(f"  {step['step']:<10} {step.get('seconds', 0):>7.1f}s{mark} {extra}")
        console.line(f"Migrated {source} -> {target} in {report.seconds:.1f}s (journal {report.id}).")

    return Outcome(report.as_dict(), human=human)


@cli.command("rollback")
@envelope_command("rollback")
def rollback_(session: Session):
    """Undo the last `migrate`: start the source's services again, point DNS back at it, pause the target.
    It moves the stack, not code: going back to the previous release of a service is `release rollback`."""
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
