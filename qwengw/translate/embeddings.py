"""OpenAI embeddings ⇄ Ollama ``/api/embed``."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from . import fields as f
from .models import requested_model, resolve_model
from .native import NativeCall

EMBED = "/api/embed"
TOKEN_IDS_HINT = (
    "'input' holds token ids, which Ollama cannot read: send the text itself. With LangChain's "
    "OpenAIEmbeddings, set check_embedding_ctx_length=False (it tokenizes with tiktoken by "
    "default, for OpenAI's models only)."
)


@dataclass(frozen=True)
class EmbeddingRequest:
    call: NativeCall
    base64: bool

    @property
    def payload(self) -> dict[str, Any]:
        return self.call.payload

    @property
    def public_model(self) -> str:
        return self.call.public_model


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def embeddings_request_to_ollama(
    body: Any, models: Mapping[str, str], max_inputs: int = 2048
) -> EmbeddingRequest:
    model = requested_model(body)
    inp = body.get("input")
    if _is_token_ids(inp) or (isinstance(inp, list) and inp and all(map(_is_token_ids, inp))):
        raise InvalidRequest(TOKEN_IDS_HINT, param="input", code="token_ids_not_supported")
    if isinstance(inp, list):
        f.array(inp, "input", max_inputs)
    if not (isinstance(inp, str) or (isinstance(inp, list) and inp)) or (
        isinstance(inp, list) and not all(isinstance(s, str) for s in inp)
    ):
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of strings", param="input"
        )
    fmt = f.opt_choice(body, "encoding_format", ("float", "base64")) or "float"
    payload: dict[str, Any] = {"model": resolve_model(model, models), "input": inp}
    dims = f.opt_int(body, "dimensions", 1, 65536)
    if dims is not None:
        payload["dimensions"] = dims
    user = f.opt_text(body, "user")
    call = NativeCall(
        EMBED, payload, model, False, user=user[:128] if user else None, prompt_param="input"
    )
    return EmbeddingRequest(call, fmt == "base64")


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
