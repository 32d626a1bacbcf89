"""A TCP proxy in front of a real server that breaks connections on request: armed with ``cut_after(n)``,
it forwards the next ``n`` bytes the server sends and then closes that connection on both sides, as a
network that drops a connection mid-response (or a server that gives up early) does. Used to show that
readers go on from where they stopped instead of failing the copy or reading bytes twice."""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.budget: int | None = None  # bytes still to forward before the next cut (None: not armed)
        self.after = 0
        self.left = 0  # cuts still to make
        self.cuts = 0  # cuts made so far
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int, times: int = 1, then: int | None = None) -> None:
        """Cut the connection carrying the server's next ``nbytes`` bytes (counted across connections from
        now), ``times`` times over, each later cut ``then`` bytes (default ``nbytes``) after the one before."""
        with self.lock:
            self.budget, self.after, self.left = nbytes, nbytes if then is None else then, times

    def disarm(self) -> None:
        with self.lock:
            self.budget, self.left = None, 0

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                cut = False
                if downstream:
                    with self.lock:
                        if self.budget is not None and len(data) >= self.budget:
                            data, cut = data[:self.budget], True
                            self.cuts += 1
                            self.left -= 1
                            self.budget = self.after if self.left > 0 else None
                        elif self.budget is not None:
                            self.budget -= len(data)
                if data:
                    dst.sendall(data)
                if cut:
                    break
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
