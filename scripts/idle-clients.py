#!/usr/bin/env python3
"""Opens N idle PostgreSQL connections (cleartext password auth) and holds
them until stdin closes. Prints "ready N" once every connection has seen
ReadyForQuery. Used by bench-passthrough.sh to measure memory per idle client."""
import socket
import struct
import sys


def startup(port, user, password, db):
    s = socket.create_connection(("127.0.0.1", port))
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", db))) + b"\0"
    s.sendall(struct.pack("!ii", len(body) + 8, 196608) + body)
    buf = b""
    while True:
        while len(buf) < 5:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed during startup")
            buf += chunk
        tag, length = buf[0:1], struct.unpack("!i", buf[1:5])[0]
        while len(buf) < length + 1:
            buf += s.recv(65536)
        payload, buf = buf[5:length + 1], buf[length + 1:]
        if tag == b"R" and struct.unpack("!i", payload[:4])[0] == 3:
            pw = password.encode() + b"\0"
            s.sendall(b"p" + struct.pack("!i", len(pw) + 4) + pw)
        elif tag == b"E":
            raise SystemExit("error: %r" % payload)
        elif tag == b"Z":
            return s


def main():
    port, n, user, password, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    conns = [startup(port, user, password, db) for _ in range(n)]
    print("ready", len(conns), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
