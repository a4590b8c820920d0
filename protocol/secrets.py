"""secrets/*: API keys, passwords and tokens, encrypted at rest. Values go in, never out."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec

SecretName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*\Z")]
SecretValue = Annotated[str, Meta(max_length=65_536)]


class SecretSetParams(msgspec.Struct):
    name: SecretName
    value: SecretValue

    def __repr__(self) -> str:  # the value never reaches a log line
        return f"SecretSetParams(name={self.name!r}, value=<redacted>)"


class SecretNameParams(msgspec.Struct):
    name: SecretName


class SecretMeta(msgspec.Struct):
    name: str
    createdAt: str
    updatedAt: str


class SecretDeleteResult(msgspec.Struct):
    name: str
    deleted: bool


class SecretListResult(msgspec.Struct):
    secrets: list[SecretMeta]
    #: where the encryption key lives: "keyring" or "file"
    keyBackend: str


SET = MethodSpec("secrets/set", SecretSetParams, SecretMeta, "Store or replace a secret.", lane="secrets")
DELETE = MethodSpec("secrets/delete", SecretNameParams, SecretDeleteResult,
                    "Delete a secret; an unknown name answers not_found.", lane="secrets")
LIST = MethodSpec("secrets/list", Empty, SecretListResult,
                  "Names and timestamps of stored secrets; never their values.", lane="secrets")

METHODS = (SET, DELETE, LIST)
NOTIFICATIONS = ()
