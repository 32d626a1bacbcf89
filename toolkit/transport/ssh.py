"""Commands and files over SSH (paramiko), the Connection contract: host keys verified against known_hosts
(an unknown key refused with its fingerprint, a changed one always refused, nothing auto-added), the
argv quoted with ``shlex.join`` for the remote shell, environment values in a 0600 file over SFTP; bulk
streams through the system OpenSSH client pinned to the key paramiko verified (README, Design)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import CommandFailed, ProviderError, ProviderUnreachable, tail
from toolkit.transport.bulk import (
    BULK_BUFFER,
    PIN_PREFIX,
    BulkSession,
    bulk_kex,
    drain,
    drain_pipe,
    drain_stdout,
    feed,
    sweep_pin_folders,
    widen_pipe,
)
from toolkit.transport.connection import Connection, Result


def plain_reason(exc: BaseException) -> str:
    """Why a connection failed, in words (paramiko says "[Errno None] Unable to connect to port 22 on ...")."""
    import errno
    import socket

    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: one error per address tried
    if errors:
        return "; ".join(f"{addr[0]}: {plain_reason(err)}" for addr, err in errors.items())
    if isinstance(exc, socket.gaierror):
        return "the name does not resolve (DNS)"
    code = getattr(exc, "errno", None)
    words = {errno.ECONNREFUSED: "connection refused: nothing listens on that port",
             errno.EHOSTUNREACH: "no route to the host (down, or a network in between drops it)",
             errno.ENETUNREACH: "no route to that network from this machine",
             errno.ETIMEDOUT: "no answer (timed out)", errno.ECONNRESET: "the connection was reset"}
    if code in words:
        return words[code]
    text = str(exc).strip()
    return text[0].lower() + text[1:] if text else type(exc).__name__

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
            raise ProviderUnreachable(f"{host}: cannot connect to {self.user}@{shown}: {plain_reason(exc)}.",
                                      hint=f"check that {host} is up, that sshd listens on port {self.port} there "
                                           "and that no firewall stands between (`ssh -p "
                                           f"{self.port} {self.user}@{self.address}` would say the same).",
                                      code="ssh.connect") from None
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
        sweep_pin_folders()
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
        reader = threading.Thread(target=drain_pipe, args=(session.proc.stdout, out, False), daemon=True)
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
        widen_pipe(proc.stdout)
        err = bytearray()
        reader = threading.Thread(target=drain_pipe, args=(proc.stderr, err, True), daemon=True)
        reader.start()
        if input is not None:
            threading.Thread(target=feed, args=(proc.stdin, input), daemon=True).start()
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
        widen_pipe(proc.stdin)
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

    def interactive(self, argv, *, env=None, cwd=None) -> int:
        """``argv`` on a pseudo-terminal of the host, wired to this terminal (raw mode, resized with it)
        until it exits: `lifeboat console`. Its environment goes through the same 0600 file as ``run``'s
        (never its arguments). Its exit status."""
        import select
        import signal
        import sys

        argv = [str(a) for a in argv]
        if cwd:
            argv = ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
        transport = self.client().get_transport()
        channel = self._session(lambda: transport.open_session(timeout=self.connect_timeout))
        size = shutil.get_terminal_size((80, 24))
        channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
        channel.exec_command(self._command(argv, env))
        stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
        saved = None
        if os.isatty(stdin):
            import termios
            import tty

            saved = termios.tcgetattr(stdin)
            tty.setraw(stdin)

        def resized(*_):
            now = shutil.get_terminal_size((80, 24))
            channel.resize_pty(width=now.columns, height=now.lines)

        previous = signal.signal(signal.SIGWINCH, resized)
        reading = [channel, stdin]
        try:
            while True:
                ready, _, _ = select.select(reading, [], [], 0.5)
                if channel in ready:
                    data = channel.recv(32768)
                    if not data:
                        break
                    os.write(stdout, data)
                if stdin in ready:
                    data = os.read(stdin, 4096)
                    if data:
                        channel.sendall(data)
                    else:  # our input ended (not a terminal): the remote side gets EOF, output goes on
                        channel.shutdown_write()
                        reading = [channel]
                if channel.exit_status_ready() and not channel.recv_ready():
                    break
        finally:
            signal.signal(signal.SIGWINCH, previous)
            if saved is not None:
                import termios

                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        code = channel.recv_exit_status()
        channel.close()
        return code

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
        reader = threading.Thread(target=drain, args=(channel, err), daemon=True)
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
        readers = [threading.Thread(target=drain, args=(channel, err), daemon=True),
                   threading.Thread(target=drain_stdout, args=(channel, out), daemon=True)]
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
