"""Treatment planning parameters (TPPs, METHOD §3): the knobs the TPP-tuning agents turn.

Per structure s ∈ {PTV, OAR₁…OAR_N}: a dose threshold tₛ (fraction of p), a priority λₛ and a volume
fraction Vₛ, ordered as one vector of 3 + 3N entries (t_PTV, t_OAR…, λ_PTV, λ_OAR…, V_PTV, V_OAR…) — for
prostate (t_PTV, t_BLA, t_REC, λ_PTV, λ_BLA, λ_REC, V_PTV, V_BLA, V_REC). They define the objective

    f(x) = Σₛ (λₛ/λ_PTV)·(1/|Ωₛ⁺|)·Σ_{Ωₛ⁺} (dᵢ − tₛ·p)² + β·(1/N_PTV)·Σ_PTV max(0, p − dᵢ)²,  β = 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radagent.errors import InputError
from radagent.optimize.objectives import Objective, SquaredUnderdose, TppDoseVolume

if TYPE_CHECKING:
    from radagent.evaluate.scorecard import ScoreCard
    from radagent.patient import Case

__all__ = ["COVERAGE_WEIGHT", "TPPs", "scored_oar_names", "tpp_oar_names", "tpp_objectives"]

TARGET_LABEL = "PTV"  # the target's name in TPP entry names, whatever the structure is called
COVERAGE_WEIGHT = 2.0  # β of the PTV coverage term (our choice, after the sources' coverage constraint)
MIN_PRIORITY = 1e-3  # λ lower bound, so that λₛ/λ_PTV is defined

# Bounds and random-start ranges of the sources (METHOD §3), per kind, as (target, OAR) pairs.
_THRESHOLD_BOUNDS = ((1.0, 1.2), (0.0, 1.0))
_PRIORITY_BOUNDS = ((MIN_PRIORITY, 1e5), (MIN_PRIORITY, 1e5))
_VOLUME_BOUNDS = ((0.0, 0.3), (0.0, 1.0))
_THRESHOLD_RANDOM = ((1.0, 1.2), (0.0, 1.0))
_PRIORITY_RANDOM = ((0.0, 30.0), (0.0, 30.0))
_VOLUME_RANDOM = ((0.0, 0.3), (0.0, 1.0))
_DEFAULTS = ((1.0, 1.0), (1.0, 1.0), (0.1, 1.0))  # (t, λ, V) as (target, OAR)
_KINDS = ("t", "lambda", "V")


def _per_entry(
    pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]], oar_count: int, side: int
) -> np.ndarray:
    """Expand per-kind (target, OAR) pairs into the 3 + 3N vector for one side (0 = low, 1 = high)."""
    return np.array([v for target, oar in pairs for v in (target[side], *[oar[side]] * oar_count)])


@dataclass(frozen=True)
class TPPs:
    """A TPP vector for a target and the named OARs; values are clipped to the bounds on construction."""

    oar_names: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        oars = tuple(str(n) for n in self.oar_names)
        values = np.asarray(self.values, dtype=np.float64).ravel()
        if values.size != 3 + 3 * len(oars):
            raise InputError(f"{len(oars)} OARs need {3 + 3 * len(oars)} TPP values, got {values.size}")
        if not np.all(np.isfinite(values)):
            raise InputError(f"TPP values must be finite, got {values.tolist()}")
        low, high = self.bounds(len(oars))
        object.__setattr__(self, "oar_names", oars)
        object.__setattr__(self, "values", tuple(float(v) for v in np.clip(values, low, high)))

    @staticmethod
    def bounds(oar_count: int) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of each entry (t_PTV ∈ [1, 1.2], t_OAR ≤ 1, λ ≥ 1e-3, V_PTV ≤ 0.3, …)."""
        kinds = (_THRESHOLD_BOUNDS, _PRIORITY_BOUNDS, _VOLUME_BOUNDS)
        return _per_entry(kinds, oar_count, 0), _per_entry(kinds, oar_count, 1)

    @classmethod
    def default(cls, oar_names: Sequence[str]) -> TPPs:
        """The sources' start: t = 1, λ = 1, V_PTV = 0.1, V_OAR = 1 — (1,1,1, 1,1,1, 0.1,1,1) for prostate."""
        oars = tuple(oar_names)
        return cls(oars, tuple(v for target, oar in _DEFAULTS for v in (target, *[oar] * len(oars))))

    @classmethod
    def random(cls, oar_names: Sequence[str], rng: np.random.Generator) -> TPPs:
        """The sources' random start: t_PTV ~ U(1, 1.2), t_OAR ~ U(0, 1), λ ~ U(0, 30), V ~ U(0, 0.3 | 1)."""
        oars = tuple(oar_names)
        ranges = (_THRESHOLD_RANDOM, _PRIORITY_RANDOM, _VOLUME_RANDOM)
        return cls(
            oars, tuple(rng.uniform(_per_entry(ranges, len(oars), 0), _per_entry(ranges, len(oars), 1)))
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Entry names in vector order: ``t_PTV``, ``t_<OAR>``…, ``lambda_PTV``…, ``V_PTV``, ``V_<OAR>``…"""
        structures = (TARGET_LABEL, *self.oar_names)
        return tuple(f"{kind}_{s}" for kind in _KINDS for s in structures)

    def _block(self, kind: int) -> tuple[float, ...]:
        size = 1 + len(self.oar_names)
        return self.values[kind * size : (kind + 1) * size]

    @property
    def thresholds(self) -> tuple[float, ...]:
        """tₛ (fractions of p), target first."""
        return self._block(0)

    @property
    def priorities(self) -> tuple[float, ...]:
        """λₛ, target first."""
        return self._block(1)

    @property
    def volume_fractions(self) -> tuple[float, ...]:
        """Vₛ, target first."""
        return self._block(2)

    def as_array(self) -> np.ndarray:
        """The 3 + 3N vector as float64."""
        return np.array(self.values)

    def with_value(self, name: str, value: float) -> TPPs:
        """A copy with the entry ``name`` (e.g. ``"lambda_Rectum"``) set to ``value`` (clipped)."""
        names = self.names
        if name not in names:
            raise InputError(f"unknown TPP '{name}' (known: {', '.join(names)})")
        values = list(self.values)
        values[names.index(name)] = value
        return TPPs(self.oar_names, tuple(values))

    def to_dict(self) -> dict[str, float]:
        """``{entry name: value}`` in vector order (JSON-ready)."""
        return dict(zip(self.names, self.values, strict=True))

    @classmethod
    def from_dict(cls, entries: Mapping[str, float]) -> TPPs:
        """Inverse of :meth:`to_dict`; the OARs are read from the ``t_<OAR>`` keys in their order."""
        prefix = "t_"
        oars = tuple(k[len(prefix) :] for k in entries if k.startswith(prefix) and k != prefix + TARGET_LABEL)
        expected = cls.default(oars).names
        missing = [n for n in expected if n not in entries]
        extra = [k for k in entries if k not in expected]
        if missing or extra:
            raise InputError(f"TPP entries do not match: missing {missing}, unexpected {extra}")
        return cls(oars, tuple(float(entries[n]) for n in expected))

    def to_list(self) -> list[float]:
        """The vector as a JSON-ready list."""
        return list(self.values)

    @classmethod
    def from_list(cls, oar_names: Sequence[str], values: Sequence[float]) -> TPPs:
        """Inverse of :meth:`to_list` for the given OARs."""
        return cls(tuple(oar_names), tuple(values))


def tpp_oar_names(case: Case) -> tuple[str, ...]:
    """The OARs the TPPs cover: those the score card names, in case order; all OARs without a card."""
    return scored_oar_names([o.name for o in case.oars], case.protocol.scorecard)


def scored_oar_names(oar_names: Sequence[str], card: ScoreCard | None) -> tuple[str, ...]:
    """Of ``oar_names``, those ``card`` scores (in the given order); all of them when it scores none."""
    named = set(card.structures()) if card is not None else set()
    scored = tuple(name for name in oar_names if name in named)
    return scored if scored else tuple(oar_names)


def tpp_objectives(
    tpps: TPPs, target_name: str, prescription_gy: float, coverage_weight: float = COVERAGE_WEIGHT
) -> tuple[Objective, ...]:
    """The objective terms of f(x) for these TPPs: one dose–volume term per structure plus PTV coverage."""
    structures = (target_name, *tpps.oar_names)
    priority_ptv = tpps.priorities[0]
    terms: list[Objective] = [
        TppDoseVolume(name, t * prescription_gy, v, lam / priority_ptv)
        for name, t, lam, v in zip(
            structures, tpps.thresholds, tpps.priorities, tpps.volume_fractions, strict=True
        )
    ]
    terms.append(SquaredUnderdose(target_name, prescription_gy, coverage_weight))
    return tuple(terms)
