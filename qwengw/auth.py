"""Who the caller is: API keys checked against stored SHA-256 hashes, in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import ApiKey
from .errors import Unauthorized


@dataclass(frozen=True)
class Identity:
    key_id: str
    rate_limit: str | None = None
    max_concurrent: int | None = None


def extract_key(headers: Mapping[str, str], header_name: str) -> str | None:
    """The key from the configured header, else from ``Authorization: Bearer`` (OpenAI SDKs)."""
    key = headers.get(header_name)
    if key:
        return key.strip()
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class Keyring:
    """The configured keys, by hash. The raw keys never exist in memory after load."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    def authenticate(self, presented: str | None) -> Identity:
        if not presented:
            raise Unauthorized("missing api key", code="missing_api_key")
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        match: ApiKey | None = None
        for stored, key in self._keys:  # no early exit: the time does not depend on which key
            if hmac.compare_digest(stored, digest):
                match = key
        if match is None:
            raise Unauthorized("invalid api key", code="invalid_api_key")
        return Identity(match.id, match.rate_limit, match.max_concurrent)
