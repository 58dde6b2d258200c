"""A stdio "MCP server" that answers `initialize` and `tools/list` well, then fails a `tools/call` as told.

The tool's name says how: `echo` answers, `hang` never does, `neither` answers with neither result nor
error, `crash` exits, `close_output` closes stdout and lives on. Plain JSON lines, no SDK, so it starts fast.
"""

import json
import os
import sys
import time
from typing import Any

TOOLS = ("echo", "hang", "neither", "crash", "close_output")


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        request_id, method = message.get("id"), message.get("method")
        if request_id is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "broken-stdio", "version": "1.0.0"},
            }
            reply({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/list":
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]
            reply({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "echo":
                reply({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": "fine"}]}})
            elif name == "neither":
                reply({"jsonrpc": "2.0", "id": request_id})
            elif name == "crash":
                os._exit(3)
            elif name == "close_output":
                sys.stdout.close()
                os.close(1)
                time.sleep(60)
            # hang: no answer at all
        else:
            reply({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    main()
