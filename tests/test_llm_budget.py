"""The token estimate and its calibration, measured against the input token counts the
providers reported for the documented requests our fixtures were recorded from.

`python -m pytest tests/test_llm_budget.py -s` prints the table quoted in sidecar/llm/budget.py.
"""

from __future__ import annotations

import pytest

from protocol.projects import TextPart, ToolCallPart, ToolResultPart
from sidecar.llm import budget
from sidecar.llm.providers.base import Message
from sidecar.toolsource import ToolInfo

LOCATION = {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
UNITS = {"type": "string", "enum": ["celsius", "fahrenheit"]}
#: (provider, fixture, the documented request's user message, its tools, input tokens reported)
DOCUMENTED = [
    ("anthropic", "anthropic_text.sse", "Hello", [], 25),
    ("anthropic", "anthropic_tool.sse", "What is the weather like in San Francisco?",
     [ToolInfo("get_weather", "Get the current weather in a given location",
               {"type": "object", "properties": {"location": LOCATION}, "required": ["location"]})], 472),
    ("openai", "openai_text.sse", "Hello!", [], 9),
    ("openai", "openai_tool.sse", "What's the weather like in Boston today?",
     [ToolInfo("get_current_weather", "Get the current weather in a given location",
               {"type": "object", "properties": {"location": LOCATION, "unit": UNITS}, "required": ["location"]})],
     82),
    ("ollama", "ollama_text.ndjson", "why is the sky blue?", [], 26),
    ("ollama", "ollama_tool.ndjson", "What is the weather today in Paris?",
     [ToolInfo("get_current_weather", "Get the current weather for a location",
               {"type": "object", "properties": {
                   "location": {"type": "string",
                                "description": "The location to get the weather for, e.g. San Francisco, CA"},
                   "format": {"type": "string", "enum": ["celsius", "fahrenheit"],
                              "description": "The format to return the weather in, e.g. 'celsius' or 'fahrenheit'"}},
                "required": ["location", "format"]})], 122),
]
DEFAULT_RESERVE = 1024  # llm.contextReserveTokens


def estimate(message: str, tools: list[ToolInfo], ratio: float = 1.0) -> budget.Fitted:
    return budget.fit([Message("user", [TextPart(message)])], system="", tools=tools, context_window=1_000_000,
                      max_output=1, reserve=0, ratio=ratio)


def test_estimate_error_on_the_documented_requests() -> None:
    rows = []
    for provider, fixture, message, tools, reported in DOCUMENTED:
        raw = estimate(message, tools).raw_tokens
        rows.append((provider, fixture, raw, reported, 100 * (raw - reported) / reported))
        # what the estimate misses is framing the reserve is there for
        assert reported - raw < DEFAULT_RESERVE / 2
    print("\nprovider   fixture              estimate reported  error")
    for provider, fixture, raw, reported, error in rows:
        print(f"{provider:10} {fixture:20} {raw:8} {reported:8} {error:+6.1f}%")
    errors = [r[4] for r in rows]
    assert -84 < min(errors) and max(errors) < 16  # the figures quoted in budget.py
    # calls this small teach the calibration nothing: learnt from them it made things worse
    calibration = budget.Calibration()
    for provider, _, message, tools, reported in DOCUMENTED:
        calibration.observe(provider, estimate(message, tools).raw_tokens, reported)
    assert all(calibration.ratio(p) == 1.0 for p in ("anthropic", "openai", "ollama"))


def test_calibration_converges_on_long_inputs_and_never_drifts() -> None:
    calibration = budget.Calibration()
    text = "The quick brown fox jumps over the lazy dog. " * 200  # ~2,250 estimated tokens
    raw = estimate(text, []).raw_tokens
    assert raw >= budget.MIN_OBSERVED
    for _ in range(30):  # the provider counts 30 % more than we estimate, every time
        fitted = estimate(text, [], calibration.ratio("p"))
        assert fitted.raw_tokens == raw  # observe() is fed the uncalibrated estimate
        calibration.observe("p", fitted.raw_tokens, round(raw * 1.3))
    assert calibration.ratio("p") == pytest.approx(1.3, rel=0.01)
    assert estimate(text, [], calibration.ratio("p")).estimated_tokens == pytest.approx(raw * 1.3, rel=0.01)
    calibration.observe("q", raw, raw // 2)  # a provider counting fewer: the estimate stays high
    assert calibration.ratio("q") == 1.0


def test_korean_counts_about_a_token_a_character() -> None:
    assert budget.estimate_text("안녕하세요") == 5 and budget.estimate_text("hello world!") == 3


def test_fit_drops_whole_turns_and_keeps_tool_calls_with_results() -> None:
    def turn(i: int) -> list[Message]:
        return [Message("user", [TextPart(f"question {i} " + "x" * 400)]),
                Message("assistant", [ToolCallPart(f"t{i}", "tool", {"q": i})]),
                Message("tool", [ToolResultPart(f"t{i}", "y" * 400)]),
                Message("assistant", [TextPart("answer")])]

    history = [m for i in range(5) for m in turn(i)]
    one_turn = sum(budget.estimate_message(m) for m in turn(0))
    fitted = budget.fit(history, system="", tools=[], context_window=one_turn * 2 + 50, max_output=10, reserve=0)
    assert fitted.dropped_turns == 3 and len(fitted.messages) == 8
    assert fitted.messages[0].parts[0].text.startswith("question 3")  # type: ignore[union-attr]
    assert fitted.raw_tokens == fitted.estimated_tokens <= fitted.budget
