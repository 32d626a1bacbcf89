"""Peak memory while copying one large object (issue 8: a 2 GB object, peak RSS < 200 MB): Lifeboat's copier
and `rclone copy` on the same object, source and target, each as its own process, peak RSS from wait4.

Pairs: local disk -> SSH host (a real sshd on loopback), local disk -> S3 (moto: a multipart upload) and
S3 -> SSH host (a download through the resuming reader). BENCH_MEMORY_MB sets the object's size (default
2048). One run each: peak RSS does not vary the way time does. Needs root (sshd), rclone, moto (make
install). Writes bench/results/memory.json; bench/report.py turns it into a BENCHMARKS.md section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import empty_host_target, measure, save_results  # noqa: E402 - after the path is set

SIZE = int(os.environ.get("BENCH_MEMORY_MB", "2048")) << 20


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = min(left, 8 << 20)
            out.write(os.urandom(chunk))
            left -= chunk


def main() -> int:
    from tests.awslab import AWS_ENV, start_moto
    from tests.rclonelab import s3_remote, sftp_remote, write_config
    from tests.sshd import start_lab
    from toolkit.stores.dirstore import DirectoryStore

    rclone = shutil.which("rclone")
    if not rclone:
        raise SystemExit("bench: rclone is missing (apt-get install -y rclone)")
    work = Path(tempfile.mkdtemp(prefix="lifeboat-bench-mem-", dir="/tmp"))
    work.chmod(0o755)
    os.environ.update(AWS_ENV)
    rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    results: dict = {"object_bytes": SIZE, "pairs": {}}
    moto, lab = None, None
    try:
        plain = work / "plain"
        write_random(plain / "big.bin", SIZE)
        lb_src = DirectoryStore(work / "lbsrc")
        lb_src.create_bucket("media")
        with open(plain / "big.bin", "rb") as handle:
            lb_src.write("media", "big.bin", handle, size=SIZE)
        print(f"bench: one object of {SIZE / 1e6:.0f} MB", file=sys.stderr)

        (work / "lab").mkdir()
        lab = start_lab(work / "lab", count=1)
        host = lab.hosts[0]
        moto = start_moto(work)
        config = write_config(work / "rclone.conf", {
            "host": sftp_remote(host.address, host.port, lab.user, lab.client_key, lab.known_hosts),
            "a": s3_remote(moto.url, AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])})
        rclone_env["RCLONE_CONFIG"] = str(config)
        target_root = work / "hostdata"
        target_root.mkdir()
        shutil.chown(target_root, lab.user)
        import boto3

        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench-src")
        subprocess.run([rclone, "copy", str(plain), "a:bench-src"], check=True, env=rclone_env)

        def clear_host() -> None:
            empty_host_target(target_root, lab.user)

        def clear_s3() -> None:
            if any(b["Name"] == "bench-dst" for b in s3.list_buckets()["Buckets"]):
                subprocess.run([rclone, "purge", "a:bench-dst"], check=True, env=rclone_env, capture_output=True)
            s3.create_bucket(Bucket="bench-dst")

        sftp = {"kind": "sftp", "host": host.address, "port": host.port, "user": lab.user,
                "key": str(lab.client_key), "known_hosts": str(lab.known_hosts), "root": str(target_root / "lb")}
        pairs = {
            "local disk -> SSH host": ({"kind": "dir", "root": str(work / "lbsrc")}, sftp,
                                       [str(plain), f"host:{target_root / 'rc'}"], clear_host),
            "local disk -> S3": ({"kind": "dir", "root": str(work / "lbsrc")},
                                 {"kind": "s3", "endpoint": moto.url, "bucket": "bench-dst"},
                                 [str(plain), "a:bench-dst"], clear_s3),
            "S3 -> SSH host": ({"kind": "s3", "endpoint": moto.url, "bucket": "bench-src"}, sftp,
                               ["a:bench-src", f"host:{target_root / 'rc'}"], clear_host),
        }
        only = [p.strip() for p in os.environ.get("BENCH_PAIRS", "").split(",") if p.strip()]
        for name, (src, dst, rc_args, clear) in pairs.items():
            if only and not any(o in name for o in only):
                continue
            row = {}
            clear()
            spec = work / "spec.json"
            spec.write_text(json.dumps({"src": src, "dst": dst, "parallel": 8}))
            sample = measure([sys.executable, str(REPO / "bench" / "lbcopy.py"), str(spec)])
            report = json.loads(sample["stdout"])
            assert report["copied"] == 1 and report["bytes_sent"] == SIZE, report
            row["lifeboat"] = {"wall_s": round(sample["wall"], 2), "peak_rss_mb": round(sample["rss_mb"], 1)}
            clear()
            sample = measure([rclone, "copy", "--checksum", *rc_args], env=rclone_env)
            row["rclone"] = {"wall_s": round(sample["wall"], 2), "peak_rss_mb": round(sample["rss_mb"], 1)}
            results["pairs"][name] = row
            print(f"bench: {name}: lifeboat {row['lifeboat']['peak_rss_mb']} MB, rclone "
                  f"{row['rclone']['peak_rss_mb']} MB peak RSS", file=sys.stderr)
    finally:
        if moto is not None:
            moto.stop()
        if lab is not None:
            for h in lab.hosts:
                h.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("memory", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
