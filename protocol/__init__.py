"""The sidecar wire contract: msgspec Structs for every message, one module per namespace.

This package imports nothing from ``sidecar``; shells and tools may depend on it alone.
"""

PROTOCOL_VERSION = "2026-11-01"
#: versions this daemon can speak, oldest first; `initialize` answers PROTOCOL_VERSION
SUPPORTED_PROTOCOL_VERSIONS = ("2026-11-01",)
