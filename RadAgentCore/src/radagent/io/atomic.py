"""Writing a file so that no reader ever sees half of it: the one helper every writer of the package uses."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh hidden sibling of ``path`` to write in the block, renamed onto ``path`` when the block
    succeeds and removed when it fails. The writer creates it, so it gets the user's usual permissions
    (umask), not mkstemp's owner-only ones; its name does not end in ``path``'s suffix, so writers that
    infer a format from the name must be told it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
