"""Shared fixtures. Integration tests use real servers started here (see ../shared/TEST-INFRA.md);
nothing is skipped when a server is missing: the test fails and says what to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHIRP = REPO / "examples" / "chirp"
STACKFILES = Path(__file__).resolve().parent / "stackfiles"
LIFEBOAT = [sys.executable, "-m", "toolkit.cli"]


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def envelope(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected exactly one JSON line on stdout, got: {self.stdout!r}\n{self.stderr}"
        return json.loads(lines[0])

    def __repr__(self):
        return f"CliResult(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


def run_cli(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None, input: str | None = None,
            timeout: float = 600) -> CliResult:
    """Run lifeboat as a user would: a separate process, no terminal on stdin."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():  # None removes a variable
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.run([*LIFEBOAT, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          input=input if input is not None else "", timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_cli_stalled(*args: str, point: str, meanwhile, seconds: float = 4, timeout: float = 300,
                    env: dict | None = None) -> CliResult:
    """Run lifeboat with LIFEBOAT_FAULT=stall:<point>; once it says it stalled there, call ``meanwhile()``
    (crash a host, fill a disk, write rows), then let it go on. Its stderr is consumed, not returned."""
    proc = subprocess.Popen([*LIFEBOAT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {}), "LIFEBOAT_FAULT": f"stall:{point}",
                                 "LIFEBOAT_FAULT_SECONDS": str(seconds)})
    try:
        for line in proc.stderr:
            if f"stalled at {point}" in line:
                break
        meanwhile()
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return CliResult(proc.returncode, out, "")


@pytest.fixture
def cli():
    return run_cli


def chirp_stack(directory: Path, *, name: str = "chirp", target: str = "here", extra_target: str = "",
                replicas: int = 1, secrets: str = "  CHIRP_SECRET_KEY: {from: generate, length: 48}\n",
                dns: bool = True, ttl: int = 4, cutover_ttl: int = 2, extensions: tuple[str, ...] = ("pg_trgm",)) -> Path:
    """Write a chirp stack file into ``directory`` whose local target keeps its state there too."""
    text = f"""version: 1
name: {name}
domain: chirp.lifeboat.test
services:
  web:
    role: web
    build: {CHIRP}
    command: ["python", "-m", "chirp", "web"]
    port: 8000
    replicas: {replicas}
    health: /healthz
    env:
      CHIRP_WORKERS: "1"
    secrets: [CHIRP_SECRET_KEY]
  worker:
    role: worker
    build: {CHIRP}
    command: ["python", "-m", "chirp", "worker"]
postgres:
  version: 15
  database: chirp
  extensions: [{", ".join(extensions)}]
redis:
  version: 7
buckets:
  media: {{}}
secrets:
{secrets}providers:
  {target}:
    type: local
    state_dir: state/{target}
{extra_target}"""
    if dns:
        text += f"""dns:
  provider: {target}
  zone: lifeboat.test
  ttl: {ttl}
  cutover_ttl: {cutover_ttl}
  records:
    - {{name: chirp, type: A, target: web}}
"""
    path = directory / "lifeboat.yml"
    path.write_text(text)
    return path


@contextmanager
def seeded_chirp(root: Path, extra_target: str, *, users: int, posts: int, media: int, large_mb: int,
                 dns: bool = True, targets: tuple[str, ...] = ("new",), **stack_options):
    """chirp up on a local target "old" and seeded there (``extra_target``: more providers: entries, or
    a dns: section when ``dns`` is False); yields the stack file; destroys ``targets`` and "old" after."""
    path = chirp_stack(root, target="old", extra_target=extra_target, dns=dns, **stack_options)
    lb = ["-c", str(path), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "old")
        assert up.code == 0, up
        seed = run_cli("-c", str(path), "exec", "--on", "old", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", str(users), "--posts", str(posts), "--media", str(media),
                       "--large-mb", str(large_mb))
        assert seed.code == 0, seed
        yield path
    finally:
        for name in (*targets, "old"):
            run_cli(*lb, "destroy", "--on", name, "--delete-backups")


TINY_APP = """import http.server, os, threading, time
time.sleep(float(os.environ.get("SLOW_START", "0")))
def tick(every):
    n = 0
    while True:
        n += 1
        print(f"tick {n} from replica {os.environ['LIFEBOAT_REPLICA']} ✓", flush=True)
        time.sleep(every)
if os.environ.get("TICK"):  # a line of output every TICK seconds
    threading.Thread(target=tick, args=(float(os.environ["TICK"]),), daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        if self.path.startswith("/env/"):  # the SHA-256 of a variable it was given (never the value)
            import hashlib
            body = hashlib.sha256(os.environ.get(self.path[5:], "").encode()).hexdigest().encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), H).serve_forever()
"""


def tiny_app(directory: Path) -> Path:
    """A build directory with serve.py: answers 200 on every path at $LIFEBOAT_BIND:$PORT ($SLOW_START s late;
    a line "tick N from replica R ✓" on stdout every $TICK s; /env/NAME: the SHA-256 of its variable NAME)."""
    app = directory / "app"
    app.mkdir()
    (app / "serve.py").write_text(TINY_APP)
    return app


def chirp_copy(directory: Path) -> Path:
    """A copy of chirp's source that a test may change (to roll out a new release)."""
    app = directory / "chirp"
    shutil.copytree(CHIRP, app, ignore=shutil.ignore_patterns(".lifeboat", "__pycache__", "lifeboat.yml"))
    return app


def require(binary: str, install: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    assert found, f"{binary} is not installed: {install} (.ci/run installs it)"
    return found


@pytest.fixture
def host_roots():
    """A folder for the hosts' roots that other accounts can traverse (PostgreSQL runs as `lifeboat`)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="lifeboat-roots-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_host_roots() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="lifeboat-roots-", dir="/tmp"))
    path.chmod(0o711)
    return path


@pytest.fixture(params=["local", "ssh"])
def dir_store(request, tmp_path):
    """A directory object store (toolkit/stores/dirstore.py) here, and one on an SSH host (sftpstore.py), with
    its root: the lab's hosts are this machine, so a test looks at the files."""
    from toolkit.stores.dirstore import DirectoryStore

    if request.param == "local":
        yield DirectoryStore(tmp_path / "objects"), tmp_path / "objects"
        return
    from toolkit.stores.sftpstore import RemoteDirectoryStore
    from toolkit.transport.ssh import SSHConnection

    lab = request.getfixturevalue("ssh_lab")
    roots = make_host_roots()
    shutil.chown(roots, lab.user)
    host = lab.hosts[0]
    conn = SSHConnection(host.address, port=host.port, user=lab.user, key_file=str(lab.client_key),
                         known_hosts=str(lab.known_hosts))
    remote = RemoteDirectoryStore(conn, str(roots / "objects"))
    try:
        yield remote, roots / "objects"  # the lab's hosts are this machine: the test looks at the files
    finally:
        remote.release()
        conn.close()
        shutil.rmtree(roots, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory):
    """Three real OpenSSH hosts (127.0.0.2-4), key-only, shared by the bare-metal tests."""
    from .sshd import start_lab

    lab = start_lab(tmp_path_factory.mktemp("ssh-lab"), count=3)
    yield lab
    for host in lab.hosts:
        host.stop()


def baremetal_target(lab, roots: Path, *, roles=(("web", "worker", "storage"), ("web",), ("db",)),
                     pg_port: int = 5433, redis_port: int = 6380, name: str = "colo", pebble=None,
                     docker_engines=None) -> str:
    """The providers: entry of a bare-metal target on the lab's hosts (YAML text, indented 2)."""
    lines = [f"  {name}:", "    type: baremetal", f"    known_hosts: {lab.known_hosts}",
             f"    postgres_port: {pg_port}", f"    redis_port: {redis_port}"]
    if pebble is not None:
        lines.append(f'    proxy: {{http_port: {PEBBLE_HTTP_PORT}, https_port: 8443, acme_ca: "{pebble.directory_url}", '
                     f"acme_ca_root: {pebble.https_ca}}}")
    if docker_engines is not None:
        from .dockerlab import BASE_IMAGE

        lines += ["    runtime: docker", f"    docker: {{base_image: {BASE_IMAGE}}}"]
    lines.append("    hosts:")
    for index, (host, host_roles) in enumerate(zip(lab.hosts, roles, strict=False)):
        lines.append(f"      - {{name: {['web1', 'web2', 'db1'][index]}, address: {host.address}, port: {host.port}, "
                     f"user: {lab.user}, key: {lab.client_key}, roles: [{', '.join(host_roles)}], "
                     f"root: {roots / ['web1', 'web2', 'db1'][index]}"
                     + (f", docker_host: unix://{docker_engines[index].socket}"
                        if docker_engines is not None and index < len(docker_engines) else "") + "}")
    return "\n".join(lines) + "\n"


PEBBLE_HTTP_PORT = 5002


@pytest.fixture(scope="session")
def pebble(tmp_path_factory):
    """Let's Encrypt's test CA on loopback; its DNS answers every name with 127.0.0.2 (web1 of the lab), so
    HTTP-01 validation really connects to the proxy there."""
    from .acme import start_pebble

    server = start_pebble(tmp_path_factory.mktemp("pebble"), default_ipv4="127.0.0.2", http_port=PEBBLE_HTTP_PORT)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def docker_engines():
    """Two real Docker engines (one per web host of the lab) with the offline-built base image."""
    import tempfile

    from .dockerlab import import_base, rootfs, start_engine

    tree = rootfs()
    base = Path(tempfile.mkdtemp(prefix="lifeboat-docker-", dir="/tmp"))
    engines = []
    try:
        for name in ("e1", "e2"):
            engine = start_engine(base / name)
            engines.append(engine)
            import_base(engine, tree)
        yield engines
    finally:
        for engine in engines:
            engine.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dns_lab(tmp_path_factory):
    """BIND 9 on loopback: a primary taking TSIG-signed RFC 2136 updates and a secondary following it."""
    import tempfile

    from .bindlab import start_dns_lab

    base = Path(tempfile.mkdtemp(prefix="lifeboat-bind-", dir="/tmp"))
    base.chmod(0o755)  # named runs as the bind user
    lab = start_dns_lab(base / "lab")
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def terraform_rc(tmp_path_factory):
    """TF_CLI_CONFIG_FILE for Terraform with the machine's provider mirror (no registry access here)."""
    from .awslab import terraform_cli_config

    require("terraform", "the machine image ships Terraform 1.11 on PATH")
    return terraform_cli_config(tmp_path_factory.mktemp("terraform"))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real moto server on loopback (AWS APIs; emulated EC2/RDS run nothing)."""
    from .awslab import start_moto

    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory):
    """s3rver (npm) on loopback: an S3-compatible server that is not AWS's emulator."""
    from .awslab import start_s3rver

    server = start_s3rver(tmp_path_factory.mktemp("s3rver"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite (npm), Microsoft's Azure Storage emulator: the blob service on loopback."""
    from .azurelab import start_azurite

    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """fake-gcs-server: the Google Cloud Storage JSON API on loopback."""
    from .gcslab import start_fake_gcs

    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def localstack(tmp_path_factory):
    """LocalStack (community, host mode) on loopback: what users run for CI dry runs."""
    from .awslab import start_localstack

    server = start_localstack(tmp_path_factory.mktemp("localstack"))
    yield server
    server.stop()


@contextmanager
def environment(values: dict[str, str]):
    """``values`` in this process's environment (the CLI's children read it) until the block ends, then the
    environment as it was."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def aws_environment(terraform_rc: Path) -> dict:
    """The environment an operator would have: credentials, region, Terraform's CLI config. The endpoint is
    given in the stack file (endpoint_url), not here."""
    from .awslab import AWS_ENV

    return {**AWS_ENV, "TF_CLI_CONFIG_FILE": str(terraform_rc), "TF_IN_AUTOMATION": "1"}


def tiny_deployment(request, tmp_path: Path, *, name: str, port: int, address: str, offset: int, replicas: int = 1,
                    env: str = ""):
    """For a fixture parametrized "here" / "colo": a stack of one web service (tiny_app, ``env`` a YAML
    mapping of its variables) deployed on this machine (a local target at ``address``) or on the lab's first
    SSH host (bare metal, its ports moved by ``offset``). Yields (stack file, target); destroys it after."""
    tiny_app(tmp_path)
    roots = None
    target = f"  here:\n    type: local\n    state_dir: state\n    address: {address}\n"
    if request.param == "colo":
        roots = make_host_roots()
        target = baremetal_target(request.getfixturevalue("ssh_lab"), roots, roles=(("web",),)).replace(
            "    type: baremetal\n", f"    type: baremetal\n    port_offset: {offset}\n")
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(f"""version: 1
name: {name}
domain: {name}.lifeboat.test
services:
  web: {{role: web, build: app, command: [python3, serve.py], port: {port}, replicas: {replicas}, health: /,
         env: {env or "{}"}}}
providers:
{target}""")
    up = run_cli("-c", str(stack), "-o", "json", "--yes", "up", "--on", request.param, timeout=600)
    assert up.code == 0, up
    try:
        yield stack, request.param, up
    finally:
        run_cli("-c", str(stack), "--yes", "destroy", "--on", request.param)
        if roots is not None:
            shutil.rmtree(roots, ignore_errors=True)
