"""The test hook for crash tests: LIFEBOAT_FAULT=<how>:<point> makes a workflow stop at a named point.
Nothing happens unless that variable is set; the workflows call :func:`fault` at their points and the step
runner (:mod:`toolkit.run.steps`) calls it at the start of every step.

- ``kill:<point>`` kills this process (SIGKILL, as a crash or an operator's kill -9 would);
- ``fail:<point>`` fails there as an error would (``<workflow>.fault``);
- ``stall:<point>`` waits LIFEBOAT_FAULT_SECONDS there (after saying so on stderr), for a test to break
  something meanwhile (stop a host).

A point is a step name (right after the journal says it began) or one of :data:`FAULT_POINTS` (migrate's:
mid-dump, mid-object (half of a large object sent), deploy done but not journalled, source paused but not
journalled, a record switched but not confirmed), ``replay:done`` (failover: the scratch cluster running) and
``<part>:mid`` (backup: a part's stream begun)."""

from __future__ import annotations

import os
import time

from toolkit.errors import ProviderError

FAULT_POINTS = ["database:mid", "media:mid", "deploy:mid", "freeze:mid", "cutover:mid"]


def fault(point: str, workflow: str) -> None:
    how = os.environ.get("LIFEBOAT_FAULT")
    if not how or how.partition(":")[2] != point:
        return
    if how.startswith("stall:"):
        import sys

        print(f"lifeboat: fault: stalled at {point}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("LIFEBOAT_FAULT_SECONDS", "30")))
    if how.startswith("kill:"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if how.startswith("fail:"):
        raise ProviderError(f"{workflow}: injected failure at {point} (LIFEBOAT_FAULT).", code=f"{workflow}.fault")
