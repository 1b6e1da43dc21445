"""Data-driven plan score cards (METHOD §4): criteria scored linearly between two thresholds."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Criterion", "ScoreCard"]


@dataclass(frozen=True)
class Criterion:
    """One scored criterion: ``metric`` of ``structure`` earns 1 at ``full_credit``, 0 at ``zero_credit``.

    ``metric`` is ``"D0.03cc"`` (hot spot), ``"Dx"`` with x in percent (e.g. ``"D95"``), ``"Dmean"`` or
    ``"Dmax"`` (dose values as a fraction of the prescription), or ``"V"`` (volume fraction receiving
    at least ``dose_level`` × prescription). Linear between the thresholds, clipped to [0, 1]; either
    threshold may be the larger, so "lower is better" and "higher is better" both work.
    """

    structure: str
    metric: str
    full_credit: float
    zero_credit: float
    dose_level: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.full_credit == self.zero_credit:
            raise ValueError(f"criterion {self.describe()} has equal full- and zero-credit thresholds")
        if self.metric == "V" and (self.dose_level is None or self.dose_level <= 0):
            raise ValueError(f"criterion {self.describe()} needs a positive dose_level")

    def describe(self) -> str:
        """A short human-readable name, e.g. ``bladder V(1.01p)``."""
        if self.label:
            return self.label
        if self.metric == "V":
            return f"{self.structure} V({self.dose_level:g}p)"
        return f"{self.structure} {self.metric}"


@dataclass(frozen=True)
class ScoreCard:
    """A named list of criteria with the published sources they come from; max score = criteria count."""

    name: str
    criteria: tuple[Criterion, ...]
    source: str = ""

    @property
    def max_score(self) -> float:
        """The best attainable score (one point per criterion)."""
        return float(len(self.criteria))

    def structures(self) -> tuple[str, ...]:
        """Names of the structures the card refers to, in first-use order."""
        return tuple(dict.fromkeys(c.structure for c in self.criteria))
