"""The MCP SDK's own Streamable HTTP server with one `echo` tool: the baseline upstream for benchmarks.

Run `python bench/sdk_upstream.py PORT`; it serves `http://127.0.0.1:PORT/mcp`.
"""

import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette


def build_app() -> Starlette:
    server = MCPServer("sdk-upstream", version="1.0.0", log_level="WARNING")

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    return server.streamable_http_app(streamable_http_path="/mcp")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
