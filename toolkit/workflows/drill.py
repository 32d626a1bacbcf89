"""``lifeboat drill``: a failover rehearsed into a scratch copy of the target, compared with the live
source, torn down, reported (JSON and markdown) with the measured RTO and RPO."""

from __future__ import annotations

import json
import time

from toolkit.contract import Provider, Unsupported
from toolkit.errors import BadInput
from toolkit.paths import private_dir
from toolkit.run.engine import Engine
from toolkit.run.journal import Journal
from toolkit.stores.digests import method_of
from toolkit.workflows.failover import Failover
from toolkit.workflows.repository import epoch_text, new_id


class Drill:
    """``lifeboat drill --to TARGET``: a failover rehearsed into a scratch copy of TARGET (its own state,
    data services and ports; DNS left alone), the restored data compared with the live source when one is
    named, the scratch copy torn down, and a report (JSON and markdown) with the measured RTO and RPO."""

    def __init__(self, engine: Engine, to: str, *, at: str | None = None, backup_id: str | None = None,
                 against: str | None = None, report_dir=None, parallel: int = 8):
        self.engine, self.stack, self.events = engine, engine.stack, engine.events
        self.to_name, self.at, self.backup_id, self.against = to, at, backup_id, against
        self.base = engine.runner(to, change=True)
        self.parallel = parallel
        self.report_dir = report_dir or self.stack.root / ".lifeboat" / "drills"

    def run(self) -> dict:
        import dataclasses

        from toolkit.config.model import Target

        began = time.time()
        name = f"drill-{self.to_name}"
        try:
            settings = self.base.scratch_settings(name)
        except Unsupported as exc:
            raise BadInput(f"drill: {exc}.", hint="drill into a local, bare-metal, terraform or aws target, or run a failover "
                                                  "on a spare one.",
                           code="drill.unsupported") from None
        if self.against is not None:
            self.engine.runner(self.against)  # a typo fails before anything starts
        # A rehearsal never touches DNS, and asks no CA for certificates (the TLS proxy is not rehearsed).
        scratch = dataclasses.replace(self.stack, dns=None, tls=None,
                                      targets={**self.stack.targets, name: Target(name, self.base.TYPE, settings)})
        engine = Engine(scratch, self.events)
        failover = Failover(engine, name, at=self.at or (self.stack.backup.to if self.stack.backup else None),
                            backup_id=self.backup_id, cutover=False, parallel=self.parallel)
        report: dict = {"drill": new_id(), "stack": self.stack.name, "target": self.to_name, "scratch": name,
                        "began": epoch_text(began)}
        error = None
        try:
            result = failover.run()
            steps = {s["step"]: s for s in result["steps"]}
            report.update(backup=result["backup"], recovery_point=result["recovery_point"],
                          rpo_seconds=result["rpo_seconds"], rto_seconds=result["rto_seconds"],
                          journal=str(Journal.current(failover.state).path),
                          steps=[{"step": s["step"], "seconds": s.get("seconds", 0)} for s in result["steps"]],
                          checked={"database": steps["database"].get("verified"),
                                   "media": f"{steps['media']['objects']} objects: "
                                            f"{steps['media'].get('verified', '-')}",
                                   "secrets": f"{len(steps['secrets'].get('secrets', []))} restored and read back",
                                   "services": "deployed and healthy on the scratch copy"})
            if self.against is not None:
                report["against_source"] = self._against(engine.provider(name), failover)
        except Exception as exc:
            error = exc
            report["error"] = getattr(exc, "message", str(exc))
        finally:
            try:
                engine.destroy(name)  # everything of the scratch copy, its state folder included
                report["torn_down"] = True
            except Exception as exc:  # noqa: BLE001 - reported; the drill's own result matters more
                report["torn_down"] = False
                report["teardown_error"] = getattr(exc, "message", str(exc))
            report["seconds"] = round(time.time() - began, 3)
            report["ok"] = error is None and report["torn_down"]
            report["report"] = self._write(report)
        if error is not None:
            raise error
        return report

    def _against(self, restored: Provider, failover: Failover) -> dict:
        """The restored copy next to the live source now: what the source has written since the backup."""
        out: dict = {"source": self.against}
        try:
            self.engine.preflight(self.against, fresh=True)
            live = self.engine.provider(self.against)
            if self.stack.postgres:
                now = live.database().table_digests()
                there = restored.database().table_digests(method_of(now))
                same = sorted(t for t in there if now.get(t) == there[t])
                changed = {t: {"rows_backup": there[t].rows, "rows_source": now[t].rows if t in now else None}
                           for t in sorted(set(there) | set(now)) if now.get(t) != there.get(t)}
                out["database"] = {"tables_identical": len(same), "changed_since_backup": changed}
            index = failover.repo.media_index(failover.id)
            backed = {(b, k): (size, sha) for b, k, size, sha in index}
            src = live.objects()
            live_objects = {(b, o.key): o for b in sorted(self.stack.buckets) for o in src.list(b)}

            def changed(bucket: str, key: str, obj) -> bool:
                size, sha = backed[(bucket, key)]
                if obj.size != size:
                    return True
                there = obj.sha256 or (src.head(bucket, key) or obj).sha256  # what the store records; not read
                return there is not None and there != sha

            differ = [f"{b}/{k}" for (b, k), o in live_objects.items() if (b, k) in backed and changed(b, k, o)]
            out["media"] = {"in_both": len(set(live_objects) & set(backed)),
                            "written_since_backup": len(set(live_objects) - set(backed)),
                            "gone_from_source": len(set(backed) - set(live_objects)), "differ": differ[:20]}
        except Exception as exc:  # noqa: BLE001 - a source that does not answer is what a drill may meet
            out["unreachable"] = getattr(exc, "message", str(exc))
        return out

    def _write(self, report: dict) -> dict:
        from toolkit.paths import write_private

        folder = self.report_dir
        private_dir(folder)
        base = folder / f"drill-{self.to_name}-{report['drill']}"
        paths = {"json": str(base.with_suffix(".json")), "markdown": str(base.with_suffix(".md"))}
        write_private(base.with_suffix(".json"), json.dumps({**report, "report": paths}, indent=2).encode())
        write_private(base.with_suffix(".md"), markdown(report).encode())
        return paths


def markdown(report: dict) -> str:
    lines = [f"# Failover drill: stack {report['stack']} on {report['target']}", "",
             f"- began: {report['began']}, took {report.get('seconds', 0):.1f} s; scratch copy "
             f"`{report['scratch']}` {'torn down' if report.get('torn_down') else 'NOT torn down'}",
             f"- result: **{'passed' if report.get('ok') else 'FAILED'}**"]
    if "error" in report:
        lines.append(f"- error: {report['error']}")
    if "backup" in report:
        lines += [f"- backup restored: {report['backup']} (recovery point {report['recovery_point']})",
                  f"- **RPO {report['rpo_seconds']:.0f} s** (age of the restored data when the drill began)",
                  f"- **RTO {report['rto_seconds']:.1f} s** (restore, verify and deploy; DNS not switched in a drill)",
                  f"- journal: `{report['journal']}`", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {s['step']} | {s['seconds']:.3f} |" for s in report["steps"]]
        lines += ["", "## What was checked", ""]
        lines += [f"- {k}: {v}" for k, v in report["checked"].items()]
    against = report.get("against_source")
    if against:
        lines += ["", f"## Against the live source ({against['source']})", ""]
        if "unreachable" in against:
            lines.append(f"- not reachable: {against['unreachable']}")
        if "database" in against:
            db = against["database"]
            lines.append(f"- database: {db['tables_identical']} tables identical to the backup; changed since: "
                         + (", ".join(f"{t} ({v['rows_backup']} -> {v['rows_source']} rows)"
                                      for t, v in db["changed_since_backup"].items()) or "none"))
        if "media" in against:
            m = against["media"]
            lines.append(f"- media: {m['in_both']} objects in both, {m['written_since_backup']} written since, "
                         f"{m['gone_from_source']} gone from the source, {len(m['differ'])} differ")
    return "\n".join(lines) + "\n"
