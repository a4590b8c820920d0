"""Provider adapters side by side over one interface (`base.Adapter`)."""

from __future__ import annotations

from sidecar.llm.providers.anthropic import AnthropicAdapter
from sidecar.llm.providers.base import Adapter
from sidecar.llm.providers.ollama import OllamaAdapter
from sidecar.llm.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {"anthropic": AnthropicAdapter(), "openai": OpenAIAdapter(), "ollama": OllamaAdapter()}


def adapter_for(kind: str) -> Adapter:
    return ADAPTERS[kind]
