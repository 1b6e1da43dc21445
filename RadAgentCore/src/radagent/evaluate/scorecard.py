"""Data-driven plan score cards (METHOD §4): criteria scored linearly between two thresholds.

A card is a list of criteria on named structures; each criterion earns 1 at (or beyond) its full-credit
threshold, 0 at (or beyond) its zero-credit threshold, and scores linearly in between; the plan score is
the sum. Dose thresholds are fractions of the prescription p, ``V`` thresholds volume fractions and
``Vcc`` thresholds cm³. The built-in cards below cite their sources; zero-credit limits that a source does
not give are our choice (marked) and follow the prostate card's pattern of a small margin past the limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from radagent.errors import InputError
from radagent.evaluate.dvh import StructureDoses

__all__ = [
    "CSHAPE",
    "LIVER",
    "PROSTATE",
    "PROSTATE_4OAR",
    "WATER",
    "Criterion",
    "CriterionResult",
    "ScoreCard",
    "card_by_name",
    "card_names",
    "smooth_score",
    "total_score",
]

HOT_SPOT_VOLUME_CC = 0.03
_PERCENT_METRIC = re.compile(r"^D(\d+(?:\.\d+)?)$")
_NAMED_METRICS = ("D0.03cc", "Dmean", "Dmax", "Dmin", "V", "Vcc")

# Smooth score (METHOD §4, the sources' shaping): hot-spot term and the OAR terms' arctan.
_SMOOTH_HOT_SPOT_ON = 1.05  # h = hot spot / p above which the hot-spot term is the arctan below
_SMOOTH_HOT_SPOT_CENTRE = 1.075
_SMOOTH_HOT_SPOT_WIDTH = 0.08
_SMOOTH_HOT_SPOT_GAIN = 8.0
_SMOOTH_HOT_SPOT_COOL = 6.0  # the hot-spot term when h ≤ 1.05


@dataclass(frozen=True)
class Criterion:
    """One scored criterion: ``metric`` of ``structure`` earns 1 at ``full_credit``, 0 at ``zero_credit``.

    ``metric`` is ``"D0.03cc"`` (hot spot), ``"Dx"`` with x in percent (e.g. ``"D95"``), ``"Dmean"``,
    ``"Dmax"`` or ``"Dmin"`` (doses as a fraction of the prescription), ``"V"`` (volume fraction receiving
    at least ``dose_level`` × prescription) or ``"Vcc"`` (the same volume in cm³). Linear between the
    thresholds, clipped to [0, 1]; either threshold may be the larger, so "lower is better" and "higher
    is better" both work. ``hot_spot`` marks the target hot-spot criterion, which the smooth score
    treats with its own term.
    """

    structure: str
    metric: str
    full_credit: float
    zero_credit: float
    dose_level: float | None = None
    label: str = ""
    hot_spot: bool = False

    def __post_init__(self) -> None:
        if self.metric not in _NAMED_METRICS and not _PERCENT_METRIC.match(self.metric):
            raise ValueError(f"criterion {self.describe()}: unknown metric '{self.metric}'")
        if self.full_credit == self.zero_credit:
            raise ValueError(f"criterion {self.describe()} has equal full- and zero-credit thresholds")
        if self.metric in ("V", "Vcc") and (self.dose_level is None or self.dose_level <= 0):
            raise ValueError(f"criterion {self.describe()} needs a positive dose_level")

    @property
    def metric_name(self) -> str:
        """The metric with its dose level, e.g. ``D0.03cc``, ``D95`` or ``V(1.01p)``."""
        if self.metric in ("V", "Vcc") and self.dose_level is not None:
            return f"{self.metric}({self.dose_level:.4g}p)"
        return self.metric

    def describe(self) -> str:
        """A short human-readable name, e.g. ``Bladder V(1.01p)``."""
        return self.label or f"{self.structure} {self.metric_name}"

    @property
    def lower_is_better(self) -> bool:
        """True for limits (full credit below), False for goals (full credit above)."""
        return self.full_credit < self.zero_credit

    def value(self, doses: StructureDoses, prescription_gy: float) -> float:
        """The metric of the structure's doses, in the card's units (fraction of p, fraction, or cm³)."""
        if self.metric == "V":
            return doses.volume_fraction_at_gy(self.dose_level * prescription_gy)
        if self.metric == "Vcc":
            return doses.volume_cc_at_gy(self.dose_level * prescription_gy)
        if self.metric == "D0.03cc":
            dose_gy = doses.dose_at_cc_gy(HOT_SPOT_VOLUME_CC)
        elif self.metric == "Dmean":
            dose_gy = doses.mean_gy
        elif self.metric == "Dmax":
            dose_gy = doses.max_gy
        elif self.metric == "Dmin":
            dose_gy = doses.min_gy
        else:
            dose_gy = doses.dose_at_percent_gy(float(self.metric[1:]))
        return dose_gy / prescription_gy

    def subscore(self, value: float) -> float:
        """Linear credit between the thresholds, clipped to [0, 1]."""
        credit = (value - self.zero_credit) / (self.full_credit - self.zero_credit)
        return min(max(credit, 0.0), 1.0)


@dataclass(frozen=True)
class CriterionResult:
    """A criterion with the plan's value of its metric and the credit it earned."""

    criterion: Criterion
    value: float
    subscore: float

    def to_dict(self) -> dict[str, object]:
        """The metrics.json entry: label, structure, metric, value, thresholds and subscore."""
        return {
            "label": self.criterion.describe(),
            "structure": self.criterion.structure,
            "metric": self.criterion.metric_name,
            "value": self.value,
            "full_credit": self.criterion.full_credit,
            "zero_credit": self.criterion.zero_credit,
            "subscore": self.subscore,
        }


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

    def evaluate(
        self, doses_by_structure: Mapping[str, StructureDoses], prescription_gy: float
    ) -> tuple[CriterionResult, ...]:
        """Value and credit of every criterion, from each structure's doses (Gy)."""
        results = []
        for criterion in self.criteria:
            if criterion.structure not in doses_by_structure:
                raise InputError(f"score card '{self.name}' needs structure '{criterion.structure}'")
            value = criterion.value(doses_by_structure[criterion.structure], prescription_gy)
            results.append(CriterionResult(criterion, value, criterion.subscore(value)))
        return tuple(results)


def total_score(results: Iterable[CriterionResult]) -> float:
    """The plan score: the sum of the criteria's credits."""
    return float(sum(r.subscore for r in results))


def smooth_score(results: Iterable[CriterionResult]) -> float:
    """S_smooth of METHOD §4, for reward shaping only (not a plan-quality score).

    The hot-spot criterion adds 8·[(1/π)·arctan(−(h − 1.075)/0.08) + 0.5] when h > 1.05, else 6. Every
    other criterion whose value is better than its zero-credit limit adds (1/π)·arctan(−(v − m)/w) + 0.5
    with m the midpoint of its thresholds and w their distance (0.05 on the prostate card, as in the
    sources), mirrored for higher-is-better goals; otherwise it adds 0.
    """
    total = 0.0
    for result in results:
        criterion, value = result.criterion, result.value
        if criterion.hot_spot:
            if value > _SMOOTH_HOT_SPOT_ON:
                shaped = math.atan(-(value - _SMOOTH_HOT_SPOT_CENTRE) / _SMOOTH_HOT_SPOT_WIDTH) / math.pi
                total += _SMOOTH_HOT_SPOT_GAIN * (shaped + 0.5)
            else:
                total += _SMOOTH_HOT_SPOT_COOL
            continue
        sign = 1.0 if criterion.lower_is_better else -1.0
        if sign * (value - criterion.zero_credit) < 0:
            midpoint = 0.5 * (criterion.full_credit + criterion.zero_credit)
            width = abs(criterion.zero_credit - criterion.full_credit)
            total += math.atan(-sign * (value - midpoint) / width) / math.pi + 0.5
    return total


def _hot_spot() -> Criterion:
    """PTV D0.03cc ≤ 1.07 p for full credit, ≥ 1.10 p for none (the sources' prostate hot spot)."""
    return Criterion("PTV", "D0.03cc", 1.07, 1.10, hot_spot=True)


def _volume_limits(structure: str, dose_levels: tuple[float, ...]) -> tuple[Criterion, ...]:
    """The RTOG 0415 pattern: V(level) ≤ 15, 25, 35, 50 % for full credit, zero 5 % above each."""
    limits = ((0.15, 0.20), (0.25, 0.30), (0.35, 0.40), (0.50, 0.55))
    return tuple(
        Criterion(structure, "V", full, zero, dose_level=level)
        for level, (full, zero) in zip(dose_levels, limits, strict=True)
    )


_PROSTATE_P_GY = 79.2  # the RTOG 0415 conventional arm (44 × 1.8 Gy), to express its Gy limits relative to p

PROSTATE = ScoreCard(
    name="prostate",
    criteria=(
        _hot_spot(),
        *_volume_limits("Bladder", (1.01, 0.947, 0.884, 0.821)),
        *_volume_limits("Rectum", (0.947, 0.884, 0.821, 0.758)),
    ),
    source=(
        "the sources' 9-criterion prostate card (METHOD §4; after Shen et al., Med Phys 47 (2020) 2329): "
        "bladder V80/75/70/65 Gy and rectum V75/70/65/60 Gy ≤ 15/25/35/50 % of RTOG 0415 at p = 79.2 Gy"
    ),
)

PROSTATE_4OAR = ScoreCard(
    name="prostate-4oar",
    criteria=(
        *PROSTATE.criteria,
        Criterion("FemoralHead_L", "V", 0.10, 0.15, dose_level=50.0 / _PROSTATE_P_GY),
        Criterion("FemoralHead_R", "V", 0.10, 0.15, dose_level=50.0 / _PROSTATE_P_GY),
        Criterion("FemoralHead_L", "D0.03cc", 52.0 / _PROSTATE_P_GY, 57.0 / _PROSTATE_P_GY),
        Criterion("FemoralHead_R", "D0.03cc", 52.0 / _PROSTATE_P_GY, 57.0 / _PROSTATE_P_GY),
        Criterion("Bowel", "Vcc", 120.0, 150.0, dose_level=15.0 / _PROSTATE_P_GY),
        Criterion("Bowel", "Vcc", 195.0, 245.0, dose_level=45.0 / _PROSTATE_P_GY),
    ),
    source=(
        "PROSTATE plus: femoral heads V50 Gy ≤ 10 % (RTOG 0415 / 0126 normal-tissue guideline) and "
        "near-max ≤ 52 Gy (Emami et al., IJROBP 21 (1991) 109, femoral head TD5/5); bowel V15 Gy ≤ 120 cc "
        "and V45 Gy ≤ 195 cc (QUANTEC, Kavanagh et al., IJROBP 76 (2010) S101). Zero credit: V + 5 %, "
        "near-max + 5 Gy, bowel volumes + 25 % (our choice)"
    ),
)

LIVER = ScoreCard(
    name="liver",
    criteria=(
        _hot_spot(),
        Criterion("Liver", "Dmean", 28.0 / 50.0, 32.0 / 50.0),
        Criterion("Stomach", "D0.03cc", 45.0 / 50.0, 50.0 / 50.0),
        Criterion("SpinalCord", "D0.03cc", 45.0 / 50.0, 50.0 / 50.0),
    ),
    source=(
        "p = 50 Gy in 25 fractions. Normal-liver mean < 28 Gy, zero credit at the 32 Gy limit for liver "
        "metastases (QUANTEC, Pan et al., IJROBP 76 (2010) S94); stomach near-max < 45 Gy, a stricter "
        "reading of the whole-organ D100 < 45 Gy (QUANTEC, Kavanagh et al., IJROBP 76 (2010) S101), zero "
        "at 50 Gy (our choice); spinal cord near-max ≤ 45 Gy, zero credit at the 50 Gy / 0.2 % "
        "myelopathy level (QUANTEC, Kirkpatrick et al., IJROBP 76 (2010) S42); PTV hot spot as PROSTATE"
    ),
)

CSHAPE = ScoreCard(
    name="cshape",
    criteria=(
        Criterion("PTV", "D95", 1.0, 0.95),
        Criterion("PTV", "D10", 1.10, 1.15),
        Criterion("Core", "D10", 0.50, 0.60),
    ),
    source=(
        "AAPM TG-119 C-shape goals (Ezzell et al., Med Phys 36 (2009) 5359), p = 50 Gy in 25 fractions: "
        "PTV D95 ≥ 50 Gy, PTV D10 ≤ 55 Gy, core D10 ≤ 25 Gy; zero credit at 47.5, 57.5 and 30 Gy (our choice)"
    ),
)

WATER = ScoreCard(
    name="water",
    criteria=(_hot_spot(),),
    source="PTV hot spot only, as PROSTATE criterion 1 (a phantom without organs at risk)",
)

_CARDS = {card.name: card for card in (PROSTATE, PROSTATE_4OAR, LIVER, CSHAPE, WATER)}


def card_by_name(name: str) -> ScoreCard:
    """A built-in score card by name (case-insensitive): prostate, prostate-4oar, liver, cshape, water."""
    card = _CARDS.get(name.strip().lower())
    if card is None:
        raise InputError(f"unknown score card '{name}' (known: {', '.join(_CARDS)})")
    return card


def card_names() -> list[str]:
    """The built-in score cards' names, for front ends that offer a choice."""
    return list(_CARDS)
