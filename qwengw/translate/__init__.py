"""Pure translation between the client dialects and Ollama's native API: no Flask, no HTTP.

One module per dialect (request → ``NativeCall``, native lines → response, a streaming state
machine), plus what they share: typed field reads (``fields``), the native call and its
measures (``native``), and tool choices Ollama cannot express (``tool_choice``).
"""

from .anthropic import MessagesRequest, MessagesStream, aggregate_message, messages_request
from .chat_request import EFFORT_TO_THINK, ChatRequest, chat_request_to_ollama
from .chat_response import (
    ChatStream,
    aggregate_chat,
    check_line,
    finish_reason,
    new_call_id,
    random_id,
    usage_from,
)
from .completions import (
    CompletionRequest,
    CompletionStream,
    aggregate_completion,
    completion_request,
)
from .embeddings import EmbeddingRequest, embeddings_request_to_ollama, embeddings_response
from .models import model_page, models_list, resolve_model
from .native import (
    Bounds,
    NativeCall,
    Streamer,
    check_bounds,
    line_parts,
    prompt_chars,
    usage_counts,
)
from .responses import (
    ResponsesRequest,
    ResponsesStream,
    aggregate_response,
    response_not_found,
    responses_request,
)
from .tool_choice import ToolPolicy, apply_tool_policy, forced_format

__all__ = [
    "CompletionRequest",
    "CompletionStream",
    "ResponsesRequest",
    "ResponsesStream",
    "aggregate_completion",
    "aggregate_response",
    "completion_request",
    "response_not_found",
    "responses_request",
    "MessagesRequest",
    "MessagesStream",
    "aggregate_message",
    "messages_request",
    "random_id",
    "EFFORT_TO_THINK",
    "Bounds",
    "ChatRequest",
    "ChatStream",
    "EmbeddingRequest",
    "NativeCall",
    "Streamer",
    "ToolPolicy",
    "aggregate_chat",
    "apply_tool_policy",
    "chat_request_to_ollama",
    "check_bounds",
    "check_line",
    "embeddings_request_to_ollama",
    "embeddings_response",
    "finish_reason",
    "forced_format",
    "line_parts",
    "model_page",
    "models_list",
    "new_call_id",
    "prompt_chars",
    "resolve_model",
    "usage_counts",
    "usage_from",
]
