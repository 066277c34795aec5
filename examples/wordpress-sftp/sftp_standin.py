#!/usr/bin/env python3
"""A stand-in for the site's SFTP server, for the WordPress deploy example: a TCP service
with an SSH-like banner and a tiny upload protocol ("PUT path size", then the bytes).

  --refuse N        close the first N connections before the banner, as a server under load
                    does ("kex_exchange_identification: Connection closed by remote host")
  --fail-uploads N  reset the first N upload sessions halfway through a file
  --root DIR        where uploaded files land (DIR/var/www/html/...)

It prints "listening on 127.0.0.1:PORT" once it accepts connections (--port 0 picks one).
"""
import argparse
import os
import socket
import socketserver
import struct
import threading

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=2222)
parser.add_argument("--refuse", type=int, default=2)
parser.add_argument("--fail-uploads", type=int, default=1)
parser.add_argument("--root", required=True)
args = parser.parse_args()
lock = threading.Lock()
counts = {"connections": 0, "uploads": 0}


def bump(what):
    with lock:
        counts[what] += 1
        return counts[what]


class Session(socketserver.StreamRequestHandler):
    def handle(self):
        if bump("connections") <= args.refuse:
            return  # closed before the banner
        self.wfile.write(b"SSH-2.0-OpenSSH_9.6 retryd-standin\n")
        first_upload = None
        while True:
            line = self.rfile.readline().decode().strip()
            if not line or line == "BYE":
                return
            command, path, size = line.split(" ")
            if command != "PUT":
                self.wfile.write(b"ERR unknown command\n")
                return
            if first_upload is None:
                first_upload = bump("uploads") <= args.fail_uploads
            data = self.rfile.read(int(size))
            if first_upload:
                # Reset mid-transfer: the client sees "Connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            target = os.path.join(args.root, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
            self.wfile.write(b"OK\n")


socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", args.port), Session)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
