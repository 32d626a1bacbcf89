"""Run commands and move files on a host: locally (subprocess) or over SSH (paramiko), one contract.

Commands are argv lists, never shell strings built from input. Over SSH the list is quoted with
``shlex.join`` for the remote shell. Environment values (which may be secrets) never go on a command
line: locally they are passed as the child's environment, over SSH they travel in a 0600 file over SFTP
that the remote wrapper sources and deletes before ``exec``.

A failed command raises :class:`toolkit.errors.CommandFailed` with host, argv, exit code and output tail.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from toolkit.errors import CommandFailed, ProviderError, ProviderUnreachable, tail


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Connection(ABC):
    """One host. ``run`` -> Result; streams for data; files in and out."""

    host: str

    @abstractmethod
    def run(self, argv: Sequence[str], *, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None, check: bool = True, timeout: float | None = None) -> Result: ...

    @abstractmethod
    def read_stream(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Iterator[BinaryIO]:
        """Context manager: the stdout of ``argv`` as a readable stream; raises CommandFailed on exit."""

    @abstractmethod
    def write_stream(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                     output: bytearray | None = None) -> Iterator[BinaryIO]:
        """Context manager: the stdin of ``argv`` as a writable stream; raises CommandFailed on exit.
        ``output``: receives what the command printed on stdout (read while it runs)."""

    @abstractmethod
    def put_file(self, local: str | os.PathLike, remote: str, *, mode: int = 0o600) -> None: ...

    @abstractmethod
    def get_file(self, remote: str, local: str | os.PathLike) -> None: ...

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Write a small file atomically with ``mode`` (configs, env files, specs)."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes | None:
        """A small file's content, or None when it does not exist."""

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalConnection(Connection):
    """This machine, through subprocess. ``user`` runs commands as another account (when root)."""

    def __init__(self, *, user: str | None = None, umask: int | None = None):
        self.host = "localhost"
        self.user = user
        self.umask = umask

    def _env(self, env: dict[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        merged = dict(os.environ)
        merged.update(env)
        return merged

    def _as_user(self) -> dict:
        extra = {} if self.umask is None else {"umask": self.umask}
        if not self.user:
            return extra
        import pwd

        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], **extra}

    def run(self, argv, *, input=None, env=None, cwd=None, check=True, timeout=None) -> Result:
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, env=self._env(env), cwd=cwd,
                                  timeout=timeout, check=False, **self._as_user())
        except FileNotFoundError:
            raise CommandFailed(self.host, argv, 127, stderr=f"{argv[0]}: command not found",
                                hint=f"install {argv[0]} or put it on PATH.") from None
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(self.host, argv, 124, stdout=exc.stdout or b"", stderr=exc.stderr or b"",
                                hint=f"it did not finish within {timeout} s.") from None
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandFailed(self.host, argv, result.exit_code, result.stdout, result.stderr)
        return result

    @contextmanager
    def read_stream(self, argv, *, env=None):
        argv = [str(a) for a in argv]
        with _stderr_file() as err:
            proc = self._popen(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            try:
                yield proc.stdout
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                proc.stdout.close()
            code = proc.wait()
            if code != 0:
                err.seek(0)
                raise CommandFailed(self.host, argv, code, stderr=err.read())

    @contextmanager
    def write_stream(self, argv, *, env=None, output=None):
        argv = [str(a) for a in argv]
        with _stderr_file() as err, _stderr_file() as out:
            proc = self._popen(argv, env, stdin=subprocess.PIPE, stdout=out, stderr=err)
            try:
                yield proc.stdin
                proc.stdin.close()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            if code != 0:
                err.seek(0)
                out.seek(0)
                raise CommandFailed(self.host, argv, code, stdout=out.read(), stderr=err.read())
            if output is not None:
                out.seek(0)
                output.extend(out.read())

    def _popen(self, argv, env, **kw):
        try:
            return subprocess.Popen(argv, env=self._env(env), **kw, **self._as_user())
        except FileNotFoundError:
            raise CommandFailed(self.host, argv, 127, stderr=f"{argv[0]}: command not found") from None

    def put_file(self, local, remote, *, mode=0o600):
        tmp = f"{remote}.lifeboat-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as dst, open(local, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, mode)
        os.replace(tmp, remote)

    def get_file(self, remote, local):
        shutil.copyfile(remote, local)

    def write_bytes(self, path, data, *, mode=0o600):
        tmp = f"{path}.lifeboat-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def read_bytes(self, path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None


@contextmanager
def _stderr_file():
    import tempfile

    with tempfile.TemporaryFile() as handle:
        yield handle


# --------------------------------------------------------------------------------------------------
# SSH


class UnknownHostKey(ProviderUnreachable):
    code = "ssh.unknown_host"


class ChangedHostKey(ProviderUnreachable):
    code = "ssh.host_key_changed"


def base64_decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def fingerprint(key) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class SSHConnection(Connection):
    """A host over SSH with paramiko. Host keys are checked against known_hosts; nothing is auto-added."""

    def __init__(self, address: str, *, port: int = 22, user: str | None = None, key_file: str | None = None,
                 known_hosts: str | None = None, name: str | None = None, connect_timeout: float = 10.0,
                 jump: SSHConnection | None = None, pinned_keys: list[str] | None = None,
                 trust_command: str | None = None):
        self.address = address
        self.port = port
        self.jump = jump
        self.pinned_keys = pinned_keys or []
        self.trust_command = trust_command
        self.user = user or os.environ.get("USER") or "root"
        self.key_file = key_file
        self.known_hosts = known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        self.host = name or address
        self.connect_timeout = connect_timeout
        self._client = None
        self._lock = threading.Lock()
        self._openssh: list[str] | None | bool = False  # False: not looked at yet
        self._openssh_dir: str | None = None

    # -- session
    def client(self):
        with self._lock:
            if self._client is not None and self._client.get_transport() and \
                    self._client.get_transport().is_active():
                return self._client
            self._client = self._connect()
            return self._client

    def _connect(self):

        import paramiko

        host = self.host
        shown = known_hosts_name(self.address, self.port)

        class Refuse(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client, hostname, key):
                raise UnknownHostKey(
                    f"{host}: host key of {shown} is not in {known_hosts_file} "
                    f"({key.get_name()} {fingerprint(key)}); refusing to connect.",
                    hint=f"check the fingerprint out of band, then run `{trust_command}` "
                         f"(or add the key to {known_hosts_file}).")

        known_hosts_file = self.known_hosts
        trust_command = self.trust_command or f"lifeboat hosts trust {host}"
        client = paramiko.SSHClient()
        if self.pinned_keys:
            # Keys pinned in the stack file replace known_hosts for this host.
            keys = client.get_host_keys()
            for line in self.pinned_keys:
                key_type, blob = line.split()[:2]
                keys.add(shown, key_type, paramiko.PKey.from_type_string(key_type, base64_decode(blob)))
            known_hosts_file = "the keys pinned in the stack file"
        elif os.path.exists(known_hosts_file):
            try:
                client.load_host_keys(known_hosts_file)
            except Exception as exc:
                raise ProviderUnreachable(f"{host}: cannot read known_hosts {known_hosts_file}: {exc}") from None
        client.set_missing_host_key_policy(Refuse())
        sock = None
        if self.jump is not None:
            try:
                sock = self.jump.client().get_transport().open_channel(
                    "direct-tcpip", (self.address, self.port), ("127.0.0.1", 0), timeout=self.connect_timeout)
            except paramiko.SSHException as exc:
                raise ProviderUnreachable(f"{host}: the jump host {self.jump.host} cannot reach {shown}: {exc}.",
                                          code="ssh.jump") from None
        try:
            client.connect(self.address, port=self.port, username=self.user, key_filename=self.key_file,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=self.key_file is None,
                           look_for_keys=self.key_file is None, sock=sock)
        except paramiko.BadHostKeyException as exc:
            raise ChangedHostKey(
                f"{host}: the host key of {shown} has CHANGED (now {exc.key.get_name()} {fingerprint(exc.key)}, "
                f"known_hosts has {fingerprint(exc.expected_key)}); refusing to connect.",
                hint="this can mean someone is intercepting the connection; if the host was really rebuilt, "
                     f"remove the old key from {known_hosts_file} and trust the new one.") from None
        except paramiko.AuthenticationException as exc:
            raise ProviderUnreachable(f"{host}: {self.user}@{shown} refused the credentials ({exc}).",
                                      hint="check the user and the key file.", code="ssh.auth") from None
        except TimeoutError:
            raise ProviderUnreachable(f"{host}: {shown} did not answer within {self.connect_timeout:.0f} s.",
                                      code="ssh.timeout") from None
        except (OSError, paramiko.SSHException) as exc:
            if isinstance(exc, ProviderUnreachable):
                raise
            raise ProviderUnreachable(f"{host}: cannot connect to {shown}: {exc}.", code="ssh.connect") from None
        return client

    def close(self):
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._openssh_dir is not None:
                shutil.rmtree(self._openssh_dir, ignore_errors=True)
                self._openssh_dir, self._openssh = None, False
        if self.jump is not None:
            self.jump.close()

    # -- bulk data through the system OpenSSH client
    def openssh(self) -> list[str] | None:
        """The argv prefix of the system OpenSSH client for this host, or None when it cannot be used (no
        ``ssh``, a jump host, no key file, or LIFEBOAT_BULK_SSH=paramiko). It trusts exactly the host key
        paramiko verified for this connection (written to a private known_hosts file; StrictHostKeyChecking),
        uses only the configured key (BatchMode: no prompt), and no user ssh_config."""
        with self._lock:
            if self._openssh is not False:
                return self._openssh
        found = shutil.which("ssh")
        if os.environ.get("LIFEBOAT_BULK_SSH") == "paramiko" or self.jump is not None or not self.key_file \
                or found is None:
            with self._lock:
                self._openssh = None
            return None
        import tempfile

        key = self.client().get_transport().get_remote_server_key()  # verified against known_hosts
        _sweep_pin_folders()
        folder = tempfile.mkdtemp(prefix=f"{PIN_PREFIX}{socket.gethostname()}-{os.getpid()}-")
        known = os.path.join(folder, "known_hosts")
        fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{known_hosts_name(self.address, self.port)} {key.get_name()} {key.get_base64()}\n")
        argv = [found, "-F", "/dev/null", "-T", "-p", str(self.port), "-l", self.user, "-i", self.key_file,
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "Compression=no", "-o", "LogLevel=ERROR",
                # AES-GCM first: with AES-NI it costs a fraction of chacha20's CPU on both ends
                "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
                *bulk_kex(found), self.address]
        with self._lock:
            if self._openssh is False:
                self._openssh, self._openssh_dir = argv, folder
                # removed by close(), else when the connection is collected or the process exits
                weakref.finalize(self, shutil.rmtree, folder, True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
            return self._openssh

    @contextmanager
    def bulk_write(self, argv, *, output: bytearray | None = None):
        """:meth:`write_stream` for bulk data: through the system OpenSSH client when it can be used (C
        ciphers, its own TCP connection, so several run at once), else through paramiko."""
        session = self.bulk_session(argv)
        if session is None:
            with self.write_stream(argv, output=output) as sink:
                yield sink
            return
        out = bytearray()
        reader = threading.Thread(target=_drain_pipe, args=(session.proc.stdout, out, False), daemon=True)
        reader.start()
        try:
            yield session.stdin
            session.stdin.close()
        except BaseException:
            session.kill()
            raise
        session.proc.wait()
        reader.join(timeout=10)
        session.close(out)
        if output is not None:
            output.extend(out)

    @contextmanager
    def bulk_read(self, argv, *, input: bytes | None = None):
        """:meth:`read_stream` for bulk data (see :meth:`bulk_write`); ``input``: the command's stdin (a
        request it reads whole before it answers)."""
        prefix = self.openssh()
        if prefix is None:
            with self.read_stream(argv, input=input) as stream:
                yield stream
            return
        argv = [str(a) for a in argv]
        proc = subprocess.Popen([*prefix, shlex.join(argv)], stdin=subprocess.DEVNULL if input is None else
                                subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=BULK_BUFFER)
        _widen_pipe(proc.stdout)
        err = bytearray()
        reader = threading.Thread(target=_drain_pipe, args=(proc.stderr, err, True), daemon=True)
        reader.start()
        if input is not None:
            threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True).start()
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.stdout.close()
        code = proc.wait()
        reader.join(timeout=10)
        self._bulk_failed(argv, code, b"", err)

    def bulk_session(self, argv) -> BulkSession | None:
        """A command on the host through the system OpenSSH client that stays for several exchanges (one
        connection, key exchange and login for all of them), or None where OpenSSH is not used."""
        prefix = self.openssh()
        if prefix is None:
            return None
        argv = [str(a) for a in argv]
        # A 1 MiB buffer and pipe: small writes (frame headers, small objects) go to ssh together.
        proc = subprocess.Popen([*prefix, shlex.join(argv)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=BULK_BUFFER)
        _widen_pipe(proc.stdin)
        return BulkSession(self, argv, proc)

    def _bulk_failed(self, argv: list[str], code: int, out, err) -> None:
        if code == 255:  # OpenSSH's own failure: the host did not answer or refused us
            raise ProviderUnreachable(f"{self.host}: ssh to {known_hosts_name(self.address, self.port)} failed: "
                                      f"{tail(bytes(err)) or 'exit 255'}.", code="ssh.connect")
        if code != 0:
            raise CommandFailed(self.host, argv, code, stdout=bytes(out), stderr=bytes(err))

    # -- commands
    def _command(self, argv: Sequence[str], env: dict[str, str] | None) -> str:
        command = shlex.join(str(a) for a in argv)
        if not env:
            return command
        path = self._upload_env(env)
        # The wrapper sources the 0600 env file, deletes it, then execs the command: values never appear
        # in any process's arguments.
        wrapper = 'set -a; . "$0"; set +a; rm -f "$0"; exec "$@"'
        return shlex.join(["sh", "-c", wrapper, path, *[str(a) for a in argv]])

    def _upload_env(self, env: dict[str, str]) -> str:
        import secrets as pysecrets

        body = "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in env.items())
        path = f"/tmp/.lifeboat-env-{pysecrets.token_hex(8)}"
        sftp = self.sftp()
        try:
            handle = sftp.open(path, "wx")  # exclusive create
            try:
                sftp.chmod(path, 0o600)
                handle.write(body.encode())
            finally:
                handle.close()
        finally:
            sftp.close()
        return path

    def _session(self, open_it):
        """Open a session channel; while the server refuses more sessions on this connection (OpenSSH's
        MaxSessions, default 10, reached by parallel work) wait for one to close, up to 60 s."""
        import paramiko

        deadline = time.monotonic() + 60
        delay = 0.05
        while True:
            try:
                return open_it()
            except (paramiko.SSHException, EOFError):  # ChannelException, the bare one a concurrent opener
                # gets, or an SFTP subsystem the server closed at once
                transport = self._client.get_transport() if self._client else None
                if time.monotonic() > deadline or transport is None or not transport.is_active():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _exec(self, command: str, timeout: float | None):
        transport = self.client().get_transport()
        channel = self._session(lambda: transport.open_session(timeout=self.connect_timeout))
        if timeout:
            channel.settimeout(timeout)
        channel.exec_command(command)
        return channel

    def run(self, argv, *, input=None, env=None, cwd=None, check=True, timeout=None) -> Result:
        argv = [str(a) for a in argv]
        if cwd:
            argv = ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
        channel = self._exec(self._command(argv, env), timeout)
        out, err = bytearray(), bytearray()

        def drain_stderr():
            while True:
                try:
                    chunk = channel.recv_stderr(65536)
                except (TimeoutError, OSError):
                    return  # the command's own timeout is reported by the reader of stdout
                if not chunk:
                    return
                err.extend(chunk)

        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        try:
            if input is not None:
                channel.sendall(input)
            channel.shutdown_write()
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                out.extend(chunk)
            code = channel.recv_exit_status()
        except TimeoutError:
            channel.close()
            raise CommandFailed(self.host, argv, 124, bytes(out), bytes(err),
                                hint=f"it did not finish within {timeout} s.") from None
        finally:
            reader.join(timeout=5)
        channel.close()
        result = Result(code, bytes(out), bytes(err))
        if check and not result.ok:
            raise CommandFailed(self.host, argv, code, result.stdout, result.stderr)
        return result

    @contextmanager
    def read_stream(self, argv, *, env=None, input: bytes | None = None):
        argv = [str(a) for a in argv]
        channel = self._exec(self._command(argv, env), None)
        if input is not None:  # a request the command reads whole before it answers
            channel.sendall(input)
        channel.shutdown_write()
        err = bytearray()
        reader = threading.Thread(target=_drain, args=(channel, err), daemon=True)
        reader.start()
        stream = channel.makefile("rb", 1 << 16)
        try:
            yield stream
        except BaseException:
            channel.close()
            raise
        code = channel.recv_exit_status()
        reader.join(timeout=5)
        channel.close()
        if code != 0:
            raise CommandFailed(self.host, argv, code, stderr=bytes(err))

    @contextmanager
    def write_stream(self, argv, *, env=None, output=None):
        argv = [str(a) for a in argv]
        channel = self._exec(self._command(argv, env), None)
        err, out = bytearray(), bytearray()
        readers = [threading.Thread(target=_drain, args=(channel, err), daemon=True),
                   threading.Thread(target=_drain_stdout, args=(channel, out), daemon=True)]
        for r in readers:
            r.start()
        stream = channel.makefile_stdin("wb", 1 << 16)
        try:
            yield stream
            stream.flush()
            channel.shutdown_write()
        except BaseException:
            channel.close()
            raise
        code = channel.recv_exit_status()
        for r in readers:
            r.join(timeout=5)
        channel.close()
        if code != 0:
            raise CommandFailed(self.host, argv, code, stdout=bytes(out), stderr=bytes(err))
        if output is not None:
            output.extend(out)

    # -- files
    def put_file(self, local, remote, *, mode=0o600):
        sftp = self.sftp()
        try:
            tmp = f"{remote}.lifeboat-tmp"
            with open(local, "rb") as src, sftp.open(tmp, "wb") as dst:
                sftp.chmod(tmp, mode)
                dst.set_pipelined(True)
                shutil.copyfileobj(src, dst, 1 << 15)
            sftp.posix_rename(tmp, remote)
        finally:
            sftp.close()

    def get_file(self, remote, local):
        sftp = self.sftp()
        try:
            sftp.get(remote, str(Path(local)))
        finally:
            sftp.close()

    def sftp(self):
        """A new SFTP session on this host's connection (caller closes it). A server without the sftp
        subsystem is named as such (ProviderError ``ssh.no_sftp``), not as a closed channel."""
        import paramiko

        transport = self.client().get_transport()
        for attempt in range(3):
            channel = self._session(lambda: transport.open_session(timeout=self.connect_timeout))
            try:
                channel.invoke_subsystem("sftp")
                return paramiko.SFTPClient(channel)
            except (paramiko.SSHException, EOFError) as exc:
                channel.close()
                if not transport.is_active():
                    raise
                why = str(exc) or type(exc).__name__
            time.sleep(0.2 * (attempt + 1))  # a server busy starting sessions may close one at once
        raise ProviderError(f"{self.host}: the SSH server refuses the sftp subsystem ({why}); Lifeboat reads and "
                            "writes files on hosts through it.",
                            hint="add `Subsystem sftp internal-sftp` (or the path of sftp-server) to the host's "
                                 "sshd_config and reload sshd.", code="ssh.no_sftp")

    def write_bytes(self, path, data, *, mode=0o600):
        sftp = self.sftp()
        try:
            tmp = f"{path}.lifeboat-tmp"
            with sftp.open(tmp, "wb") as handle:
                sftp.chmod(tmp, mode)
                handle.write(data)
            sftp.posix_rename(tmp, path)
        finally:
            sftp.close()

    def read_bytes(self, path):
        sftp = self.sftp()
        try:
            with sftp.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise
        finally:
            sftp.close()


BULK_BUFFER = 1 << 20


class BulkSession:
    """A command kept running on a host (:meth:`SSHConnection.bulk_session`): ``stdin`` to write to, answers
    read line by line, ``close()`` to end it (its exit checked), ``kill()`` after a failure."""

    def __init__(self, conn: SSHConnection, argv: list[str], proc: subprocess.Popen):
        self.conn, self.argv, self.proc = conn, argv, proc
        self.stdin = proc.stdin
        self._err = bytearray()
        self._reader = threading.Thread(target=_drain_pipe, args=(proc.stderr, self._err, True), daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_line(self) -> bytes:
        """The command's next line; at its end (it exited), the failure that ended it is raised."""
        line = self.proc.stdout.readline()
        if not line:
            self._finish()
            raise CommandFailed(self.conn.host, self.argv, 0, stderr=bytes(self._err))  # exit 0 before answering
        return line

    def close(self, out: bytes | bytearray = b"") -> None:
        """End the command (its input closed) and check how it exited; ``out``: what it printed, read by the
        caller, for the error."""
        try:
            self.stdin.close()
        except OSError:
            pass
        self._finish(out)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)

    def _finish(self, out: bytes | bytearray = b"") -> None:
        code = self.proc.wait()
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        self.conn._bulk_failed(self.argv, code, out, self._err)


PIN_PREFIX = "lifeboat-ssh-"  # the pinned known_hosts folders: <prefix><machine>-<pid>-<random>


# Key exchanges put first for the bulk streams (each batch is a connection of its own): ML-KEM768 with X25519
# (post-quantum and cheap; OpenSSH 9.9 and later), then X25519 as the control connection (paramiko) and rclone
# use. OpenSSH 9.0-9.8 would otherwise pick sntrup761x25519: 66 ms of client CPU and 70 ms more per connection
# than X25519 (measured on this project's 2-core test machine), for every batch. It stays in the list, after
# these, for a server that offers nothing else. LIFEBOAT_BULK_SSH_KEX replaces the choice (a KexAlgorithms value).
BULK_KEX = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")


def bulk_kex(ssh: str) -> list[str]:
    """The ``-o KexAlgorithms=^...`` options for the OpenSSH client ``ssh``: BULK_KEX, in that order, as far
    as this client knows them (``ssh -Q kex``; an unknown name is fatal to ssh), ahead of its defaults."""
    chosen = os.environ.get("LIFEBOAT_BULK_SSH_KEX")
    if chosen:
        return ["-o", f"KexAlgorithms={chosen}"]
    known = _known_kex(ssh)
    first = [name for name in BULK_KEX if name in known]
    return ["-o", "KexAlgorithms=^" + ",".join(first)] if first else []


@functools.lru_cache(maxsize=4)
def _known_kex(ssh: str) -> frozenset[str]:
    try:
        found = subprocess.run([ssh, "-Q", "kex"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(found.stdout.split()) if found.returncode == 0 else frozenset()


def _sweep_pin_folders() -> None:
    """Remove the pinned known_hosts folders of processes of this machine that are gone without removing
    theirs (killed with SIGKILL: no finalizer ran). Only this account's; a live or unknown process keeps its
    folder."""
    import tempfile

    from toolkit.run.locks import gone_here

    base = Path(tempfile.gettempdir())
    try:
        found = [p for p in base.iterdir() if p.name.startswith(PIN_PREFIX)]
    except OSError:
        return
    for folder in found:
        try:
            machine, pid, _ = folder.name[len(PIN_PREFIX):].rsplit("-", 2)
            if folder.stat().st_uid == os.getuid() and gone_here(machine, int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def _widen_pipe(pipe) -> None:
    """Let a pipe to or from ssh hold 1 MiB (F_SETPIPE_SZ; Linux, up to /proc/sys/fs/pipe-max-size): with
    the default 64 KiB, each side stalls whenever the other pauses briefly."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), BULK_BUFFER)
    except (OSError, ValueError, ImportError):
        pass


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (OSError, ValueError):  # the command ended first: its exit status says why
        pass


def _drain_pipe(pipe, sink: bytearray, tail_only: bool) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.extend(chunk)
        if tail_only:
            del sink[:-65536]


def _drain(channel, sink: bytearray) -> None:
    while True:
        try:
            chunk = channel.recv_stderr(65536)
        except (TimeoutError, OSError):
            return
        if not chunk:
            return
        sink.extend(chunk)
        del sink[:-65536]  # keep only the tail


def _drain_stdout(channel, sink: bytearray) -> None:
    while True:
        try:
            chunk = channel.recv(65536)
        except (TimeoutError, OSError):
            return
        if not chunk:
            return
        sink.extend(chunk)
        del sink[:-65536]


__all__ = ["Connection", "LocalConnection", "SSHConnection", "Result", "UnknownHostKey", "ChangedHostKey",
           "fingerprint", "known_hosts_name", "tail"]
