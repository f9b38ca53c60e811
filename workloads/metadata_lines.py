"""The ``# key: value`` lines that open servesim's CSV files (profiles, client samples,
imported tables): one reading of them, each reader deciding what a malformed one means."""

from __future__ import annotations

from typing import Optional


def metadata_entry(line: str) -> Optional[tuple[str, str]]:
    """``(key, value)`` of a ``# key: value`` line, stripped; ``None`` where the comment
    is not one (no colon, or nothing before it)."""
    key, colon, value = line.lstrip()[1:].partition(":")
    return (key.strip(), value.strip()) if colon and key.strip() else None
