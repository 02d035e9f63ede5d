"""Model names: the public ⇄ Ollama map, and ``/api/tags`` → OpenAI model objects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidRequest, ModelNotFound


def requested_model(body: Any) -> str:
    """The ``model`` of a request body, which must be a JSON object."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("'model' is required", param="model")
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model")
    return model


def resolve_model(public: str, models: Mapping[str, str]) -> str:
    """Public name → Ollama name. With a ``models:`` map, only its names exist."""
    if not models:
        return public
    try:
        return models[public]
    except KeyError:
        raise ModelNotFound(public) from None


def _created(modified_at: Any) -> int:
    if isinstance(modified_at, str):
        try:
            return int(datetime.fromisoformat(modified_at.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def models_list(tags: Mapping[str, Any], models: Mapping[str, str]) -> list[dict[str, Any]]:
    """``/api/tags`` → OpenAI model objects; with a ``models:`` map, only its public names."""
    entries = tags.get("models") or []
    by_name: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        for key in ("model", "name"):
            if isinstance(e.get(key), str):
                by_name.setdefault(e[key], e)
    if models:
        pairs = [
            (public, by_name.get(up) or by_name.get(f"{up}:latest"))
            for public, up in models.items()
        ]
    else:
        pairs = [(e.get("model") or e.get("name"), e) for e in entries]
    out = []
    for name, e in pairs:
        if not isinstance(name, str):
            continue
        created = _created((e or {}).get("modified_at"))
        out.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "ollama",
                # Anthropic's ModelInfo fields, so that its SDKs' models.list() reads them too.
                "type": "model",
                "display_name": name,
                "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return out


def model_page(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The list body both SDK families read: OpenAI's ``data``, Anthropic's paging fields."""
    return {
        "object": "list",
        "data": models,
        "has_more": False,
        "first_id": models[0]["id"] if models else None,
        "last_id": models[-1]["id"] if models else None,
    }
