"""Pure OpenAI ⇄ Ollama translation: no Flask, no HTTP, no clock."""

from .chat_request import EFFORT_TO_THINK, ChatRequest, chat_request_to_ollama
from .chat_response import (
    ChatStream,
    aggregate_chat,
    check_line,
    finish_reason,
    new_call_id,
    usage_from,
)
from .embeddings import EmbeddingRequest, embeddings_request_to_ollama, embeddings_response
from .models import models_list, resolve_model

__all__ = [
    "EFFORT_TO_THINK",
    "ChatRequest",
    "ChatStream",
    "EmbeddingRequest",
    "aggregate_chat",
    "chat_request_to_ollama",
    "check_line",
    "embeddings_request_to_ollama",
    "embeddings_response",
    "finish_reason",
    "models_list",
    "new_call_id",
    "resolve_model",
    "usage_from",
]
