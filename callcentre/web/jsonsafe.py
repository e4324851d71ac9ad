"""JSON for browsers: the same encoding for API responses and websocket messages."""

from __future__ import annotations

import json
from typing import Any


def safe_dumps(data: Any) -> str:
    """JSON that is also inert if ever parsed as HTML or script: <, >, & and line separators escaped."""
    text = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


__all__ = ["safe_dumps"]
