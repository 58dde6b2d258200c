"""The built-in demo upstream: a fake fleet of database connections and browser sessions.

`signoff serve` spawns it over stdio (`python -m integrations.demo`) when no server is
configured, so a newcomer sees hiding, limits, approvals and denials within a minute,
against tools named like the catalogue's. Nothing here touches a real database: every
tool reads or changes an in-memory fleet owned by one `build_demo_server()` call.
"""

import json
from dataclasses import asdict, dataclass
from enum import StrEnum

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

__all__ = ["build_demo_server", "main"]

# The hints mirror the catalogue's categories (read-only, write, execute, destructive), so a
# policy derived from annotations alone classifies each tool the way the catalogue does.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
EXECUTE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)


class ConnectionState(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    IDLE_IN_TRANSACTION = "idle in transaction"


@dataclass(slots=True)
class Connection:
    id: str
    pid: int
    user_id: str
    ip: str
    client_app: str
    state: ConnectionState


@dataclass(slots=True)
class BrowserSession:
    id: str
    user_id: str
    url: str


@dataclass(slots=True)
class Fleet:
    connections: dict[str, Connection]
    sessions: dict[str, BrowserSession]

    def connection(self, connection_id: str) -> Connection:
        try:
            return self.connections[connection_id]
        except KeyError:
            raise ToolError(f"No connection with id {connection_id!r}") from None

    def to_json(self) -> str:
        return json.dumps(
            {
                "connections": [asdict(c) for c in self.connections.values()],
                "sessions": [asdict(s) for s in self.sessions.values()],
            },
            indent=2,
        )


def seed_fleet() -> Fleet:
    rows = [
        (4121, "alice", "10.0.0.11", "psql", ConnectionState.ACTIVE),
        (4122, "alice", "10.0.0.11", "metabase", ConnectionState.IDLE),
        (4207, "bob", "10.0.0.12", "airflow", ConnectionState.IDLE_IN_TRANSACTION),
        (4311, "bob", "10.0.0.12", "airflow", ConnectionState.ACTIVE),
        (4420, "reporting", "10.0.0.40", "looker", ConnectionState.IDLE),
        (87, "postgres", "127.0.0.1", "autovacuum", ConnectionState.ACTIVE),
    ]
    connections = {
        f"conn-{n}": Connection(f"conn-{n}", pid, user, ip, app, state)
        for n, (pid, user, ip, app, state) in enumerate(rows, start=1)
    }
    sessions = {
        "sess-1": BrowserSession("sess-1", "alice", "https://grafana.example.com/d/db"),
        "sess-2": BrowserSession("sess-2", "bob", "https://airflow.example.com/home"),
        "sess-3": BrowserSession("sess-3", "reporting", "https://looker.example.com/dashboards/7"),
    }
    return Fleet(connections, sessions)


def describe(connection: Connection) -> str:
    return (
        f"{connection.id} pid={connection.pid} user={connection.user_id} ip={connection.ip} "
        f"app={connection.client_app} state={connection.state}"
    )


def build_demo_server() -> MCPServer:
    """A fresh demo server with its own fleet; two servers never share state."""
    fleet = seed_fleet()
    server = MCPServer(
        "signoff-demo",
        instructions="A fake database fleet for trying signoff. Nothing here is real.",
    )

    @server.tool(annotations=READ_ONLY, description="List active database connections.")
    def list_connections() -> str:
        if not fleet.connections:
            return "No connections."
        return "\n".join(describe(c) for c in fleet.connections.values())

    @server.tool(annotations=READ_ONLY, description="Show one database connection by id.")
    def get_connection(connection_id: str) -> str:
        return describe(fleet.connection(connection_id))

    @server.tool(annotations=EXECUTE, description="Terminate a specific database connection by PID.")
    def kill_connection(pid: int) -> str:
        for connection in fleet.connections.values():
            if connection.pid == pid:
                del fleet.connections[connection.id]
                return f"Terminated {connection.id} (pid {pid}, user {connection.user_id})."
        raise ToolError(f"No connection with pid {pid}")

    # The Postgres MCP server's name for the same tool, so the catalogue's postgres.json applies to the demo.
    server.add_tool(
        kill_connection,
        name="PostgreSQL_kill_connection",
        annotations=EXECUTE,
        description="Terminate a specific database connection by PID.",
    )

    @server.tool(annotations=WRITE, description="Disconnect all connections for a specific user.")
    def terminate_user_connections(user_id: str) -> str:
        doomed = [c.id for c in fleet.connections.values() if c.user_id == user_id]
        for connection_id in doomed:
            del fleet.connections[connection_id]
        return f"Disconnected {len(doomed)} connection(s) for user {user_id}: {', '.join(doomed) or 'none'}."

    @server.tool(annotations=EXECUTE, description="Drop active connections for specified IPs")
    def ip_control_drop_connections(ips: list[str]) -> str:
        doomed = [c.id for c in fleet.connections.values() if c.ip in ips]
        for connection_id in doomed:
            del fleet.connections[connection_id]
        return f"Dropped {len(doomed)} connection(s) from {', '.join(ips)}: {', '.join(doomed) or 'none'}."

    @server.tool(
        annotations=DESTRUCTIVE,
        description="Destroy a connection — stops the source subscriber, cleans up the stream buffer.",
    )
    def destroy_connection(connection_id: str) -> str:
        connection = fleet.connection(connection_id)
        del fleet.connections[connection_id]
        return f"Destroyed {connection.id}: subscriber stopped, stream buffer cleaned up."

    @server.tool(annotations=DESTRUCTIVE, description="Close and clean up a browser session. Frees a pool slot.")
    def session_destroy(session_id: str) -> str:
        if fleet.sessions.pop(session_id, None) is None:
            raise ToolError(f"No browser session with id {session_id!r}")
        return f"Closed {session_id}; {len(fleet.sessions)} session(s) remain."

    @server.tool(annotations=EXECUTE, description="Execute a SQL statement against the database.")
    def execute_sql(sql: str) -> str:
        # The demo runs nothing: it only shows the call got through the gateway.
        return f"(demo) Would execute {len(sql)} characters of SQL; nothing was run:\n{sql}"

    @server.resource("demo://fleet", name="fleet", mime_type="application/json", description="The whole demo fleet.")
    def fleet_resource() -> str:
        return fleet.to_json()

    @server.prompt(description="Ask the model to triage the fleet's connections.")
    def triage_connections(goal: str = "free up connection slots") -> str:
        return (
            f"Goal: {goal}. Call list_connections, then propose which connections to end and why. "
            "Prefer idle ones; never touch the postgres user's background workers."
        )

    return server


def main() -> None:
    build_demo_server().run("stdio")


if __name__ == "__main__":
    main()
