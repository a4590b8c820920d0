"""The context budget: what of a conversation's history fits the model's window.

Budget = context window - max output tokens - reserve. The system prompt, the tool schemas and
the newest turn always go; older turns are dropped oldest first, whole: a turn runs from a
user's message to the next one, so a tool call is never split from its result.

Token counts are estimates, because no exact tokenizer works offline here (measured):

- `tiktoken` (0.14.0, the only exact one, and for OpenAI models only) ships no encodings: its
  1.2 MB wheel holds the BPE code and `tiktoken_ext/openai_public.py`, which downloads
  `cl100k_base` / `o200k_base` from openaipublic.blob.core.windows.net on first use;
  `get_encoding("o200k_base")` without network fails with a ConnectionError (0.26 s). A daemon
  must not fetch at run time, so it is not used. (`tokenizers` needs a tokenizer.json per
  model, also a download; Anthropic publishes no tokenizer for current models.)
- So: a character-class estimate (ASCII ~4 characters a token, other scripts ~1 character a
  token, 4 tokens of framing per message, 8 per tool call or result, 10 per tool schema),
  calibrated per provider by the input token counts the providers report
  (`Calibration.observe`), kept on the high side (ratio never below 1).

Its error, measured on the documented requests behind the recorded fixtures
(tests/test_llm_budget.py prints the table): from -83 % to +15 % (Anthropic "Hello": 6 vs 25;
Anthropic tool example: 78 vs 472; OpenAI tool example: 94 vs 82; Ollama tool example: 121 vs
122). On prompts this small the error is the provider's fixed framing, not the text: Anthropic
adds a 346-token system prompt when tools are given, chat templates add their headers. At most
394 tokens were missed, within the default `llm.contextReserveTokens` (1024), which is what
the reserve is for. The calibration ratio is therefore learned only from calls estimated at
`MIN_OBSERVED` tokens or more, where the text dominates; learnt from these small examples it
was worse than none (cross-checked between the two examples of each provider: -65 % to
+187 %).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.projects import TextPart, ToolCallPart, ToolResultPart
from sidecar.llm.providers.base import Message
from sidecar.toolsource import ToolInfo

MESSAGE_OVERHEAD = 4
#: how far one observation moves the calibration ratio
SMOOTHING = 0.3
#: calls estimated below this teach the calibration nothing (their count is mostly framing)
MIN_OBSERVED = 512


def estimate_text(text: str) -> int:
    if not text:
        return 0
    ascii_count = sum(1 for ch in text if ch < "\x80") if not text.isascii() else len(text)
    return (ascii_count + 3) // 4 + (len(text) - ascii_count)


def estimate_message(message: Message) -> int:
    total = MESSAGE_OVERHEAD
    for part in message.parts:
        if isinstance(part, TextPart):
            total += estimate_text(part.text)
        elif isinstance(part, ToolCallPart):
            total += estimate_text(part.name) + estimate_text(json.dumps(part.arguments or {})) + 8
        elif isinstance(part, ToolResultPart):
            total += estimate_text(part.content) + 8
    return total


def estimate_tools(tools: Sequence[ToolInfo]) -> int:
    return sum(estimate_text(t.name) + estimate_text(t.description) + estimate_text(json.dumps(t.input_schema)) + 10
               for t in tools)


class Calibration:
    """Per provider: reported input tokens / estimated input tokens, smoothed; at least 1."""

    def __init__(self) -> None:
        self._ratio: dict[str, float] = {}

    def ratio(self, provider: str) -> float:
        return self._ratio.get(provider, 1.0)

    def observe(self, provider: str, estimated: int, reported: int) -> None:
        """`estimated`: the uncalibrated estimate (ratio 1) of the input the provider counted."""
        if estimated < MIN_OBSERVED or reported <= 0:
            return
        seen = reported / estimated
        old = self._ratio.get(provider)
        new = seen if old is None else old + SMOOTHING * (seen - old)
        self._ratio[provider] = max(1.0, new)


@dataclass(frozen=True, slots=True)
class Fitted:
    messages: list[Message]
    dropped_turns: int
    estimated_tokens: int
    budget: int
    #: the estimate before calibration (what `Calibration.observe` compares with)
    raw_tokens: int = 0


def turns(messages: Sequence[Message]) -> list[list[Message]]:
    """Split into turns, each starting at a user message that is not a tool result."""
    out: list[list[Message]] = []
    for message in messages:
        starts = message.role == "user" and not any(isinstance(p, ToolResultPart) for p in message.parts)
        if starts or not out:
            out.append([message])
        else:
            out[-1].append(message)
    return out


def fit(messages: Sequence[Message], *, system: str, tools: Sequence[ToolInfo], context_window: int,
        max_output: int, reserve: int, ratio: float = 1.0) -> Fitted:
    """Drop the oldest turns until the rest fits; the newest turn always stays (the caller
    refuses the request if even that does not fit)."""
    budget = context_window - max_output - reserve
    fixed = estimate_text(system) + estimate_tools(tools)
    groups = turns(messages)
    sizes = [sum(estimate_message(m) for m in group) for group in groups]
    raw = fixed + sum(sizes)
    total = raw * ratio
    dropped = 0
    while dropped < len(groups) - 1 and total > budget:
        total -= sizes[dropped] * ratio
        raw -= sizes[dropped]
        dropped += 1
    kept = [m for group in groups[dropped:] for m in group]
    return Fitted(kept, dropped, int(total), budget, raw)
