#!/usr/bin/env python3
"""The "confirm" step: asks the node for the transaction's receipt. Not mined yet is a
transient failure (exit 75, EX_TEMPFAIL); a reverted transaction is a permanent one."""
import json
import sys
import urllib.request

rpc, tx_hash = sys.argv[1], sys.argv[2]
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                   "params": [tx_hash]}).encode()
request = urllib.request.Request(rpc, body, {"content-type": "application/json"})
receipt = json.load(urllib.request.urlopen(request, timeout=10)).get("result")
if receipt is None:
    print(f"transaction {tx_hash} not yet mined", file=sys.stderr)
    sys.exit(75)
if receipt["status"] != "0x1":
    print(f"transaction {tx_hash} reverted", file=sys.stderr)
    sys.exit(1)
print(f"mined in block {int(receipt['blockNumber'], 16)}")
print(f"::set-output contract_address={receipt['contractAddress']}")
