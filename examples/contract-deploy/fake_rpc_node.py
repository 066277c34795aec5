#!/usr/bin/env python3
"""A stand-in for an Ethereum JSON-RPC node and a block explorer, for the contract
deployment example. It answers eth_estimateGas, eth_sendRawTransaction and
eth_getTransactionReceipt, and POST /api/verify (the explorer, which always fails here).

  --pending N     eth_getTransactionReceipt answers null ("not yet mined") N times per tx
  --state DIR     calls are appended to DIR/calls.log; while DIR/reject-submit exists,
                  eth_sendRawTransaction is refused ("insufficient funds")

It prints "listening on 127.0.0.1:PORT" once it accepts connections (--port 0 picks one).
"""
import argparse
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8545)
parser.add_argument("--pending", type=int, default=2)
parser.add_argument("--state", required=True)
args = parser.parse_args()
os.makedirs(args.state, exist_ok=True)
lock = threading.Lock()
receipt_queries = {}


def log(entry):
    with lock, open(os.path.join(args.state, "calls.log"), "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == "/api/verify":
            log({"method": "verify", "params": request})
            return self.reply(503, {"status": "0", "message": "explorer busy, verification queue full"})
        method, params, rid = request.get("method"), request.get("params", []), request.get("id")
        log({"method": method, "params": params})
        if method == "eth_estimateGas":
            return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": "0x5208"})
        if method == "eth_sendRawTransaction":
            if os.path.exists(os.path.join(args.state, "reject-submit")):
                return self.reply(200, {"jsonrpc": "2.0", "id": rid,
                                        "error": {"code": -32000, "message": "insufficient funds for gas * price + value"}})
            tx_hash = "0x" + hashlib.sha256(params[0].encode()).hexdigest()
            return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": tx_hash})
        if method == "eth_getTransactionReceipt":
            with lock:
                seen = receipt_queries.get(params[0], 0)
                receipt_queries[params[0]] = seen + 1
            if seen < args.pending:
                return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": None})
            address = "0x" + hashlib.sha256(params[0].encode()).hexdigest()[:40]
            return self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": {
                "transactionHash": params[0], "status": "0x1", "blockNumber": "0x1b4",
                "contractAddress": address}})
        return self.reply(200, {"jsonrpc": "2.0", "id": rid,
                                "error": {"code": -32601, "message": f"method {method} not found"}})


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
