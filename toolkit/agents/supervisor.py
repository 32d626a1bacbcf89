"""A small process supervisor: keeps a stack's service processes running on one machine.

Run as ``python -m toolkit.agents.supervisor SPEC`` (detached, by the local provider). SPEC is a JSON file:

    {"programs": [{"name": "web.0", "argv": [...], "cwd": "...", "env_file": "...", "log": "...",
                   "user": "lifeboat-app"}]}

Each program runs in its own process group (as ``user`` when given and the supervisor runs as root) with the environment read from its env file (0600; values
never appear on a command line). A program that exits is restarted with exponential backoff (1 s up to
30 s); one that keeps dying within 2 s of starting is reported as "crashed" while it is retried.

``--exec ENV_FILE USER CWD ARGV...`` is what a systemd unit runs instead (toolkit.hostops.SystemdRuntime):
read the environment file as root, switch to USER, exec ARGV; systemd then keeps it running.

Signals: SIGHUP re-reads SPEC and restarts only programs whose definition changed; SIGTERM stops every
program (SIGTERM to its group, SIGKILL after 10 s) and exits. The supervisor writes ``status.json`` next
to SPEC (pid, state, restarts, start time per program) whenever something changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE = 10.0


def read_env_file(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    with open(path) as handle:
        return json.load(handle)


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Program:
    def __init__(self, spec: dict):
        self.spec = spec
        self.name = spec["name"]
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.next_start = 0.0
        self.backoff = 1.0
        self.quick_deaths = 0
        self.last_exit: int | None = None

    @property
    def fingerprint(self) -> str:
        env = read_env_file(self.spec.get("env_file"))
        blob = json.dumps([self.spec, env], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        env.update(read_env_file(self.spec.get("env_file")))
        log = open(self.spec["log"], "ab")
        account = {}
        if self.spec.get("user") and os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(self.spec["user"])
            account = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            env.setdefault("HOME", entry.pw_dir)
        try:
            self.proc = subprocess.Popen(
                self.spec["argv"], cwd=self.spec.get("cwd") or None, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **account,
            )
        except (OSError, KeyError) as exc:
            log.write(f"lifeboat supervisor: cannot start {self.spec['argv'][0]}: {exc}\n".encode())
            self.proc = None
            self.last_exit = 127
            self.quick_deaths += 1
            self.next_start = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 30.0)
        finally:
            log.close()
        self.started_at = time.time()

    def poll(self) -> bool:
        """True when the program died since the last poll."""
        if self.proc is None:
            return False
        code = self.proc.poll()
        if code is None:
            if time.time() - self.started_at > 10:
                self.backoff = 1.0
                self.quick_deaths = 0
            return False
        self.last_exit = code
        # Children the program left in its group (a web server's workers holding the port) die with it,
        # so the restarted program can bind again.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.quick_deaths = self.quick_deaths + 1 if time.time() - self.started_at < 2 else 0
        self.proc = None
        self.next_start = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        # Reap anything left in the group (a worker's children).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def status(self) -> dict:
        if self.proc is not None:
            state = "running"
        elif self.quick_deaths >= 3:
            state = "crashed"
        else:
            state = "restarting"
        return {"pid": self.proc.pid if self.proc else None, "state": state, "restarts": self.restarts,
                "started_at": self.started_at, "last_exit": self.last_exit, "argv": self.spec["argv"],
                "generation": self.spec.get("generation")}


class Supervisor:
    def __init__(self, spec_path: Path):
        self.spec_path = spec_path
        self.status_path = spec_path.with_name("status.json")
        self.programs: dict[str, Program] = {}
        self.fingerprints: dict[str, str] = {}
        self.stopping = False
        self.reload_requested = True

    def load(self) -> None:
        spec = json.loads(self.spec_path.read_text())
        wanted = {p["name"]: p for p in spec["programs"]}
        for name in list(self.programs):
            if name not in wanted:
                self.programs.pop(name).stop()
                self.fingerprints.pop(name, None)
        for name, pspec in wanted.items():
            program = Program(pspec)
            fp = program.fingerprint
            if name in self.programs and self.fingerprints.get(name) == fp:
                continue
            if name in self.programs:
                self.programs[name].stop()
            self.programs[name] = program
            self.fingerprints[name] = fp
            program.start()
        self.write_status()

    def write_status(self) -> None:
        write_json_atomic(self.status_path, {"supervisor": os.getpid(), "updated": time.time(),
                                             "programs": {n: p.status() for n, p in self.programs.items()}})

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                try:
                    self.load()
                except Exception as exc:  # keep running what runs; report in the log
                    print(f"lifeboat supervisor: cannot load {self.spec_path}: {exc}", file=sys.stderr, flush=True)
            changed = False
            now = time.monotonic()
            for program in self.programs.values():
                if program.poll():
                    changed = True
                if program.proc is None and now >= program.next_start:
                    program.restarts += 1
                    program.start()
                    changed = True
            if changed:
                self.write_status()
            time.sleep(0.2)
        for program in self.programs.values():
            program.stop()
        self.write_status()
        return 0

    def _on_term(self, *_):
        self.stopping = True

    def _on_hup(self, *_):
        self.reload_requested = True


def reap(status_path: Path, names: list[str] | None = None) -> list[int]:
    """Stop programs a dead supervisor left running. A process counts as ours only if it leads its own
    process group and runs the argv recorded for it (argv[0] compared by base name, since exec may have
    resolved it to a full path). Returns the pids stopped."""
    try:
        programs = json.loads(status_path.read_text()).get("programs", {})
    except (FileNotFoundError, ValueError):
        return []
    stopped = []
    for name, program in programs.items():
        pid, argv = program.get("pid"), program.get("argv") or []
        if (names and name not in names) or not pid or not argv:
            continue
        try:
            if os.getpgid(pid) != pid:
                continue
            running = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        running = [a.decode(errors="replace") for a in running]
        if running[1:] != argv[1:] or os.path.basename(running[0]) != os.path.basename(argv[0]):
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + STOP_GRACE
            while time.time() < deadline and alive(pid):
                time.sleep(0.1)
            if not alive(pid):
                break
        stopped.append(pid)
    return stopped


def terminate(pid: int, grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait up to ``grace`` seconds for the process to go, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def exec_program(env_file: str, user: str, cwd: str, argv: list[str]) -> None:
    """``--exec``: what a systemd unit runs (toolkit.hostops.SystemdRuntime): as root, read the program's
    environment file, switch to its account, and become the program (systemd then watches it directly)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env.update(read_env_file(env_file or None))
    if user and os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(user)
        env.setdefault("HOME", entry.pw_dir)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    os.chdir(cwd or "/")
    os.execvpe(argv[0], argv, env)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "--exec":
        if len(args) < 5:
            print("usage: supervisor.py --exec ENV_FILE USER CWD ARGV...", file=sys.stderr)
            return 2
        exec_program(args[1], args[2], args[3], args[4:])
    if args and args[0] == "--reap":
        if len(args) < 2:
            print("usage: supervisor.py --reap STATUS [PROGRAM...]", file=sys.stderr)
            return 2
        stopped = reap(Path(args[1]), args[2:] or None)
        print(json.dumps({"stopped": stopped}))
        return 0
    if len(args) != 1:
        print("usage: python -m toolkit.agents.supervisor SPEC | --reap STATUS [PROGRAM...]", file=sys.stderr)
        return 2
    spec = Path(args[0]).resolve()
    (spec.parent / "supervisor.pid").write_text(str(os.getpid()))
    return Supervisor(spec).run()


if __name__ == "__main__":
    sys.exit(main())
