"""sidecar: one long-running JSON-RPC 2.0 daemon behind desktop shells, editors and terminals."""

__version__ = "0.1.0"
