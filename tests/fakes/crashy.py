"""A stdio MCP server that can be told to die mid-call, for the gateway's supervision tests."""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("crashy", log_level="WARNING")


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool(description="Exit the process at once, as a crash would.")
def crash() -> str:
    os._exit(3)


@server.tool(description="This process's id, so a test can tell a restarted server from the old one.")
def pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    server.run("stdio")
