"""OpenAI embeddings ⇄ Ollama ``/api/embed``."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from .chat_request import _integer
from .models import requested_model, resolve_model


@dataclass(frozen=True)
class EmbeddingRequest:
    payload: dict[str, Any]
    public_model: str
    base64: bool
    prompt_chars: int


def embeddings_request_to_ollama(body: Any, models: Mapping[str, str]) -> EmbeddingRequest:
    model = requested_model(body)
    inp = body.get("input")
    if isinstance(inp, str):
        chars = len(inp)
    elif isinstance(inp, list) and inp and all(isinstance(s, str) for s in inp):
        chars = sum(len(s) for s in inp)
    else:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of strings", param="input"
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    payload: dict[str, Any] = {"model": resolve_model(model, models), "input": inp}
    dims = _integer(body, "dimensions", 1)
    if dims is not None:
        payload["dimensions"] = dims
    return EmbeddingRequest(payload, model, fmt == "base64", chars)


def embeddings_response(native: Mapping[str, Any], req: EmbeddingRequest) -> dict[str, Any]:
    vectors = native.get("embeddings") or []
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = vec
        if req.base64:
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    prompt = int(native.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": data,
        "model": req.public_model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
