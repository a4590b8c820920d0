"""Give memory back to the OS after big messages.

A 10 MB request leaves the allocator's high-water mark behind: CPython frees the objects,
but glibc keeps the freed arenas, so RSS stays up long after the message is gone (measured:
33 MB -> 91 MB after a fuzzing run with 1-10 MB lines). `malloc_trim(0)` returns them. It
costs a few milliseconds on a large heap, so it runs at most once per `MIN_INTERVAL`, and
only after a message of a megabyte or more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time

log = logging.getLogger("sidecar.server")

MIN_INTERVAL = 0.1


def _find_trim():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None


_trim = _find_trim()
_last = 0.0


def release_soon() -> bool:
    """Trim the heap now unless it was trimmed very recently; True if it trimmed."""
    global _last
    if _trim is None:
        return False
    now = time.monotonic()
    if now - _last < MIN_INTERVAL:
        return False
    _last = now
    _trim(0)
    return True
