#!/usr/bin/env python3
"""A stand-in webhook receiver (Slack-like) for the notification example: it answers
503 to the first --fail deliveries (the first with Retry-After: 1), then 200. Every request
is appended to --log as one JSON line (status and body).

It prints "listening on 127.0.0.1:PORT" once it accepts connections (--port 0 picks one).
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=9000)
parser.add_argument("--fail", type=int, default=2)
parser.add_argument("--log", required=True)
args = parser.parse_args()
lock = threading.Lock()
seen = [0]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        with lock:
            seen[0] += 1
            n = seen[0]
        status = 503 if n <= args.fail else 200
        with lock, open(args.log, "a") as f:
            f.write(json.dumps({"status": status, "path": self.path, "body": body}) + "\n")
        reply = b'{"ok": false, "error": "service_unavailable"}' if status == 503 else b'{"ok": true}'
        self.send_response(status)
        if n == 1:
            self.send_header("retry-after", "1")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
