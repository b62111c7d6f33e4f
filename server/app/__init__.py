"""The application: the ``ai-orchestration-mcp`` command (:mod:`.cli`), the app assembly (:mod:`.assembly`: the
dependencies and the ``MCPServer`` with its lifespan), transports (:mod:`.transports`), simple mode
(:mod:`.simple`), the demo and the CLI's subcommands. The entry point: the only package that configures logging
or reads the environment, and the only one that imports the MCP surface (``tools``, ``resources``, ``prompts``).
"""
