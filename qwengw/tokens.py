"""Prompt-token estimates without a tokenizer, calibrated by Ollama's own counts.

Ollama has no tokenize endpoint, and an exact count would cost a full prompt evaluation on the
GPU. So ``count_tokens`` (and the input tokens announced at the start of an Anthropic stream)
divide the prompt's characters by a characters-per-token ratio that starts at a conservative
3.5 (Ollama itself uses 4; erring high is safer for a client that compacts its context) and is
then learned per model, per worker, from every answered request: Ollama reports how many tokens
the prompt it was sent had, and the gateway knows how many characters that prompt had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_CHARS_PER_TOKEN = 3.5
MIN_CHARS = 200  # tiny prompts are mostly template overhead: they would skew the ratio
WEIGHT = 0.2  # exponential moving average: recent requests count most


@dataclass
class TokenEstimator:
    ratios: dict[str, float] = field(default_factory=dict)  # public model → chars per token

    def observe(self, model: str | None, chars: int | None, tokens: int | None) -> None:
        if not model or not chars or not tokens or chars < MIN_CHARS:
            return
        ratio = chars / tokens
        if not 0.5 <= ratio <= 20:  # a cached or truncated prompt says nothing useful
            return
        old = self.ratios.get(model)
        self.ratios[model] = ratio if old is None else old + WEIGHT * (ratio - old)

    def estimate(self, model: str, chars: int) -> int:
        ratio = self.ratios.get(model, DEFAULT_CHARS_PER_TOKEN)
        return max(1, math.ceil(chars / ratio))
