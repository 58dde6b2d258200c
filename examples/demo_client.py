"""Ask the signoff demo for a call that needs approval, and wait for a person to approve it.

Start the demo with known tokens, then run this in a second terminal:

    SIGNOFF_DEMO_TOKEN=demo-agent-token-0001 SIGNOFF_DEMO_APPROVER_TOKEN=demo-approver-token-01 signoff serve
    SIGNOFF_DEMO_TOKEN=demo-agent-token-0001 python examples/demo_client.py

The call is held until someone approves it on the approvals page (or with `signoff approve`), then runs.
"""

import asyncio
import os

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

BASE_URL = os.environ.get("SIGNOFF_URL", "http://127.0.0.1:8080")
TOKEN = os.environ.get("SIGNOFF_DEMO_TOKEN", "paste-the-agent-token-from-the-banner")
HOLD = 50  # seconds: signoff holds a call that needs approval this long ([gateway] approval_hold, default 50s)


async def main() -> None:
    # httpx2 gives up on a silent response after 5 s by default; a held call is silent until someone decides.
    timeout = httpx2.Timeout(10, read=HOLD + 10)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with Client(streamable_http_client(f"{BASE_URL}/mcp/demo", http_client=http)) as client:
            print("calling execute_sql with a DROP: approve it at", f"{BASE_URL}/approvals")
            result = await client.call_tool("execute_sql", {"sql": "DROP TABLE sessions_archive"})
    text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
    print("refused or still pending:" if result.is_error else "approved, and it ran:", text, sep="\n")


asyncio.run(main())
