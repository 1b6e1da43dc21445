"""Writing a file so that no reader ever sees half of it: the one helper every writer of the package uses."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


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


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
