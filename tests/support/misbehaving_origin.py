"""A raw-socket HTTP/1.1 origin that lies about its answers' length, for the tests.

``python -m tests.support.misbehaving_origin`` listens on a free loopback port and prints it.
Every answer names the request it answers (``answer <id>``), so a client that pairs
an answer with the wrong request is caught. By path:

- ``/ok/<id>``: an honest answer.
- ``/extra/<id>``: the answer, then in the same write a whole second answer that
  nobody asked for (what a Content-Length smaller than the body written looks like).
- ``/late/<id>``: the honest answer, then 100 ms later the second answer, arriving
  while the connection sits idle.
- ``/conns``: how many connections were accepted so far.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time

_accepted = 0


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _serve(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):  # a client that hangs up is no news
        _exchange(conn)


def _exchange(conn: socket.socket) -> None:
    buffered = b""
    while True:
        while b"\r\n\r\n" not in buffered:
            data = conn.recv(65536)
            if not data:
                return
            buffered += data
        head, _, buffered = buffered.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffered) < length:
            data = conn.recv(65536)
            if not data:
                return
            buffered += data
        buffered = buffered[length:]
        path = head.split(b" ")[1]
        kind, _, ident = path.strip(b"/").partition(b"/")
        if kind == b"conns":
            conn.sendall(_answer(str(_accepted).encode()))
            continue
        honest = _answer(b"answer " + ident)
        forged = _answer(b"answer " + ident + b" (surplus)")
        if kind == b"extra":
            conn.sendall(honest + forged)
        elif kind == b"late":
            conn.sendall(honest)
            time.sleep(0.1)
            conn.sendall(forged)
        else:
            conn.sendall(honest)


def main() -> None:
    global _accepted
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        _accepted += 1
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
