"""Progress reporting and cancellation for long work (dose engine, optimizer, agents).

A progress callback is called as ``callback(fraction, message)`` with ``fraction`` in [0, 1]; returning
``False`` cancels the work, which then raises :class:`Cancelled`. The CLI turns it into a tqdm bar and
the Slicer module into its progress bar and Cancel button.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "ProgressCallback", "report", "scaled"]

ProgressCallback = Callable[[float, str], bool | None]


class Cancelled(RuntimeError):  # noqa: N818 - reads naturally at the call site: `except Cancelled`
    """Raised when a progress callback asked to stop."""


def report(callback: ProgressCallback | None, fraction: float, message: str) -> None:
    """Forward progress to ``callback`` (if any) and raise :class:`Cancelled` when it returns False."""
    if callback is not None and callback(min(max(fraction, 0.0), 1.0), message) is False:
        raise Cancelled(f"cancelled during: {message}")


def scaled(callback: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """A callback mapping a sub-task's [0, 1] onto ``[start, stop]`` of the parent's progress."""
    if callback is None:
        return None

    def forward(fraction: float, message: str) -> bool | None:
        return callback(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return forward
