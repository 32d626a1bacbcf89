"""Lifeboat: move a self-hosted social app between hosts, verified and resumable.

The package is provider-agnostic: the stack model, the provider contract, connections, pure command
builders, the planner, the engine and its output. Provider adapters live in the top-level ``providers``
package and are resolved lazily by :mod:`toolkit.contract.registry`.
"""

__version__ = "0.1.0"
ENVELOPE_VERSION = 1


def settle() -> None:
    """Leave everything made so far out of garbage collection, for a process about to exit: the
    interpreter's final collections otherwise walk all of it once more (the AWS SDK's service models alone
    are tens of thousands of objects: 80-90 ms of CPU at the end of a command that used S3, measured).
    What runs at exit still runs: atexit handlers (weakref.finalize callbacks among them: the kept batch
    writers, temporary folders) and the joins of running threads; standard output is flushed as ever.
    Objects left in reference cycles are not collected one by one: their memory goes back with the
    process (nothing of Lifeboat's relies on a cycle's __del__: journals and outputs are written and
    synced where they are made)."""
    import gc

    gc.freeze()
