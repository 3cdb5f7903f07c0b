#!/usr/bin/env python3
"""Tidepool guest exec server: runs one argv per TCP connection, exactly as given (never a
shell), streaming stdin/stdout/stderr and returning the exit status.

Framing (both directions): 1 byte type, 4 bytes big-endian payload length, payload.

  server -> client
    'H' hello, JSON {"proto": 1, ...}     sent on accept
    'S' started, JSON {"pid": int}         the process is running
    'O' stdout bytes
    'E' stderr bytes
    'X' exit, JSON {"code": int|null, "signal": int|null}   last frame
    'F' failed to start, JSON {"error": str, "errno": int|null}   last frame
  client -> server
    'R' request, JSON {"argv": [str, ...], "env": {str: str}, "clear_env": bool,
                       "cwd": str|null}   first frame
    'I' stdin bytes; an empty payload closes the process's stdin
    'K' send a signal to the process group, JSON int

The process runs in its own session (process group). When the connection drops (the client
went away or dropped its handle) the whole group gets SIGKILL.
"""

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

PROTO = 1
HEADER = struct.Struct(">BI")
CHUNK = 256 * 1024
MAX_FRAME = 16 * 1024 * 1024


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError("connection closed")
        buf += part
    return bytes(buf)


def read_frame(sock):
    kind, length = HEADER.unpack(read_exact(sock, HEADER.size))
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    return chr(kind), read_exact(sock, length) if length else b""


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, kind, payload=b""):
        with self.lock:
            self.sock.sendall(HEADER.pack(ord(kind), len(payload)))
            if payload:
                self.sock.sendall(payload)

    def send_json(self, kind, value):
        self.send(kind, json.dumps(value).encode())


def handle(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock)
    try:
        conn.send_json("H", {"proto": PROTO, "uname": os.uname().release})
        try:
            kind, payload = read_frame(sock)
        except EOFError:
            return  # a readiness probe: hello was all it wanted
        if kind != "R":
            return
        req = json.loads(payload)
        run(conn, req)
    except (EOFError, OSError, ValueError) as e:
        print(f"exec-server: connection error: {e!r}", file=sys.stderr)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def run(conn, req):
    argv = req["argv"]
    env = {} if req.get("clear_env") else dict(os.environ)
    env.update(req.get("env") or {})
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or "/",
            env=env,
            start_new_session=True,
            close_fds=True,
            bufsize=0,
        )
    except (OSError, ValueError, TypeError) as e:
        conn.send_json("F", {"error": str(e), "errno": getattr(e, "errno", None)})
        return
    conn.send_json("S", {"pid": proc.pid})

    finished = threading.Event()

    def kill(sig=signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def pump(stream, kind):
        fd = stream.fileno()
        try:
            while True:
                data = os.read(fd, CHUNK)
                if not data:
                    break
                conn.send(kind, data)
        except OSError:
            kill()
        finally:
            stream.close()

    def from_client():
        stdin = proc.stdin
        try:
            while True:
                kind, payload = read_frame(conn.sock)
                if kind == "I":
                    if stdin is None:
                        continue
                    if not payload:
                        stdin.close()
                        stdin = None
                        continue
                    try:
                        view = memoryview(payload)
                        while view:
                            view = view[os.write(stdin.fileno(), view) :]
                    except OSError:
                        # The process closed its stdin: drop the rest, like a pipe would.
                        stdin.close()
                        stdin = None
                elif kind == "K":
                    kill(int(json.loads(payload)))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            if stdin is not None:
                stdin.close()
            # The client is gone: nothing may outlive it, not even after a normal exit
            # (background children of the command share its process group).
            kill()
            finished.set()

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "O"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "E"), daemon=True),
    ]
    for t in threads:
        t.start()
    threading.Thread(target=from_client, daemon=True).start()
    for t in threads:
        t.join()
    rc = proc.wait()
    try:
        if rc >= 0:
            conn.send_json("X", {"code": rc, "signal": None})
        else:
            conn.send_json("X", {"code": None, "signal": -rc})
    except OSError:
        pass
    # Keep the socket open until the client closes it, so a late stdin frame is not
    # answered by a reset that could eat the exit frame.
    finished.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7000)
    # The guest listens on all its addresses (qemu forwards to 10.0.2.15); anywhere else
    # (a protocol test on the host) pass 127.0.0.1.
    ap.add_argument("--bind", default="0.0.0.0")
    args = ap.parse_args()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(128)
    print(f"exec-server: listening on {args.bind}:{args.port}", file=sys.stderr, flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
