"""A TCP proxy on 127.0.0.1 that can refuse connections for a while: an object-store outage for tests.

`TcpProxy(target_port)` forwards every connection to 127.0.0.1:target_port. `outage(seconds)` closes
the listening socket (new connections are refused), resets every open connection, and listens again
on the same port after `seconds` - the server behind it (moto) keeps running with its state intact.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>; `outage()` refuses connections for a while."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self.outages = 0
        self._serve(self._listener)

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        return listener

    def _serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: an outage began
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._open.discard(sock)

    def outage(self, seconds: float) -> None:
        """Refuse and reset every connection for `seconds` (blocking), then serve again on the same port."""
        self.outages += 1
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; the port stops listening
        self._listener.close()
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:  # RST, as a crashed server's kernel would send
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # close() alone frees nothing while a pump thread is blocked in recv() on the socket: the
                # connection stayed open, and a client waiting for its answer waited forever (seen in CI).
                # Shutting the reading side wakes that recv() without sending a FIN; the close then resets.
                sock.shutdown(socket.SHUT_RD)
                sock.close()
        time.sleep(seconds)
        self._listener = self._listen(self.port)
        self._serve(self._listener)

    def outage_in_background(self, seconds: float) -> threading.Thread:
        thread = threading.Thread(target=self.outage, args=(seconds,), daemon=True)
        thread.start()
        return thread
