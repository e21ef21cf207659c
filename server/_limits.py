"""The request limits the server enforces; the proto comments state the same numbers (a test checks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so no call can make the server use unbounded memory or time."""

    max_embed_texts: int = 1024
    max_embed_stream_texts: int = 10_000
    max_text_bytes: int = 16_384
    max_k: int = 1000
    max_ids: int = 1000
    max_id_bytes: int = 256
    max_upsert_items: int = 1000
    max_metadata_bytes: int = 16_384
    max_filter_conditions: int = 16
    max_filter_values: int = 256
    max_message_bytes: int = 8 * 1024 * 1024


DEFAULT_K = 10
DEFAULT_STREAM_CHUNK = 256
MAX_STREAM_CHUNK = 1024
