"""The baseline for bench/startup.py: a minimal MCPServer with one tool, over stdio."""

from mcp.server import MCPServer

mcp = MCPServer("hello")


@mcp.tool()
def hello(name: str) -> str:
    """Say hello to someone by name."""
    return f"Hello, {name}!"


if __name__ == "__main__":
    mcp.run()
