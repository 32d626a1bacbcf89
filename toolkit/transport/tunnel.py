"""Local port forwarding through an SSH host (``ssh -L``, with paramiko): how Lifeboat reaches a private
database (RDS) from outside its network. The tunnel listens on 127.0.0.1 only, on a port the kernel
picks, and lives as long as its ``with`` block."""

from __future__ import annotations

import select
import socket
import threading
from contextlib import contextmanager

from toolkit.errors import ProviderUnreachable


@contextmanager
def forward(conn, remote_host: str, remote_port: int):
    """Yield a local (host, port) whose connections reach ``remote_host:remote_port`` as seen from ``conn``."""
    import paramiko

    transport = conn.client().get_transport()
    # Fail early, with a clear message, when the SSH host cannot reach the far end.
    try:
        probe = transport.open_channel("direct-tcpip", (remote_host, remote_port), ("127.0.0.1", 0), timeout=15)
        probe.close()
    except (paramiko.SSHException, OSError) as exc:
        raise ProviderUnreachable(f"{conn.host}: cannot open a tunnel to {remote_host}:{remote_port} ({exc}).",
                                  hint="the SSH host must reach the database (security groups, AllowTcpForwarding).",
                                  code="ssh.tunnel") from None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def pump(client: socket.socket) -> None:
        try:
            channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), client.getpeername(),
                                             timeout=15)
        except Exception:
            client.close()
            return
        try:
            while not stop.is_set():
                ready, _, _ = select.select([client, channel], [], [], 0.5)
                if client in ready:
                    data = client.recv(1 << 16)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in ready:
                    data = channel.recv(1 << 16)
                    if not data:
                        break
                    client.sendall(data)
        except OSError:
            pass
        finally:
            channel.close()
            client.close()

    def accept() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.2)
            if not ready:
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(client,), daemon=True, name="lifeboat-tunnel").start()

    thread = threading.Thread(target=accept, daemon=True, name="lifeboat-tunnel-accept")
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()
