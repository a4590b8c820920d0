"""Wire types shared by every namespace."""

from __future__ import annotations

import msgspec


class Empty(msgspec.Struct):
    """No parameters, or no result fields."""
