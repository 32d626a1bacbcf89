"""Copying objects between two stores: the media step of ``migrate`` and what the benchmarks measure.

Objects move as streams (never whole in memory), ``parallel`` at a time (capped by what either store's
transport allows), skipping those the target already holds with the same size and SHA-256; each copy is
verified by the size and SHA-256 the target reports for what it stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

from toolkit.contract import ObjectStore
from toolkit.errors import ToolkitError, VerificationFailed
from toolkit.run.events import Events
from toolkit.stores.digests import differing, method_of

BATCH_OBJECT_MAX = 16 << 20  # objects below this go in batches to stores that take them
BATCH_COUNT = 500
BATCH_BYTES = 32 << 20


def plan_batches(objs: list, size: Callable = lambda obj: obj.size) -> list[list]:
    """Batches of up to BATCH_COUNT objects and BATCH_BYTES, in order; a small remainder (under a quarter of
    both) joins the batch before it instead of paying a stream's fixed cost (a connection, the writer's
    start, a sync) for a handful of objects."""
    batches: list[list] = []
    filled = 0
    for obj in objs:
        if not batches or len(batches[-1]) >= BATCH_COUNT or filled + size(obj) > BATCH_BYTES:
            batches.append([])
            filled = 0
        batches[-1].append(obj)
        filled += size(obj)
    if len(batches) > 1 and len(batches[-1]) < BATCH_COUNT // 4 and filled < BATCH_BYTES // 4:
        last = batches.pop()
        batches[-1].extend(last)
    return batches


def group_small(items: list, buckets: list[str], *, bucket: Callable, size: Callable) -> tuple[list, list[list]]:
    """(the items of BATCH_OBJECT_MAX or more, each on its own; the smaller ones in batches of one bucket
    each, plan_batches): for stores that write or read many small objects through one stream."""
    singles = [item for item in items if size(item) >= BATCH_OBJECT_MAX]
    groups = [group for name in buckets
              for group in plan_batches([item for item in items
                                         if bucket(item) == name and size(item) < BATCH_OBJECT_MAX], size)]
    return singles, groups


def copy_objects(src: ObjectStore, dst: ObjectStore, buckets: list[str], *, parallel: int = 8,
                 events: Events | None = None, fault: Callable[[str], None] | None = None,
                 mirror: bool = False) -> dict:
    """Every object of ``buckets`` from ``src`` to ``dst``, skipping those already identical (size and
    SHA-256), each copy checked. ``mirror``: afterwards the target equals the source both ways (the pass
    after a write freeze): objects on the target that the source's listing lacks are removed, only once
    every copy succeeded and both sides were listed whole, then the target is listed again and must hold
    exactly the source's keys and sizes (VerificationFailed otherwise). Without it such extras are only
    counted (``extra_on_target``)."""
    from concurrent.futures import ThreadPoolExecutor

    events = events or Events()

    # Three independent looks, at once (each is a round trip or more): what a killed earlier attempt was
    # writing is swept from the target, the target listed once (not one round trip per object), the source
    # listed. All done before any copy. A mirror needs the target's listing whole.
    with ThreadPoolExecutor(2) as pool:
        sweeping, listing = pool.submit(dst.sweep_partial), pool.submit(_listed, dst, buckets, whole=mirror)
        work = [(b, o) for b in buckets for o in src.list(b)]
        held, swept = listing.result(), sweeping.result()
    all_bytes = sum(o.size for _, o in work)
    tally = {"copied": 0, "skipped": 0, "sent": 0, "done": 0}
    guard = threading.Lock()

    def needed(bucket: str, obj) -> tuple[bool, str | None]:
        """(copy it?, the SHA-256 it must arrive with, when known before sending)."""
        # None: not in the source's listing (S3 records it with the object: its stream carries it), or the
        # source keeps no digest (objects its apps wrote: the writer's hash is then the object's)
        want = obj.sha256
        there = held.get((bucket, obj.key))
        if there is None or there.size != obj.size:
            return True, want
        want = want or src.checksum(bucket, obj.key)
        return (there.sha256 or dst.checksum(bucket, obj.key)) != want, want

    def counted(bucket: str, obj, wrote: bool) -> None:
        with guard:
            tally["copied" if wrote else "skipped"] += 1
            tally["sent"] += obj.size if wrote else 0
            tally["done"] += obj.size
            events.progress("media", tally["done"], all_bytes, unit="bytes")

    def check(bucket: str, obj, info, want: str | None) -> None:
        # A writer hashes what the stream gave it as it stores it (and, on a remote host, checks that hash
        # where the bytes landed): with no digest at the source, that hash is the object's.
        want = want or info.sha256
        if info.size != obj.size or info.sha256 != want:
            dst.delete(bucket, obj.key)  # not what the source records: it does not stay on the target
            raise VerificationFailed(f"object {obj.key!r} of {bucket} arrived with size {info.size} and SHA-256 "
                                     f"{info.sha256}, expected {obj.size} and {want}.")

    def watched(stream, obj):
        if fault is not None and obj.size >= 1 << 20:  # crash tests stop half-way through a large object
            return _Watched(stream, _Tally(), lambda sent, half=obj.size // 2:
                            fault("media:mid") if sent >= half else None)
        return stream

    def copy(bucket: str, obj) -> None:
        wrote, want = needed(bucket, obj)
        if wrote:
            with src.open_read(bucket, obj.key) as stream:
                want = want or getattr(stream, "recorded_sha256", None)
                stream = watched(stream, obj)
                if batching:  # one object through the batch writer: it takes the source's digest
                    info = dst.write_batch(bucket, [(obj.key, lambda s=stream: nullcontext(s), obj.size, None, want)])[0]
                else:
                    info = dst.write(bucket, obj.key, stream, size=obj.size)
            check(bucket, obj, info, want)
        counted(bucket, obj, wrote)

    def copy_batch(bucket: str, objs: list) -> None:
        plan = [(obj, *needed(bucket, obj)) for obj in objs]
        todo = [(obj, want) for obj, wrote, want in plan if wrote]
        if todo:
            recorded: dict[str, str | None] = {}
            # a source that reads in batches too (an SSH host) streams the batch's objects in order
            reading = src.open_many(bucket, [obj.key for obj, _ in todo]) if src.READS_IN_BATCHES else nullcontext()
            with reading as many:

                @contextmanager
                def opened(key: str):
                    if many is not None:
                        got, stream = next(many)
                        assert got == key, (got, key)  # write_batch opens them in order
                        yield stream
                        return
                    with src.open_read(bucket, key) as stream:
                        recorded[key] = getattr(stream, "recorded_sha256", None)
                        yield stream

                infos = dst.write_batch(bucket, [(obj.key, (lambda key=obj.key: opened(key)), obj.size, None, want)
                                                 for obj, want in todo])
            failed = None
            for (obj, want), info in zip(todo, infos, strict=True):
                try:  # every object of the batch is checked (and a wrong one removed) before raising
                    check(bucket, obj, info, want or recorded.get(obj.key))
                except VerificationFailed as exc:
                    failed = failed or exc
            if failed is not None:
                raise failed
        for obj, wrote, _ in plan:
            counted(bucket, obj, wrote)

    def copy_group(bucket: str, objs: list) -> None:
        """Small objects from a source that reads in batches, each written on its own."""
        plan = [(obj, *needed(bucket, obj)) for obj in objs]
        for obj, wrote, _ in plan:
            if not wrote:
                counted(bucket, obj, False)
        todo = [(obj, want) for obj, wrote, want in plan if wrote]
        if not todo:
            return
        with src.open_many(bucket, [obj.key for obj, _ in todo]) as many:
            for (obj, want), (key, stream) in zip(todo, many, strict=True):
                info = dst.write(bucket, key, watched(stream, obj), size=obj.size)
                check(bucket, obj, info, want or getattr(stream, "recorded_sha256", None))
                counted(bucket, obj, True)

    # Small objects go to a store that can take them in batches (SSH hosts: one stream, no round trip
    # per object), or come in groups from a store that reads them so; the others one by one, in parallel
    # where the stores allow.
    batches: list[tuple[str, list]] = []
    batching = hasattr(dst, "write_batch")
    if batching or src.READS_IN_BATCHES:
        singles, groups = group_small(work, buckets, bucket=lambda item: item[0], size=lambda item: item[1].size)
        batches = [(group[0][0], [obj for _, obj in group]) for group in groups]
    else:
        singles = work

    workers = max(1, min(parallel, src.PARALLEL, dst.PARALLEL))
    # One queue, largest first (a large object started last would run alone at the end): batches and
    # single objects share the workers.
    tasks = [(copy_batch if batching else copy_group, bucket, objs, sum(o.size for o in objs))
             for bucket, objs in batches]
    tasks += [(copy, bucket, obj, obj.size) for bucket, obj in singles]
    tasks.sort(key=lambda t: -t[3])
    with releasing(src, dst):
        run_parallel(lambda func, bucket, what, _size: func(bucket, what), tasks, workers)
    out = {"objects": len(work), "copied": tally["copied"], "already_there": tally["skipped"],
           "bytes_sent": tally["sent"], "parallel": workers, "verified": "size and SHA-256 of every object"}
    if swept:
        out["partial_writes_removed"] = swept
    source_keys = {(bucket, obj.key): obj.size for bucket, obj in work}
    if mirror:
        out.update(_mirror(dst, buckets, source_keys, held, events))
    else:
        extra = sorted(k for k in held if k not in source_keys)
        if extra:
            out["extra_on_target"] = len(extra)
            out["extra_examples"] = [f"{b}/{k}" for b, k in extra[:10]]
    return out


def _listed(store: ObjectStore, buckets: list[str], *, whole: bool) -> dict[tuple[str, str], object]:
    """(bucket, key) -> ObjectInfo of every object of ``buckets``; a missing bucket holds nothing. ``whole``:
    any other failure to list is raised (nothing may be removed on a partial listing); else that bucket
    counts as empty (its objects are then all copied)."""
    found: dict[tuple[str, str], object] = {}
    for bucket in buckets:
        try:
            found.update(((bucket, o.key), o) for o in store.list(bucket))
        except ToolkitError as exc:
            if whole and getattr(exc, "code", None) != "objects.no_bucket":
                raise
    return found


def _mirror(dst: ObjectStore, buckets: list[str], source: dict[tuple[str, str], int], held: dict,
            events: Events) -> dict:
    """What the target held beyond the source (``held``: its whole listing before the copy, which added
    only the source's keys) removed, then the target listed again and compared with the source (the way
    ``rclone sync`` guards deletion: only after a complete copy and complete listings)."""
    extra = sorted(k for k in held if k not in source)
    for index, (bucket, key) in enumerate(extra):
        dst.delete(bucket, key)
        events.progress("media: removing what the source no longer holds", index + 1, len(extra), unit="objects")
    after = {k: info.size for k, info in _listed(dst, buckets, whole=True).items()}
    missing = sorted(k for k in source if k not in after)
    left = sorted(k for k in after if k not in source)
    wrong = sorted(k for k in source if k in after and after[k] != source[k])
    if missing or left or wrong:
        def names(keys):
            return ", ".join(f"{b}/{k}" for b, k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        problems = [f"{len(missing)} missing ({names(missing)})" if missing else "",
                    f"{len(left)} not on the source ({names(left)})" if left else "",
                    f"{len(wrong)} of another size ({names(wrong)})" if wrong else ""]
        raise VerificationFailed("the target's objects differ from the source's after the final pass: "
                                 + "; ".join(p for p in problems if p) + ".", code="objects.differ")
    return {"removed_from_target": len(extra), "removed_examples": [f"{b}/{k}" for b, k in extra[:20]],
            "verified": "size and SHA-256 of every object copied; the target holds exactly the source's keys "
                        "and sizes (listed again after the pass)"}


PARALLEL_DB_BYTES = 1 << 30  # jobs="auto": a parallel copy from this size up


def copy_database(src, dst, *, events: Events | None = None, frozen: bool = False,
                  fault: Callable[[str], None] | None = None, jobs: int | str = "auto",
                  skip_identical: bool = True) -> dict:
    """``pg_dump`` of ``src`` streamed into ``pg_restore`` on ``dst``, then verified: row counts and digests
    per table must be equal. Where the source can export a snapshot, the dump and the source's digests come
    from the same one (computed while the dump streams), so a source that keeps taking writes still verifies
    exactly. Without one, tables written during the copy on a live source are reported (the pass after the
    freeze verifies them); on a frozen source any difference fails (exit 4).

    ``jobs`` > 1 (or "auto" on a database of 1 GiB or more with several tables) copies in parts, all from
    the one snapshot and each a stream (no temporary file): the schema without indexes and constraints,
    then each table's rows on ``jobs`` streams at once (largest first), then sequence values, then indexes
    and constraints.

    ``skip_identical``: where the target already holds tables (a second pass, a re-run), the source's
    digests are taken first (in the snapshot) and compared with the target's: when every table and sequence
    is equal, nothing is sent. Otherwise the whole database is sent again and replaces the target's."""
    from contextlib import ExitStack

    from toolkit.contract import Unsupported

    events = events or Events()
    with ExitStack() as held:
        try:
            snapshot, digests, tables = held.enter_context(src.snapshot())
        except Unsupported:
            snapshot = digests = tables = None
        if skip_identical and snapshot is not None:
            there = dst.table_digests()
            if there:  # the target holds a copy: is it this one?
                before = digests()
                there = dst.table_digests(method_of(before)) if method_of(before) != method_of(there) else there
                if before == there:
                    return {"tables": len(before), "rows": sum(d.rows for d in before.values()), "jobs": 0,
                            "sent_bytes": 0, "verified": "row counts and per-table digests already equal on "
                            "both sides (source digests in its snapshot): nothing sent"}
                digests = _known(before)  # taken already: not again alongside the copy
        listed = tables() if tables is not None else []
        if jobs == "auto":
            jobs = 4 if len(listed) > 1 and sum(b for _, _, b in listed) >= PARALLEL_DB_BYTES else 1
        jobs = int(jobs) if snapshot is not None else 1
        # In the snapshot, so alongside the copy (whichever starts first).
        worker = Alongside(digests, "lifeboat-digests") if digests is not None else None
        moved = _Tally()  # bytes of every part, for progress

        def passed(total: int) -> None:
            events.progress("database", total, None, unit="bytes")
            if fault is not None:
                fault("database:mid")

        # Compressing costs both ends CPU and pays only where the stream crosses a network.
        compress = 1 if src.remote or dst.remote else 0

        def move(part=None) -> None:
            with src.dump(snapshot=snapshot, part=part, compress=compress) as stream:
                dst.restore(_Watched(stream, moved, passed), clean=True, part=part)

        if jobs > 1:
            try:
                move("pre-data")  # one transaction: on failure the target is as it was
            except ToolkitError:
                # A target holding an earlier copy keeps its foreign keys and indexes (post-data), which
                # the schema part alone cannot drop: that pass goes as one stream, which replaces all.
                jobs = 1
        if jobs > 1:
            run_parallel(move, [(("table", schema, table),) for schema, table, _ in listed], jobs)
            move("sequences")
            move("post-data")
        else:
            move()
        before = worker.result() if worker is not None else src.table_digests()
    after = dst.table_digests(method_of(before))
    out = {"tables": len(before), "rows": sum(d.rows for d in before.values()), "jobs": jobs,
           "sent_bytes": moved.count}
    differ = differing(before, after)
    if not differ:
        out["verified"] = ("row counts and per-table digests equal on both sides"
                           + (" (source digests in the dump's snapshot)" if snapshot else ""))
        return out
    if snapshot is None and not frozen:
        out["verified"] = (f"written on the live source during the copy: {', '.join(differ)}; the final pass "
                           "after the freeze verifies them")
        out["changed_during_copy"] = differ
        return out
    raise VerificationFailed(f"tables differ after the copy: {', '.join(differ)}.",
                             hint="the source keeps serving; re-run (or --resume) to copy again.")


def _known(value):
    """A digests function whose answer is already known."""
    return lambda: value


@contextmanager
def releasing(*stores: ObjectStore):
    """Every store released after the work (kept sessions and batch writers ended), even when one release
    fails. An error that stopped the work is the one raised (a writer that then fails to end is killed by
    its release, and has nothing to place); after work that went well, the first failed release is."""
    try:
        yield
    except BaseException:
        _release_all(stores)  # (a failed release is dropped: the error that stopped the work matters more)
        raise
    failed = _release_all(stores)
    if failed is not None:
        raise failed


def _release_all(stores) -> Exception | None:
    """Release every store; the first failure, if any, returned."""
    failed = None
    for store in stores:
        try:
            store.release()
        except Exception as exc:  # noqa: BLE001 - the others are released all the same
            failed = failed or exc
    return failed


def run_parallel(func, items: list[tuple], workers: int) -> None:
    """``func(*item)`` for every item on up to ``workers`` threads; the first failure stops the rest (those
    not started are dropped, running ones finish) and is raised."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            func(*item)
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lifeboat-copy")
    try:
        futures = [pool.submit(func, *item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise future.exception()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Alongside:
    """``func()`` on a thread of its own; :meth:`result` waits for it and returns its value, or raises what
    it raised, in the caller's thread."""

    def __init__(self, func: Callable[[], object], name: str):
        self._out: dict = {}

        def run() -> None:
            try:
                self._out["value"] = func()
            except BaseException as exc:  # noqa: BLE001 - raised in result()
                self._out["error"] = exc

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]


class _Tally:
    """A byte count several streams add to (parallel parts)."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> int:
        with self.lock:
            self.count += n
            return self.count


class _Watched:
    """Reads through; adds what each read gave to ``tally`` and tells ``seen`` the new total."""

    def __init__(self, stream, tally: _Tally, seen: Callable[[int], None]):
        self.stream, self.tally, self.seen = stream, tally, seen

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.seen(self.tally.add(len(data)))
        return data
