"""chat: LLM providers, chat turns with tools, usage and audit, MCP servers as tool sources."""
