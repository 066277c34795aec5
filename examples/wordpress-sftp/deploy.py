#!/usr/bin/env python3
"""The deploy client for the WordPress example, speaking the stand-in's protocol and
failing with the messages ssh and sftp print.

  deploy.py connect HOST:PORT                  check that the server answers
  deploy.py upload HOST:PORT SRC_DIR DEST_DIR  upload every file of SRC_DIR to DEST_DIR
"""
import os
import socket
import sys


def connect(target):
    host, port = target.rsplit(":", 1)
    try:
        conn = socket.create_connection((host, int(port)), timeout=10)
    except ConnectionRefusedError:
        sys.exit(f"ssh: connect to host {host} port {port}: Connection refused")
    banner = conn.makefile("rb").readline()
    if not banner:
        print("kex_exchange_identification: Connection closed by remote host", file=sys.stderr)
        sys.exit(f"Connection closed by {host} port {port}")
    return conn, banner.decode().strip()


def upload(target, source, dest):
    conn, _ = connect(target)
    replies = conn.makefile("rb")
    sent = 0
    try:
        for folder, _, files in sorted(os.walk(source)):
            for name in sorted(files):
                local = os.path.join(folder, name)
                remote = os.path.join(dest, os.path.relpath(local, source))
                data = open(local, "rb").read()
                conn.sendall(f"PUT {remote} {len(data)}\n".encode() + data)
                if replies.readline().strip() != b"OK":
                    raise ConnectionResetError("Connection reset by peer")
                print(f"Uploading {local} to {remote}")
                sent += 1
        conn.sendall(b"BYE\n")
    except (ConnectionResetError, BrokenPipeError):
        sys.exit(f"client_loop: send disconnect: Connection reset by peer ({sent} files sent)")
    print(f"uploaded {sent} files")


if sys.argv[1] == "connect":
    _, banner = connect(sys.argv[2])
    print(f"connected to {sys.argv[2]} ({banner})")
else:
    upload(sys.argv[2], sys.argv[3], sys.argv[4])
