"""`lifeboat logs`: the last lines of each replica's output, or its output as it comes (``follow``), read
where it is kept (toolkit.contract.LogSource): a file on this machine or a host (`tail`, over the same
connections as everything else), or a container's log (`docker logs`). Nothing is written anywhere."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from toolkit.contract import LogSource
from toolkit.errors import BadInput


def argv(source: LogSource, lines: int, *, follow: bool = False, since: str | None = None) -> list[str]:
    """The command that prints ``source``'s last ``lines`` lines (and, with ``follow``, what comes after)."""
    if source.container:
        docker = ["docker", "logs", "--tail", str(lines), *(["--since", since] if since else []),
                  *(["--follow"] if follow else []), source.container]
        return ["sh", "-c", 'exec "$@" 2>&1', "sh", *docker]  # (the container's stderr is the log's too)
    return ["tail", "-n", str(lines), *(["-F"] if follow else []), str(source.path)]


def check_since(sources: list[LogSource], since: str | None) -> None:
    """``since`` needs a time per line: containers' logs have one; files hold the output as the app wrote it."""
    files = [s.label for s in sources if not s.container]
    if since and files:
        raise BadInput(f"--since needs a time per line, which only the docker runtime's logs keep; "
                       f"{', '.join(files)} {'is a file' if len(files) == 1 else 'are files'} of the app's output "
                       "as it wrote it.", hint="use -n LINES instead.", code="logs.since_unsupported")


def tail(sources: list[LogSource], lines: int, since: str | None = None) -> list[tuple[LogSource, list[str]]]:
    """Each source's last ``lines`` lines (read side by side), in the order given."""
    check_since(sources, since)
    found: dict[int, list[str]] = {}

    def read(index: int, source: LogSource) -> None:
        done = source.conn.run(argv(source, lines, since=since), env=source.env, check=False, timeout=120)
        text = done.stdout.decode("utf-8", "replace")
        if not done.ok:
            why = (done.stderr.decode("utf-8", "replace") or text).strip().splitlines()[-1:] or ["?"]
            text = f"(no log to read: {why[0]})\n"
        found[index] = text.splitlines()

    threads = [threading.Thread(target=read, args=(i, s), daemon=True) for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [(s, found.get(i, [])) for i, s in enumerate(sources)]


def follow(sources: list[LogSource], lines: int, emit: Callable[[LogSource, str], None],
           since: str | None = None, stop: threading.Event | None = None) -> None:
    """Each source's last ``lines`` lines, then its lines as they come, handed to ``emit`` one at a time
    (from this thread) until ``stop`` is set or every source has ended."""
    check_since(sources, since)
    stop = stop or threading.Event()
    lines_in: queue.Queue = queue.Queue()
    done = object()

    def read(source: LogSource) -> None:
        try:
            with source.conn.read_stream(argv(source, lines, follow=True, since=since), env=source.env) as stream:
                for raw in iter(stream.readline, b""):
                    lines_in.put((source, raw.decode("utf-8", "replace").rstrip("\n")))
                    if stop.is_set():
                        break
        except Exception as exc:  # a host gone: say so where its lines were, keep the others going
            lines_in.put((source, f"(its log stopped: {getattr(exc, 'message', exc)})"))
        finally:
            lines_in.put((source, done))

    for source in sources:
        threading.Thread(target=read, args=(source,), daemon=True).start()
    open_sources = len(sources)
    while open_sources and not stop.is_set():
        try:
            source, line = lines_in.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is done:
            open_sources -= 1
            continue
        emit(source, line)
