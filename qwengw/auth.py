"""Who the caller is: API keys checked against stored SHA-256 hashes, in constant time.

The 401 messages follow OpenAI's wording ("You didn't provide an API key…", "Incorrect API key
provided…"), because client libraries such as litellm recognise an authentication error by it.
A presented key is never echoed back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import ApiKey
from .errors import Unauthorized

# Authorization schemes that carry no secret in their name, so naming them back is safe.
_KNOWN_SCHEMES = re.compile(r"basic|digest|token|negotiate|apikey|api-key|key|bearer", re.I)


@dataclass(frozen=True)
class Identity:
    key_id: str
    rate_limit: str | None = None
    max_concurrent: int | None = None


def extract_keys(headers: Mapping[str, str], header_names: Iterable[str]) -> list[str]:
    """Every key the request presents: the key headers first, then ``Authorization: Bearer``.

    A malformed ``Authorization`` header with no key header beside it is a 401 that says what
    was wrong, rather than "no key".
    """
    keys = [v.strip() for name in header_names if (v := headers.get(name)) and v.strip()]
    auth = headers.get("Authorization")
    if auth is None:
        return keys
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        keys.append(value.strip())
    elif not keys:
        shown = f"a '{scheme}' credential" if _KNOWN_SCHEMES.fullmatch(scheme) else "something"
        raise Unauthorized(
            "The Authorization header must use Bearer auth (i.e. Authorization: Bearer "
            f"YOUR_KEY), but it holds {shown}. Send the key as 'Authorization: Bearer YOUR_KEY'"
            f" or in the {' or '.join(header_names)} header.",
            code="malformed_authorization",
        )
    return keys


def missing_key_message(header_names: Iterable[str]) -> str:
    return (
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or in the "
        f"{' or '.join(header_names)} header. Ask the operator of this gateway for a key."
    )


class Keyring:
    """The configured keys, by hash. The raw keys never exist in memory after load."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    def authenticate(self, presented: list[str], header_names: Iterable[str] = ()) -> Identity:
        """The identity of the first valid key presented; 401 if none is valid."""
        if not presented:
            raise Unauthorized(missing_key_message(header_names), code="missing_api_key")
        for key in presented:
            digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
            match: ApiKey | None = None
            for stored, candidate in self._keys:  # no early exit: time does not tell which key
                if hmac.compare_digest(stored, digest):
                    match = candidate
            if match is not None:
                return Identity(match.id, match.rate_limit, match.max_concurrent)
        raise Unauthorized(
            "Incorrect API key provided. Check the key you are using, or ask the operator of "
            "this gateway for a valid one.",
            code="invalid_api_key",
        )
