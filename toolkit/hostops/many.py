"""Work on many hosts at once (or one at a time), every failure reported with its host."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from toolkit.errors import ToolkitError


class HostsFailed(ToolkitError):
    """One or more hosts failed; the others finished. Carries each failure."""

    code = "hosts.failed"

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        parts = []
        for host, exc in failures.items():
            message = getattr(exc, "message", str(exc))
            parts.append(message if message.startswith(host) or f"on {host}" in message else f"{host}: {message}")
        exit_codes = {getattr(e, "exit_code", 1) for e in failures.values()}
        self.exit_code = exit_codes.pop() if len(exit_codes) == 1 else 1
        hints = [h for h in dict.fromkeys(getattr(e, "hint", None) for e in failures.values()) if h]
        codes = {getattr(e, "code", None) for e in failures.values()}
        super().__init__(f"{len(failures)} host(s) failed: " + "; ".join(parts), hint=" ".join(hints) or None,
                         code=codes.pop() if len(codes) == 1 and None not in codes else None)


def on_hosts(names: list[str], work: Callable[[str], object], *, parallel: bool = True) -> dict[str, object]:
    """Run ``work(name)`` for every host; all finish even when some fail; failures are raised together."""
    results: dict[str, object] = {}
    failures: dict[str, BaseException] = {}
    if parallel and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            futures = {name: pool.submit(work, name) for name in names}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as exc:  # reported per host below
                    failures[name] = exc
    else:
        for name in names:
            try:
                results[name] = work(name)
            except Exception as exc:
                failures[name] = exc
    if failures:
        raise HostsFailed(failures)
    return results


def one_host_at_a_time(names: list[str], work: Callable[[str], object]) -> None:
    """Run ``work(name)`` host after host (rollouts: the others keep serving); stop at the first failure,
    reported with the host's name like ``on_hosts`` does."""
    for name in names:
        try:
            work(name)
        except Exception as exc:
            raise HostsFailed({name: exc}) from None
