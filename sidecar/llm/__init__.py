"""chat: LLM providers, chat turns with tools, usage and audit, MCP servers as tool sources.

- `providers/` one `Adapter` per wire format (Anthropic SSE, OpenAI-compatible SSE, Ollama
  NDJSON) normalised into `protocol.llm.LlmEvent`; `base.stream_chat` retries only before the
  first output byte. `sse.py` the SSE and NDJSON readers.
- `service.py` provider configuration (keys in the secret store), test, models, detect, pull;
  usage and audit. `local.py` a local Ollama: detect (`/api/tags`) and pull (`/api/pull`).
- `chat.py` one `chat/send` turn: agent, history, budget, tool loop, storage as it streams;
  cancelled replies are kept, marked `cancelled` (the documented exception to "-32800 means
  nothing was applied"); a crash leaves them `incomplete`.
- `budget.py` the context budget. Token counts are estimates: no exact tokenizer works offline
  (tiktoken's wheel ships no encodings and downloads them on first use, measured); the
  character-class estimate is within 394 tokens (−83 % to +15 %) of what the providers reported
  for the documented requests behind the fixtures, and is calibrated per provider on large
  calls only. Figures and method in budget.py and tests/test_llm_budget.py.
- `builtin.py`, `mcp.py` tool sources; `store.py` the SQL; `capability.py` the lifespan that
  owns the shared httpx client and the MCP servers.
"""
