"""Object copy benchmark: Lifeboat's copier (the media step of `migrate`) against `rclone copy --checksum`
(Debian's rclone) on the same objects, source and target, in the same run, reported as ratios.

Pairs:
- local disk -> SSH host (a real sshd on loopback): the endpoints are fast, so this is the copier's speed;
- S3 -> SSH host and SSH host -> S3 (moto and the sshd): moving off a cloud onto a host and back;
- S3 -> S3 (two moto servers): the emulator sets the wall time, so the copier's own CPU per GB counts too.

Each measurement runs the copier as its own process into an empty target (cleared between runs) and
records wall time, user+sys CPU of that process and its peak RSS (wait4). Medians over BENCH_RUNS (5).
BENCH_PAIRS=a,b runs only the pairs whose names contain one of those (and writes only them).
Data: BENCH_PROFILE=quick (default: 1,000 small 1-64 KB, 20 medium 1-8 MB, 1 large 256 MB) or full (the
issue's 10,000 small, 200 medium, 2 x 1 GB). Needs root (sshd), rclone, moto (make install). Writes
bench/results/objects.json; bench/report.py turns the results into BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import empty_host_target, measure, save_results  # noqa: E402 - after the path is set

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PROFILES = {"tiny": (50, 2, [4 << 20]), "quick": (1000, 20, [256 << 20]), "full": (10000, 200, [1 << 30, 1 << 30])}
TRANSFERS = 8


def make_data(plain: Path, profile: str) -> tuple[int, int]:
    small, medium, large = PROFILES[profile]
    rng = random.Random(7)
    plain.mkdir(parents=True)
    total = count = 0

    def put(name: str, size: int) -> None:
        nonlocal total, count
        path = plain / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            left = size
            while left:
                chunk = min(left, 1 << 20)
                out.write(rng.randbytes(chunk))
                left -= chunk
        total += size
        count += 1

    for i in range(small):
        put(f"small/{i:05d}.bin", rng.randint(1 << 10, 64 << 10))
    for i in range(medium):
        put(f"medium/{i:03d}.bin", rng.randint(1 << 20, 8 << 20))
    for i, size in enumerate(large):
        put(f"large/{i}.bin", size)
    return count, total


def summary(samples: list[dict], total_bytes: int) -> dict:
    wall = statistics.median(s["wall"] for s in samples)
    cpu = statistics.median(s["cpu"] for s in samples)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "mb_per_s": round(total_bytes / wall / 1e6, 1),
            "cpu_s_per_gb": round(cpu / (total_bytes / 1e9), 2),
            "peak_rss_mb": round(max(s["rss_mb"] for s in samples), 1), "runs": len(samples)}


def main() -> int:
    from tests.awslab import AWS_ENV, start_moto
    from tests.rclonelab import s3_remote, sftp_remote, write_config
    from tests.sshd import start_lab

    profile = os.environ.get("BENCH_PROFILE", "quick")
    rclone = shutil.which("rclone")
    if not rclone:
        raise SystemExit("bench: rclone is missing (apt-get install -y rclone)")
    version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    work = Path(tempfile.mkdtemp(prefix="lifeboat-bench-", dir="/tmp"))
    work.chmod(0o755)
    os.environ.update(AWS_ENV)
    rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    results: dict = {"profile": profile, "runs": RUNS, "rclone": version, "transfers": TRANSFERS, "pairs": {}}
    servers, lab = [], None
    try:
        plain = work / "plain"
        count, total = make_data(plain, profile)
        results["data"] = {"objects": count, "bytes": total}
        print(f"bench: {count} objects, {total / 1e6:.0f} MB ({profile})", file=sys.stderr)

        # Lifeboat's source: the same objects in a directory store (its layout), loaded once.
        from toolkit.stores.dirstore import DirectoryStore

        lb_src = DirectoryStore(work / "lbsrc")
        lb_src.create_bucket("media")
        for path in sorted(p for p in plain.rglob("*") if p.is_file()):
            with open(path, "rb") as handle:
                lb_src.write("media", str(path.relative_to(plain)), handle, size=path.stat().st_size)

        (work / "lab").mkdir()
        lab = start_lab(work / "lab", count=1)
        host = lab.hosts[0]
        moto_a, moto_b = start_moto(work), None
        servers.append(moto_a)
        mdir = work / "moto-b"
        mdir.mkdir()
        moto_b = start_moto(mdir)
        servers.append(moto_b)
        config = write_config(work / "rclone.conf", {
            "host": sftp_remote(host.address, host.port, lab.user, lab.client_key, lab.known_hosts),
            "a": s3_remote(moto_a.url, AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"]),
            "b": s3_remote(moto_b.url, AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])})
        rclone_env["RCLONE_CONFIG"] = str(config)
        # rclone reads and writes through the lab user's account: a folder it owns on the host
        target_root = work / "hostdata"
        target_root.mkdir()
        shutil.chown(target_root, lab.user)

        def clear_host() -> None:
            empty_host_target(target_root, lab.user)

        # the same objects on the host as a source: Lifeboat's layout for Lifeboat, plain files for rclone
        from toolkit.stores.copier import copy_objects

        host_src = work / "hostsrc"
        host_store = DirectoryStore(host_src / "lb")  # the lab's host is this machine
        host_store.create_bucket("media")
        copy_objects(lb_src, host_store, ["media"])
        shutil.copytree(plain, host_src / "rc")
        subprocess.run(["chown", "-R", lab.user, str(host_src)], check=True)

        import boto3

        s3a = boto3.client("s3", endpoint_url=moto_a.url, region_name="us-east-1")
        s3b = boto3.client("s3", endpoint_url=moto_b.url, region_name="us-east-1")
        s3a.create_bucket(Bucket="bench-src")
        subprocess.run([rclone, "copy", "--transfers", str(TRANSFERS), str(plain), "a:bench-src"], check=True,
                       env=rclone_env)

        def clear_b() -> None:
            for name in [b["Name"] for b in s3b.list_buckets()["Buckets"]]:
                subprocess.run([rclone, "purge", f"b:{name}"], check=True, env=rclone_env, capture_output=True)
            s3b.create_bucket(Bucket="bench-dst")

        pairs = {
            "local disk -> SSH host": {
                "lifeboat": ({"kind": "dir", "root": str(work / "lbsrc")},
                             {"kind": "sftp", "host": host.address, "port": host.port, "user": lab.user,
                              "key": str(lab.client_key), "known_hosts": str(lab.known_hosts),
                              "root": str(target_root / "lb")}),
                "rclone": [str(plain), f"host:{target_root / 'rc'}"],
                "clear": clear_host},
            "S3 -> SSH host": {
                "lifeboat": ({"kind": "s3", "endpoint": moto_a.url, "bucket": "bench-src"},
                             {"kind": "sftp", "host": host.address, "port": host.port, "user": lab.user,
                              "key": str(lab.client_key), "known_hosts": str(lab.known_hosts),
                              "root": str(target_root / "lb")}),
                "rclone": ["a:bench-src", f"host:{target_root / 'rc'}"],
                "clear": clear_host},
            "SSH host -> S3": {
                "lifeboat": ({"kind": "sftp", "host": host.address, "port": host.port, "user": lab.user,
                              "key": str(lab.client_key), "known_hosts": str(lab.known_hosts),
                              "root": str(host_src / "lb")},
                             {"kind": "s3", "endpoint": moto_b.url, "bucket": "bench-dst"}),
                "rclone": [f"host:{host_src / 'rc'}", "b:bench-dst"],
                "clear": clear_b},
            "S3 -> S3 (two moto servers)": {
                "lifeboat": ({"kind": "s3", "endpoint": moto_a.url, "bucket": "bench-src"},
                             {"kind": "s3", "endpoint": moto_b.url, "bucket": "bench-dst"}),
                "rclone": ["a:bench-src", "b:bench-dst"],
                "clear": clear_b},
        }
        only = [p.strip() for p in os.environ.get("BENCH_PAIRS", "").split(",") if p.strip()]
        for name, pair in pairs.items():
            if only and not any(o in name for o in only):
                continue
            samples = {"lifeboat": [], "rclone": []}
            for run in range(RUNS):
                # alternate, and which goes first too (ABBA), so drift hits both alike
                for tool in ("lifeboat", "rclone")[::1 if run % 2 == 0 else -1]:
                    pair["clear"]()
                    if tool == "lifeboat":
                        spec = work / "spec.json"
                        src, dst = pair["lifeboat"]
                        spec.write_text(json.dumps({"src": src, "dst": dst, "parallel": TRANSFERS}))
                        sample = measure([sys.executable, str(REPO / "bench" / "lbcopy.py"), str(spec)])
                        report = json.loads(sample["stdout"])
                        assert report["copied"] == count, report
                    else:
                        sample = measure([rclone, "copy", "--checksum", "--transfers", str(TRANSFERS),
                                          *pair["rclone"]], env=rclone_env)
                    samples[tool].append(sample)
                    print(f"bench: {name} {tool} run {run + 1}: {sample['wall']:.2f} s, cpu {sample['cpu']:.2f} s",
                          file=sys.stderr)
            lb, rc = summary(samples["lifeboat"], total), summary(samples["rclone"], total)
            results["pairs"][name] = {"lifeboat": lb, "rclone": rc,
                                      "throughput_ratio": round(rc["wall_s"] / lb["wall_s"], 2),
                                      "cpu_per_gb_ratio": round(lb["cpu_s_per_gb"] / rc["cpu_s_per_gb"], 2)}
    finally:
        for server in servers:
            server.stop()
        if lab is not None:
            for h in lab.hosts:
                h.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("objects", results, results["pairs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
