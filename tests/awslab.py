"""AWS without AWS: a moto server, LocalStack in host mode, Terraform with the machine's provider mirror, and a
real PostgreSQL standing in for RDS.

What is emulated, plainly: moto and LocalStack answer the AWS APIs (S3, Route53, Secrets Manager, STS and the
EC2/RDS control planes are real enough for Terraform and boto3), but an emulated EC2 instance runs nothing and
an emulated RDS instance has no database behind it. The tests pair each instance with a real OpenSSH host and
the RDS endpoint with the PostgreSQL below, through the provider's ``reach:`` setting (the same setting that
names a bastion or a tunnel end in real life).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MIRROR = Path("/opt/tf-plugins")
LOCALSTACK_VENV = Path(os.environ.get("LIFEBOAT_LOCALSTACK_VENV", "/opt/lifeboat-localstack"))
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def restart(self) -> None:
        """Start the server again on the same port after :meth:`stop` (moto: with empty state)."""
        if self.proc.poll() is None:
            return
        fresh = start_moto(self.log.parent, port=int(self.url.rsplit(":", 1)[1]))
        self.proc = fresh.proc

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - loopback


# moto's server, with one of its inaccuracies corrected: moto gives every RDS instance the same
# DbiResourceId, and Terraform's aws provider waits for a deleted instance to vanish by filtering on that id,
# so with two instances (a drill's copy beside the live one) deleting one waits forever for the other. Real
# RDS gives each instance its own; so does this.
MOTO_SERVER = r'''
import sys, uuid
from moto.rds import models
_made = models.DBInstance.__init__
def _own_resource_id(self, *args, **kwargs):
    _made(self, *args, **kwargs)
    self.dbi_resource_id = "db-" + uuid.uuid4().hex[:26].upper()
models.DBInstance.__init__ = _own_resource_id
from moto.server import main
sys.exit(main(sys.argv[1:]))
'''


def start_moto(directory: Path, port: int | None = None) -> Server:
    port = port or free_port()
    assert (Path(sys.executable).parent / "moto_server").exists(), \
        "moto_server is missing: pip install 'moto[server]' (make install does)"
    log = directory / "moto.log"
    proc = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/")
    return Server(url, proc, log)


def start_s3rver(directory: Path) -> Server:
    """s3rver (npm), an S3-compatible server that is not AWS's own emulator; it accepts any secret key."""
    binary = shutil.which("s3rver")
    assert binary, "s3rver is missing: npm install -g s3rver (.ci/run does)"
    port = free_port()
    data = directory / "s3rver"
    data.mkdir(parents=True, exist_ok=True)
    log = directory / "s3rver.log"
    proc = subprocess.Popen([binary, "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/")
    return Server(url, proc, log)


def start_localstack(directory: Path) -> Server:
    python = LOCALSTACK_VENV / "bin" / "python"
    assert python.exists(), (f"LocalStack is not installed in {LOCALSTACK_VENV} (.ci/run installs "
                             "localstack-core 4.13.1 there)")
    port = free_port()
    data = directory / "localstack"
    data.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "OVERRIDE_IN_DOCKER": "0", "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_SERVER": "hypercorn",
           "SKIP_SSL_CERT_DOWNLOAD": "1", "DNS_ADDRESS": "0", "DISABLE_EVENTS": "1", "FILESYSTEM_ROOT": str(data),
           "LOCALSTACK_HOST": f"127.0.0.1:{port}", "EAGER_SERVICE_LOADING": "0"}
    log = directory / "localstack.log"
    proc = subprocess.Popen([str(python), "-m", "localstack.runtime.main"], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=data)
    deadline = time.time() + 120
    while time.time() < deadline:
        if b"Ready." in log.read_bytes():
            server = Server(f"http://127.0.0.1:{port}", proc, log)
            warm_up(server.url)
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    Server("", proc, log).stop()
    raise RuntimeError(f"LocalStack did not start:\n{tail}")


def warm_up(url: str) -> None:
    """Load the services the tests use now (LocalStack loads each on its first request): the first
    Terraform apply then does not meet a slow first answer, which once made the aws provider retry a
    CreateRoute that had in fact succeeded (RouteAlreadyExists)."""
    import boto3

    def client(name: str):
        return boto3.client(name, endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                            aws_secret_access_key="test")

    client("sts").get_caller_identity()
    client("ec2").describe_route_tables()
    client("s3").list_buckets()
    client("route53").list_hosted_zones()
    client("secretsmanager").list_secrets()
    client("iam").list_roles()


def terraform_cli_config(directory: Path) -> Path:
    """A CLI config that installs hashicorp/aws from the machine's filesystem mirror only."""
    found = list(MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*"))
    assert found, f"no hashicorp/aws provider under {MIRROR} (the machine image ships one)"
    path = directory / "terraform.rc"
    path.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n'
                    '    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n'
                    '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n')
    return path


# --------------------------------------------------------------------------------------------------
# A real PostgreSQL where the emulated RDS endpoint is


PG_ACCOUNT = "lbrds"


@dataclass
class RdsStandIn:
    address: str
    port: int
    data: Path
    bindir: Path

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", PG_ACCOUNT, "--", str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.data.parent, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(["runuser", "-u", PG_ACCOUNT, "--", str(self.bindir / "psql"), "-h", self.address,
                              "-p", str(self.port), "-U", "lifeboat_admin", "-d", database, "-AtX", "-c", sql],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()


def start_rds_stand_in(*, database: str, address: str = "127.0.0.9", version: int = 15) -> RdsStandIn:
    """PostgreSQL as RDS makes it: a master user (lifeboat_admin) and the stack's database. The master login
    is trusted from loopback (RDS sets the master password, and no RDS runs here); every other role needs
    its password (scram-sha-256), so the app's credentials are checked for real."""
    from .sshd import ensure_account

    ensure_account(PG_ACCOUNT, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin")
    bindir = Path(f"/usr/lib/postgresql/{version}/bin")
    base = Path(tempfile.mkdtemp(prefix="lifeboat-rds-", dir="/tmp"))
    base.chmod(0o755)
    data = base / "data"
    shutil.chown(base, PG_ACCOUNT, PG_ACCOUNT)
    subprocess.run(["runuser", "-u", PG_ACCOUNT, "--", str(bindir / "initdb"), "-D", str(data), "-U", "lifeboat_admin",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                   capture_output=True, check=True)
    hba = data / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all lifeboat_admin 127.0.0.0/8 trust\n"
                   "host all all 127.0.0.0/8 scram-sha-256\n")
    port = free_port()
    subprocess.run(["runuser", "-u", PG_ACCOUNT, "--", str(bindir / "pg_ctl"), "-D", str(data), "-l",
                    str(base / "log"), "-w", "-o", f"-c listen_addresses={address} -p {port} -k {base}", "start"],
                   capture_output=True, check=True)
    server = RdsStandIn(address, port, data, bindir)
    server.psql(f"CREATE DATABASE {database}")
    return server
