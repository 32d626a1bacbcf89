"""One Lifeboat object copy, as its own process so the benchmark can measure its CPU and peak RSS:
``python bench/lbcopy.py SPEC.json`` where SPEC holds ``src``, ``dst`` (store descriptions) and ``parallel``.
Prints the copier's report as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def store(spec: dict):
    kind = spec["kind"]
    if kind == "dir":
        from toolkit.stores.dirstore import DirectoryStore

        return DirectoryStore(spec["root"])
    if kind == "sftp":
        from toolkit.stores.sftpstore import RemoteDirectoryStore
        from toolkit.transport.ssh import SSHConnection

        conn = SSHConnection(spec["host"], port=spec["port"], user=spec["user"], key_file=spec["key"],
                             known_hosts=spec["known_hosts"])
        return RemoteDirectoryStore(conn, spec["root"])
    if kind == "s3":
        from providers.aws.api import AwsApi
        from toolkit.stores.s3 import S3Store

        api = AwsApi({"endpoint_url": spec["endpoint"], "region": "us-east-1"}, "bench")
        return S3Store(api, {"media": spec["bucket"]})
    raise SystemExit(f"lbcopy: unknown store kind {kind}")


def main() -> int:
    import faulthandler

    faulthandler.dump_traceback_later(float(__import__("os").environ.get("BENCH_HANG_SECONDS", "300")), exit=True)
    spec = json.loads(Path(sys.argv[1]).read_text())
    from toolkit.stores.copier import copy_objects

    # The target's bucket is there already (the benchmark makes it before each run, as migrate's prepare
    # step does before its media step): the copy starts with the source's listing, and the target's
    # connection is made beside it (copy_objects' look at the target).
    src, dst = store(spec["src"]), store(spec["dst"])
    report = copy_objects(src, dst, ["media"], parallel=spec.get("parallel", 8))
    print(json.dumps(report))
    from toolkit import settle

    settle()  # exits as the lifeboat command does (the command line itself, click and all, not loaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
