"""Send a MongoDB `ping` (OP_MSG) and exit 0 when the server answers ok: 1. No driver needed.

mongo_ping.py HOST PORT [CA_FILE]: with a CA file, over TLS, checking the server's certificate."""
import socket
import ssl
import struct
import sys


def bson_doc(items):
    body = b""
    for key, value in items:
        k = key.encode() + b"\x00"
        if isinstance(value, int):
            body += b"\x10" + k + struct.pack("<i", value)
        else:
            s = value.encode() + b"\x00"
            body += b"\x02" + k + struct.pack("<i", len(s)) + s
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    doc = bson_doc([("ping", 1), ("$db", "admin")])
    payload = struct.pack("<I", 0) + b"\x00" + doc
    header = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013)
    raw = socket.create_connection((host, port), timeout=3)
    if len(sys.argv) > 3:
        raw = ssl.create_default_context(cafile=sys.argv[3]).wrap_socket(raw, server_hostname=host)
    with raw as s:
        s.sendall(header + payload)
        head = b""
        while len(head) < 16:  # no MSG_WAITALL: TLS sockets refuse flags
            chunk = s.recv(16 - len(head))
            if not chunk:
                return 1
            head += chunk
        length = struct.unpack("<i", head[:4])[0]
        rest = b""
        while len(rest) < length - 16:
            chunk = s.recv(length - 16 - len(rest))
            if not chunk:
                break
            rest += chunk
    # ok is a double 1.0 in the reply document
    if b"ok\x00" in rest and struct.pack("<d", 1.0) in rest:
        return 0
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError):
        sys.exit(1)
