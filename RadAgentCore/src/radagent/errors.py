"""The package's one exception for bad input: what the CLI prints as a one-line error (exit 2)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input (file, structure, geometry or parameter), with a message a physicist understands."""
