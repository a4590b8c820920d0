"""jsonrpcserver's synchronous dispatcher, loaded without the package's `__init__`.

`import jsonrpcserver` also imports its async dispatcher, its HTTP server and jsonschema:
190-270 ms measured here, more than our whole start-up budget. We use only the synchronous
dispatcher (with our own msgspec envelope and no jsonschema validator), so we load the
package's submodules directly. Nothing else in the daemon imports `jsonrpcserver`.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _load_package_shell() -> None:
    if "jsonrpcserver" in sys.modules:
        return
    spec = importlib.util.find_spec("jsonrpcserver")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("jsonrpcserver is not installed")
    shell = types.ModuleType("jsonrpcserver")
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__file__ = spec.origin
    sys.modules["jsonrpcserver"] = shell


_load_package_shell()

from jsonrpcserver.dispatcher import dispatch_to_response_pure  # noqa: E402
from jsonrpcserver.exceptions import JsonRpcError  # noqa: E402
from jsonrpcserver.result import Success  # noqa: E402
from oslash.either import Left  # noqa: E402

__all__ = ["dispatch_to_response_pure", "JsonRpcError", "Success", "Left"]
