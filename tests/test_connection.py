"""Connections: local subprocess and SSH (paramiko against real OpenSSH servers) behind one contract."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from toolkit.errors import CommandFailed, ProviderUnreachable
from toolkit.transport.connection import LocalConnection
from toolkit.transport.ssh import ChangedHostKey, SSHConnection, UnknownHostKey

from .sshd import start_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("ssh"), count=3)
    yield lab
    for host in lab.hosts:
        host.stop()


def ssh(lab, host, **kw) -> SSHConnection:
    return SSHConnection(host.address, port=host.port, user=lab.user, key_file=str(lab.client_key),
                         known_hosts=str(lab.known_hosts), name=host.name, **kw)


@pytest.fixture(params=["local", "ssh"])
def conn(request, lab):
    if request.param == "local":
        yield LocalConnection()
    else:
        c = ssh(lab, lab.hosts[0])
        yield c
        c.close()


def test_run_returns_output_and_code(conn):
    result = conn.run(["sh", "-c", 'printf "%s" "$1"; echo err >&2; exit 3', "sh", "a b; $(rm -rf /)"], check=False)
    assert result.exit_code == 3
    assert result.stdout == b"a b; $(rm -rf /)"  # the argument arrived verbatim, never through a shell
    assert result.stderr.strip() == b"err"


def test_failed_command_carries_host_argv_code_and_tail(conn):
    with pytest.raises(CommandFailed) as info:
        conn.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i >&2; done; exit 7"])
    err = info.value
    assert err.returncode == 7 and err.argv[0] == "sh" and err.host in ("localhost", "host1")
    assert "line40" in err.stderr_tail and "line1\n" not in err.stderr_tail
    assert "exited with 7" in err.message
    # a program passed inline is named by its size in the message, not pasted whole
    program = "import sys\n" * 500
    with pytest.raises(CommandFailed) as info:
        conn.run(["python3", "-c", program + "sys.exit(4)", "an argument"])
    assert f"`python3 -c <{len(program) + 11} characters> an argument` exited with 4" in info.value.message


def test_input_and_env_values_never_in_argv(conn):
    secret = "s3cr3t value with 'quotes' and $dollar"
    result = conn.run(["sh", "-c", 'cat; printf "%s" "$LB_SECRET"; cat /proc/$$/cmdline | tr "\\0" " "'],
                      input=b"in:", env={"LB_SECRET": secret})
    out = result.stdout.decode()
    assert out.startswith("in:" + secret)
    assert secret not in out[len("in:" + secret):]  # not on the command line of the process


def test_streams_roundtrip(conn, tmp_path):
    payload = os.urandom(3 << 20)
    target = tmp_path / "streamed.bin" if isinstance(conn, LocalConnection) else f"/tmp/lb-stream-{os.getpid()}"
    with conn.write_stream(["sh", "-c", 'cat > "$0"', str(target)]) as sink:
        for i in range(0, len(payload), 65536):
            sink.write(payload[i:i + 65536])
    with conn.read_stream(["cat", str(target)]) as source:
        got = hashlib.sha256()
        for chunk in iter(lambda: source.read(65536), b""):
            got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(payload).hexdigest()
    conn.run(["rm", "-f", str(target)])


def test_read_stream_failure_raises(conn):
    with pytest.raises(CommandFailed):
        with conn.read_stream(["sh", "-c", "echo partial; echo broken >&2; exit 9"]) as source:
            source.read()


def test_put_and_get_file_private(conn, tmp_path):
    local = tmp_path / "in.txt"
    local.write_bytes(b"hello\x00world")
    remote = str(tmp_path / "remote.txt") if isinstance(conn, LocalConnection) else f"/tmp/lb-put-{os.getpid()}"
    conn.put_file(local, remote, mode=0o600)
    assert conn.run(["stat", "-c", "%a", remote]).text.strip() == "600"
    back = tmp_path / "back.txt"
    conn.get_file(remote, back)
    assert back.read_bytes() == b"hello\x00world"
    conn.run(["rm", "-f", remote])


def test_each_host_is_its_own_address(lab):
    for host in lab.hosts:
        with ssh(lab, host) as c:
            out = c.run(["sh", "-c", "echo $SSH_CONNECTION"]).text.split()
            assert out[2] == host.address


def test_unknown_host_refused_with_fingerprint(lab, tmp_path):
    lab.write_known_hosts(lab.hosts[1:])
    try:
        with pytest.raises(UnknownHostKey) as info:
            ssh(lab, lab.hosts[0]).run(["true"])
        assert "SHA256:" in info.value.message and "lifeboat hosts trust host1" in info.value.hint
        assert info.value.exit_code == 5
        assert lab.known_hosts.read_text().count("\n") == 2  # nothing was added
    finally:
        lab.write_known_hosts()


def test_changed_host_key_refused(lab):
    host = lab.hosts[2]
    old_line = host.public_key_line
    host.stop()
    host.regenerate_host_key()
    host.start(lab.authorized_keys)
    try:
        with pytest.raises(ChangedHostKey) as info:
            ssh(lab, host).run(["true"])
        assert "CHANGED" in info.value.message
    finally:
        lab.write_known_hosts()
    assert old_line != host.public_key_line


def test_host_down_is_unreachable(lab):
    with pytest.raises(ProviderUnreachable) as info:
        SSHConnection("127.0.0.9", port=1, user=lab.user, key_file=str(lab.client_key),
                      known_hosts=str(lab.known_hosts), name="ghost", connect_timeout=2).run(["true"])
    assert "ghost" in info.value.message and info.value.exit_code == 5


def test_wrong_key_refused(lab, tmp_path):
    from .sshd import keygen

    other = tmp_path / "other"
    keygen(other)
    with pytest.raises(ProviderUnreachable) as info:
        SSHConnection(lab.hosts[0].address, port=lab.hosts[0].port, user=lab.user, key_file=str(other),
                      known_hosts=str(lab.known_hosts), name="host1").run(["true"])
    assert info.value.code == "ssh.auth"


def test_local_as_other_user_and_umask(tmp_path):
    out = LocalConnection(umask=0o077).run(["sh", "-c", "umask"]).text.strip()
    assert out in ("0077", "077")
    with pytest.raises(CommandFailed) as info:
        LocalConnection().run(["no-such-binary-lifeboat"])
    assert info.value.returncode == 127


def test_bulk_streams_through_openssh_pinned_to_the_verified_key(lab, tmp_path):
    """Bulk data goes through the system OpenSSH client, trusting exactly the key paramiko verified: data
    round trips, and a host whose key changes between the two (an interceptor) is refused, exit 5."""
    host = lab.hosts[1]
    conn = ssh(lab, host)
    try:
        argv = conn.openssh()
        assert argv is not None and "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
        known = next(a.split("=", 1)[1] for a in argv if a.startswith("UserKnownHostsFile="))
        assert oct(os.stat(known).st_mode & 0o777) == "0o600"
        assert open(known).read().split() == host.public_key_line.split()
        data = os.urandom(3 << 20)
        answer = bytearray()
        with conn.bulk_write(["sha256sum"], output=answer) as sink:
            sink.write(data)
        assert answer.decode().split()[0] == hashlib.sha256(data).hexdigest()
        with conn.bulk_read(["head", "-c", "1000", "/dev/zero"]) as stream:
            assert stream.read() == b"\0" * 1000
        with pytest.raises(CommandFailed):
            with conn.bulk_read(["cat", "/nonexistent"]) as stream:
                stream.read()

        host.stop()  # same address and port, another key: paramiko's session is gone too
        host.regenerate_host_key()
        host.start(lab.authorized_keys)
        with pytest.raises(ProviderUnreachable) as info:
            with conn.bulk_write(["cat"]) as sink:
                sink.write(b"must not arrive")
        assert info.value.exit_code == 5
    finally:
        conn.close()
        lab.write_known_hosts()
    assert not os.path.exists(known)  # the pinned known_hosts goes with the connection


def test_bulk_streams_prefer_a_cheap_key_exchange(lab, monkeypatch):
    """Each bulk stream is a connection: against a real sshd it agrees on ML-KEM/X25519 or X25519 (not
    OpenSSH 9.x's default sntrup761, 66 ms of client CPU each), and LIFEBOAT_BULK_SSH_KEX overrides that."""
    import subprocess

    from toolkit.transport.bulk import BULK_KEX

    def agreed(conn) -> str:
        argv = conn.openssh()
        done = subprocess.run([*argv[:-1], "-v", argv[-1], "true"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return next(line.split("kex: algorithm: ")[1].strip() for line in done.stderr.splitlines()
                    if "kex: algorithm: " in line)

    conn = ssh(lab, lab.hosts[0])
    try:
        assert agreed(conn) in BULK_KEX
    finally:
        conn.close()
    monkeypatch.setenv("LIFEBOAT_BULK_SSH_KEX", "diffie-hellman-group14-sha256")
    conn = ssh(lab, lab.hosts[0])
    try:
        assert agreed(conn) == "diffie-hellman-group14-sha256"
    finally:
        conn.close()


def test_the_pinned_known_hosts_goes_when_a_process_exits_without_closing(lab, tmp_path):
    """A process that never closes its connection (a script, a crash in a caller) leaves no folder behind;
    one killed with SIGKILL (no finalizer runs) leaves it until the next process that pins a key sweeps it
    away, sparing the folders of live processes and of other machines."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()
    killed = tmp_path / f"lifeboat-ssh-{here}-{gone.pid}-k1ll3d_x"
    living = tmp_path / f"lifeboat-ssh-{here}-{os.getpid()}-l1v1ng_x"
    elsewhere = tmp_path / f"lifeboat-ssh-other-machine-{gone.pid}-0th3r_xx"
    for folder in (killed, living, elsewhere):
        folder.mkdir()
        (folder / "known_hosts").write_text("pinned\n")

    host = lab.hosts[0]
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
              "from toolkit.transport.ssh import SSHConnection\n"
              f"conn = SSHConnection({host.address!r}, port={host.port}, user={lab.user!r}, "
              f"key_file={str(lab.client_key)!r}, known_hosts={str(lab.known_hosts)!r})\n"
              "argv = conn.openssh()\n"
              "print(next(a.split('=', 1)[1] for a in argv if a.startswith('UserKnownHostsFile=')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    known = Path(done.stdout.strip())
    assert known.parent.parent == tmp_path and known.parent.name.startswith("lifeboat-ssh-")
    assert not known.parent.exists()
    assert sorted(tmp_path.iterdir()) == sorted([living, elsewhere])


def test_bulk_falls_back_to_paramiko_without_a_key_file(lab, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_BULK_SSH", "paramiko")
    conn = ssh(lab, lab.hosts[0])
    try:
        assert conn.openssh() is None
        answer = bytearray()
        with conn.bulk_write(["wc", "-c"], output=answer) as sink:
            sink.write(b"x" * 5000)
        assert answer.decode().strip() == "5000"
    finally:
        conn.close()


def test_a_host_without_the_sftp_subsystem_is_named_and_leaves_no_lock(lab):
    """Some sshd configurations have no `Subsystem sftp`: Lifeboat says so, with the line to add, instead of
    'internal error: Channel closed', and the host lock it was taking is not left behind."""
    import time

    from toolkit.errors import ProviderError
    from toolkit.hostops.lock import HostLock

    host = lab.hosts[2]
    host.stop()
    host.start(lab.authorized_keys, sftp=False)
    root = f"/tmp/lifeboat-nosftp-{os.getpid()}"
    try:
        c = ssh(lab, host)
        began = time.monotonic()
        with pytest.raises(ProviderError) as info:
            c.write_bytes(f"{root}.txt", b"x")
        assert info.value.code == "ssh.no_sftp" and "Subsystem sftp" in info.value.hint
        assert time.monotonic() - began < 10  # not the 60 s wait for a free session
        lock = HostLock(c, root, "colo (test)")
        with pytest.raises(ProviderError):
            lock.acquire("someone", "up")
        assert not os.path.exists(f"{root}/lock")  # it was made (mkdir), then given back
        c.close()
    finally:
        host.stop()
        host.start(lab.authorized_keys)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_venvs_are_made_from_a_python_the_app_account_can_run(lab, tmp_path):
    """A login whose PATH starts with a python3 in a folder other accounts cannot enter (root's pyenv under
    a 0700 home): the app's venvs are made from the system's python3 instead, and with none usable the
    preflight names the closed folder (it used to fail after the deploy's 90 s wait)."""
    import shutil
    import subprocess
    import tempfile

    from toolkit.errors import ProviderError
    from toolkit.hostops.bootstrap import app_interpreter
    from toolkit.hostops.releases import Releases

    closed = Path(tempfile.mkdtemp(prefix="lifeboat-closed-home-", dir="/tmp"))  # 0700, as root's home
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--copies", "--without-pip", str(closed / "py")], check=True)
    host = lab.hosts[2]
    host.stop()
    host.start(lab.authorized_keys, extra=f"SetEnv PATH={closed}/py/bin:/usr/bin:/bin\n")
    root = tempfile.mkdtemp(prefix="lifeboat-venvs-", dir="/tmp")
    try:
        c = ssh(lab, host)
        login = c.run(["python3", "-c", "import sys; print(sys.executable)"]).stdout.decode().strip()
        assert login.startswith(str(closed)), login  # what a plain `python3 -m venv` would have used
        chosen = app_interpreter(c)
        assert chosen == "/usr/bin/python3"
        venv = Releases(c, root).venv(b"", python=chosen)
        assert "home = /usr/bin" in Path(venv, "pyvenv.cfg").read_text()
        with pytest.raises(ProviderError) as info:
            app_interpreter(c, system=("/nonexistent/python3",))
        assert info.value.code == "host.python_unusable" and f"the folder {closed} is closed" in info.value.message
        c.close()
    finally:
        host.stop()
        host.start(lab.authorized_keys)
        shutil.rmtree(closed, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
