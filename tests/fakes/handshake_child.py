"""A stdio MCP server of the handshake revisions only, with list-changed and resource subscriptions.

Plain JSON lines, no SDK: it answers `server/discover` (and any method it lacks) with -32601, as a server from
before 2026-07-28 does. `change` sends `notifications/tools/list_changed` and, for every resource it was
subscribed to, `notifications/resources/updated`; `state` says which resources it is subscribed to. `ask` asks
its client each of `questions` in turn (`sample`: sampling, `elicit`: a form elicitation), then answers with what
it was told.
"""

import json
import sys
from typing import Any

CAPABILITIES = {"tools": {"listChanged": True}, "resources": {"subscribe": True}, "prompts": {}}
TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in ("change", "state", "ask")]
SAMPLE = {"messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}], "maxTokens": 50}
ELICIT = {"message": "Your name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}


def told(answer: dict[str, Any]) -> str:
    """What a client's answer to a question said."""
    if "error" in answer:
        return f"refused ({answer['error']['message']})"
    content = answer["result"].get("content")
    return str(content["text"]) if isinstance(content, dict) and "text" in content else json.dumps(content)


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    subscribed: list[str] = []
    asking: dict[str, tuple[Any, list[str], list[str]]] = {}  # question id: (call id, questions left, answers)

    def ask(call_id: Any, left: list[str], answers: list[str]) -> None:
        if not left:
            text = " | ".join(answers)
            send({"jsonrpc": "2.0", "id": call_id, "result": {"content": [{"type": "text", "text": text}]}})
            return
        question_id = f"q-{len(asking)}-{len(answers)}"
        asking[question_id] = (call_id, left[1:], answers)
        method, params = ("sampling/createMessage", SAMPLE) if left[0] == "sample" else ("elicitation/create", ELICIT)
        send({"jsonrpc": "2.0", "id": question_id, "method": method, "params": params})

    for line in sys.stdin:
        message = json.loads(line)
        request_id, method, params = message.get("id"), message.get("method"), message.get("params") or {}
        if method is None and request_id in asking:  # a client's answer to a question
            call_id, left, answers = asking.pop(request_id)
            ask(call_id, left, [*answers, told(message)])
            continue
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
        elif method == "tools/call" and params.get("name") == "ask":
            ask(request_id, list(params.get("arguments", {}).get("questions", [])), [])
            continue
        elif method == "tools/call" and params.get("name") == "state":
            result = {"content": [{"type": "text", "text": json.dumps(sorted(subscribed))}]}
        else:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})
            continue
        send({"jsonrpc": "2.0", "id": request_id, "result": result})


if __name__ == "__main__":
    main()
