"""One JSON line per request: who, what, how it ended. Never keys, prompts or answers."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime


@dataclass
class AuditRecord:
    request_id: str
    client_ip: str | None
    method: str
    path: str
    dialect: str | None = None  # openai-chat, anthropic-messages, openai-responses, ...
    key_id: str | None = None
    user: str | None = None
    model: str | None = None  # the public name, never the upstream one
    stream: bool | None = None
    status: int = 0
    error_code: str | None = None
    prompt_chars: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    cancelled: bool = False
    upstream: str | None = None  # host label such as "ollama-1", never a URL


class AuditLog:
    """Appends lines with one ``write`` each, so several workers can share one file (O_APPEND)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self.fd = 1
            self._owned = False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._owned = True
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        data = asdict(record)
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        line.update({k: v for k, v in data.items() if v is not None or k in ("key_id", "model")})
        raw = (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            os.write(self.fd, raw)

    def close(self) -> None:
        if self._owned:
            os.close(self.fd)
            self._owned = False
