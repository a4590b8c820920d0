"""agents/*: the agent registry (Markdown files with YAML front matter)."""
