"""A stdio MCP server of the handshake revisions only, with list-changed and resource subscriptions.

Plain JSON lines, no SDK: it answers `server/discover` (and any method it lacks) with -32601, as a server from
before 2026-07-28 does. `change` sends `notifications/tools/list_changed` and, for every resource it was
subscribed to, `notifications/resources/updated`; `state` says which resources it is subscribed to.
"""

import json
import sys
from typing import Any

CAPABILITIES = {"tools": {"listChanged": True}, "resources": {"subscribe": True}, "prompts": {}}
TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in ("change", "state")]


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    subscribed: list[str] = []
    for line in sys.stdin:
        message = json.loads(line)
        request_id, method, params = message.get("id"), message.get("method"), message.get("params") or {}
        if request_id is None:
            continue
        result: Any = {}
        if method == "initialize":
            info = {"name": "handshake-child", "version": "1.0.0"}
            result = {"protocolVersion": params["protocolVersion"], "capabilities": CAPABILITIES, "serverInfo": info}
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "resources/subscribe":
            subscribed.append(params["uri"])
        elif method == "resources/unsubscribe":
            subscribed.remove(params["uri"])
        elif method == "tools/call" and params.get("name") == "change":
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            for uri in subscribed:
                send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}})
            result = {"content": [{"type": "text", "text": "changed"}]}
        elif method == "tools/call" and params.get("name") == "state":
            result = {"content": [{"type": "text", "text": json.dumps(sorted(subscribed))}]}
        else:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})
            continue
        send({"jsonrpc": "2.0", "id": request_id, "result": result})


if __name__ == "__main__":
    main()
