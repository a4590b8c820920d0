"""Providers (configuration, key, test, models) and usage/audit, as services.

API keys go to the secret store under `llm.provider.<id>.apiKey` and are read back only to
put in a request header; they are never returned, logged, audited or put in an error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from protocol import llm as p
from sidecar.errors import InvalidValue, NotFound, Unavailable
from sidecar.llm import local
from sidecar.llm.providers import adapter_for
from sidecar.llm.providers.base import (
    CallFailed,
    CallStats,
    ChatRequest,
    Message,
    ProviderConfig,
    RetryPolicy,
    TokenBucket,
    list_models,
    stream_chat,
)
from sidecar.llm.store import GROUPS, LlmStore, ProviderRow, UsageRecord
from protocol.projects import TextPart

if TYPE_CHECKING:
    import httpx

    from sidecar.secrets.service import SecretService
    from sidecar.settings.service import SettingsService

log = logging.getLogger("sidecar.llm")

DEFAULT_MAX_OUTPUT = {"anthropic": 4096, "openai": 4096, "ollama": 2048}
DEFAULT_WINDOW = {"anthropic": 200_000, "openai": 128_000, "ollama": 8192}


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(name: str) -> bool:
    """An HTTP header name (RFC 9110 token)."""
    return bool(name) and all(c in _TOKEN_CHARS for c in name)


def _is_header_text(value: str) -> bool:
    """What httpx can send as a header value: printable ASCII (and spaces, tabs)."""
    return all(c == "\t" or " " <= c <= "~" for c in value)


def checked_base_url(url: str) -> str:
    """`url` when it is an http(s) URL httpx can request; invalid_params naming it otherwise."""
    import httpx  # lazily: not needed at start-up

    problem = "baseUrl must be an http:// or https:// URL"
    try:
        parts = urlsplit(url)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidValue(f"{problem} ({exc})", "$.params.baseUrl") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidValue(problem, "$.params.baseUrl")
    return url


def secret_name(provider_id: str) -> str:
    return f"llm.provider.{provider_id}.apiKey"


class ProvidersService:
    def __init__(self, store: LlmStore, settings: SettingsService, secrets: Callable[[], SecretService | None],
                 client: Callable[[], Awaitable[httpx.AsyncClient]]) -> None:
        self.store = store
        self.settings = settings
        self._secrets = secrets
        self.client = client
        self._buckets: dict[str, TokenBucket] = {}
        #: provider rows (and their configs) by id, read once: only this service writes them, and
        #: it updates this on configure and delete, so chat/send resolves one without a read
        self._rows: dict[str, tuple[ProviderRow, ProviderConfig]] = {}
        #: counts configure/delete writes: a read that raced one is not cached (it may be stale)
        self._writes = 0

    # ---- configuration -------------------------------------------------------------------

    async def configure(self, params: p.ProviderConfigureParams) -> p.Provider:
        adapter = adapter_for(params.kind)
        base_url = checked_base_url((params.baseUrl or adapter.default_base_url).rstrip("/"))
        for name, value in params.headers.items():
            if not _is_token(name):
                raise InvalidValue(f"header name {name!r} is not a valid HTTP header name", f"$.params.headers[{name!r}]")
            if not _is_header_text(value):
                raise InvalidValue(f"the value of header {name} must be printable ASCII text",
                                   f"$.params.headers[{name!r}]")
        if params.apiKey and not _is_header_text(params.apiKey):
            # it travels in a header: a key that cannot be sent would fail every later call
            raise InvalidValue("apiKey must be printable ASCII text (as provider keys are)", "$.params.apiKey")
        existing = await self.store.get_provider(params.id)
        has_key = bool(existing and existing.has_key)
        if params.apiKey is not None:
            secrets = self._require_secrets()
            if params.apiKey:
                await secrets.set(secret_name(params.id), params.apiKey)
                has_key = True
            elif has_key:
                await _forget(secrets, params.id)
                has_key = False
        row = await self.store.put_provider({
            "id": params.id, "kind": params.kind, "base_url": base_url, "model": params.model,
            "headers": json.dumps(params.headers),
            "max_output_tokens": params.maxOutputTokens or DEFAULT_MAX_OUTPUT[params.kind],
            "context_window": params.contextWindow or DEFAULT_WINDOW[params.kind],
            "requests_per_minute": params.requestsPerMinute, "has_key": int(has_key)})
        self._writes += 1
        self._rows[row.id] = (row, config_of(row))
        self._buckets.pop(params.id, None)
        if params.makeDefault or not self.settings.value("llm.defaultProvider"):
            await self.settings.set("llm.defaultProvider", params.id)
        log.info("provider %s configured (%s, %s)", params.id, params.kind, base_url)
        return self._wire(row)

    async def list(self) -> p.ProviderListResult:
        rows = await self.store.list_providers()
        default = self.settings.value("llm.defaultProvider") or None
        return p.ProviderListResult([self._wire(r) for r in rows], default if any(r.id == default for r in rows)
                                    else None)

    async def get(self, provider_id: str) -> p.Provider:
        return self._wire(await self._row(provider_id))

    async def delete(self, provider_id: str) -> None:
        row = await self._row(provider_id)
        if row.has_key:
            secrets = self._secrets()
            if secrets is not None:
                await _forget(secrets, provider_id)
        await self.store.delete_provider(provider_id)
        self._writes += 1
        self._rows.pop(provider_id, None)
        self._buckets.pop(provider_id, None)
        if self.settings.value("llm.defaultProvider") == provider_id:
            await self.settings.reset("llm.defaultProvider")
        log.info("provider %s deleted", provider_id)

    # ---- use ---------------------------------------------------------------------------------

    async def resolve(self, provider_id: str | None) -> tuple[ProviderConfig, str | None]:
        """The provider to use (the given one, else the default, else the only one) and its key."""
        if provider_id is None:
            provider_id = self.settings.value("llm.defaultProvider") or None
        if provider_id is None:
            rows = await self.store.list_providers()
            if len(rows) != 1:
                raise NotFound("no provider given and no default provider set: configure one with "
                               "providers/configure", provider=None)
            row, config = rows[0], config_of(rows[0])
        else:
            row, config = await self._cached(provider_id)
        return config, await self._key(row)

    def bucket(self, config: ProviderConfig) -> TokenBucket | None:
        if config.requests_per_minute <= 0:
            return None
        bucket = self._buckets.get(config.id)
        if bucket is None or bucket.per_minute != config.requests_per_minute:
            bucket = self._buckets[config.id] = TokenBucket(config.requests_per_minute)
        return bucket

    def retry_policy(self) -> RetryPolicy:
        value = self.settings.value
        return RetryPolicy(max_retries=value("llm.maxRetries"), base_delay=value("llm.retryBaseMs") / 1000,
                           max_delay=value("llm.retryMaxMs") / 1000, max_wait=value("llm.retryMaxWaitSeconds"))

    async def test(self, provider_id: str) -> p.ProviderTestResult:
        config, key = await self.resolve(provider_id)
        request = ChatRequest(model=config.model, messages=[Message("user", [TextPart("Say OK.")])], max_tokens=1)
        stats = CallStats()
        started = time.perf_counter()
        try:
            async for _ in stream_chat(await self.client(), adapter_for(config.kind), config, key, request,
                                       RetryPolicy(max_retries=0), stats=stats):
                pass
        except CallFailed as exc:
            return p.ProviderTestResult(ok=False, latencyMs=_ms(started), failure=exc.failure, message=exc.message,
                                        status=exc.status)
        return p.ProviderTestResult(ok=True, latencyMs=_ms(started), model=stats.model or config.model,
                                    status=stats.status)

    async def models(self, provider_id: str) -> list[str]:
        config, key = await self.resolve(provider_id)
        try:
            return await list_models(await self.client(), adapter_for(config.kind), config, key)
        except CallFailed as exc:
            raise exc.to_error(config.id) from None

    async def detect(self, base_url: str | None) -> p.ProviderDetectResult:
        """A running Ollama at the configured Ollama providers' base URLs, $OLLAMA_HOST, the
        default, or `base_url` (sidecar/llm/local.py)."""
        if base_url is not None:
            base_url = checked_base_url(base_url)
        rows = await self.store.list_providers()
        urls = local.candidates([(r.id, r.base_url) for r in rows if r.kind == "ollama"], base_url)
        return await local.detect(await self.client(), urls)

    async def pull(self, provider_id: str, model: str, emit: local.EmitProgress) -> p.ProviderPullResult:
        config, key = await self.resolve(provider_id)
        if config.kind != "ollama":
            raise InvalidValue(f"provider {provider_id} is {config.kind}: only Ollama providers pull models",
                               "$.params.id")
        return await local.pull(await self.client(), config, key, model, emit)

    # ---- helpers -------------------------------------------------------------------------------

    async def _row(self, provider_id: str) -> ProviderRow:
        return (await self._cached(provider_id))[0]

    async def _cached(self, provider_id: str) -> tuple[ProviderRow, ProviderConfig]:
        found = self._rows.get(provider_id)
        if found is None:
            writes = self._writes
            row = await self.store.get_provider(provider_id)
            if row is None:
                raise NotFound(f"no provider {provider_id!r}", id=provider_id)
            found = (row, config_of(row))
            if writes == self._writes:
                self._rows[provider_id] = found
        return found

    async def _key(self, row: ProviderRow) -> str | None:
        if not row.has_key:
            return None
        secrets = self._require_secrets()
        try:
            key = await secrets.reveal(secret_name(row.id))
        except NotFound:
            raise Unavailable(f"the API key of provider {row.id} is missing from the secret store; configure it "
                              "again", provider=row.id) from None
        if not _is_header_text(key):  # set through secrets/set, past configure's check
            raise Unavailable(f"the API key of provider {row.id} is not printable ASCII text and cannot be sent; "
                              "configure it again", provider=row.id)
        return key

    def _require_secrets(self) -> SecretService:
        secrets = self._secrets()
        if secrets is None:
            raise Unavailable("the secret store is not available in this build")
        return secrets

    def _wire(self, row: ProviderRow) -> p.Provider:
        return p.Provider(id=row.id, kind=row.kind, baseUrl=row.base_url, model=row.model, hasApiKey=bool(row.has_key),
                          maxOutputTokens=row.max_output_tokens, contextWindow=row.context_window,
                          requestsPerMinute=row.requests_per_minute, createdAt=row.created_at,
                          updatedAt=row.updated_at, isDefault=self.settings.value("llm.defaultProvider") == row.id,
                          headerNames=sorted(json.loads(row.headers)))


async def _forget(secrets: SecretService, provider_id: str) -> None:
    try:
        await secrets.delete(secret_name(provider_id))
    except NotFound:
        pass


def config_of(row: ProviderRow) -> ProviderConfig:
    return ProviderConfig(id=row.id, kind=row.kind, base_url=row.base_url, model=row.model,
                          headers=json.loads(row.headers), max_output_tokens=row.max_output_tokens,
                          context_window=row.context_window, requests_per_minute=row.requests_per_minute)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# ---- usage and audit ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


def parse_prices(items: tuple[str, ...] | list[str]) -> dict[str, Price]:
    """`model=input/output` per million tokens, e.g. `claude-sonnet-4-5=3/15`; bad items skipped."""
    prices: dict[str, Price] = {}
    for item in items:
        model, sep, rates = item.partition("=")
        first, slash, second = rates.partition("/")
        try:
            if sep and slash:
                prices[model.strip()] = Price(float(first), float(second))
        except ValueError:
            log.warning("llm.prices: cannot read %r (model=input/output per million tokens)", item)
    return prices


class UsageService:
    def __init__(self, store: LlmStore, settings: SettingsService) -> None:
        self.store = store
        self.settings = settings

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        prices = parse_prices(self.settings.value("llm.prices"))
        price = prices.get(model)
        if price is None:  # dated ids: claude-sonnet-4-5-20250929 priced as claude-sonnet-4-5
            price = next((v for k, v in sorted(prices.items(), key=lambda kv: -len(kv[0]))
                          if model.startswith(k)), None)
        if price is None:
            return None
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000

    async def record(self, usage: UsageRecord, audit: dict[str, Any] | None) -> None:
        if not self.settings.value("llm.audit.enabled"):
            audit = None
        await self.store.record_call(usage, audit, self.settings.value("llm.audit.retentionDays"))

    async def summary(self, params: p.UsageSummaryParams) -> p.UsageSummaryResult:
        if params.groupBy not in GROUPS:
            raise InvalidValue("groupBy must be one of " + ", ".join(GROUPS), "$.params.groupBy")
        rows = await self.store.summary(params.groupBy, params.from_, _end_of(params.to))
        out = []
        for key, calls, tin, tout, errors, latency, first, cost, unpriced in rows:
            out.append(p.UsageRow(key=key, calls=calls, inputTokens=tin or 0, outputTokens=tout or 0,
                                  errors=errors or 0, avgLatencyMs=round(latency or 0.0, 3),
                                  avgFirstTokenMs=None if first is None else round(first, 3),
                                  cost=None if unpriced else cost))
        return p.UsageSummaryResult(groupBy=params.groupBy, rows=out)

    async def list_audit(self, params: p.AuditListParams) -> p.AuditListResult:
        before = None
        if params.cursor:
            try:
                before = int(params.cursor)
            except ValueError:
                raise InvalidValue("not a cursor from audit/list", "$.params.cursor") from None
        rows = await self.store.list_audit(params.conversationId, params.provider, params.limit + 1, before)
        more = len(rows) > params.limit
        rows = rows[:params.limit]
        return p.AuditListResult([_summary(r) for _, r in rows], str(rows[-1][0]) if more else None)

    async def get_audit(self, usage_id: str) -> p.AuditEntry:
        found = await self.store.get_audit(usage_id)
        if found is None:
            raise NotFound(f"no audit entry {usage_id!r}", id=usage_id)
        row, audit = found
        return p.AuditEntry(summary=_summary(row), request=msgspec.json.decode(audit.request),
                            response=audit.response, toolCalls=msgspec.json.decode(audit.tool_calls),
                            error=audit.error)


def _end_of(to: str | None) -> str | None:
    """An inclusive end: a date alone means the whole of that day."""
    if to is not None and len(to) == 10:
        return to + "T23:59:59.999Z"
    return to


def _summary(row: Any) -> p.AuditSummary:
    return p.AuditSummary(id=row.id, at=row.at, provider=row.provider, model=row.model, outcome=row.outcome,
                          latencyMs=row.latency_ms, inputTokens=row.input_tokens, outputTokens=row.output_tokens,
                          agent=row.agent, conversationId=row.conversation_id, firstTokenMs=row.first_token_ms)
