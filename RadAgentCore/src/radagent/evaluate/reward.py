"""The penalty reward R of METHOD §4 for the beam-angle agents: the one place it is defined.

    R = −100 · [ w_cov·mean_PTV max(0, 0.95p − d)²/p² + w_hot·mean_PTV max(0, d − 1.07p)²/p²
                 + Σ_k w_k·mean_OAR_k (d/p)² + w_body·mean_body∖PTV (d/p)² ]

Higher is better and a perfect plan (PTV within [0.95p, 1.07p], no dose elsewhere) scores 0. "PTV" is the
case's primary (highest-level) target. Reported on the CT grid like every metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["DEFAULT_REWARD_WEIGHTS", "RewardTerms", "RewardWeights", "penalty_reward", "plan_reward"]

COVERAGE_LEVEL = 0.95  # fraction of p below which PTV voxels are penalized
HOT_SPOT_LEVEL = 1.07  # fraction of p above which PTV voxels are penalized
REWARD_SCALE = 100.0


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the penalty terms (METHOD §4 defaults); ``oar_overrides`` maps OAR names to w_k."""

    coverage: float = 10.0
    hot_spot: float = 10.0
    oar: float = 1.0
    body: float = 0.2
    oar_overrides: Mapping[str, float] = field(default_factory=dict)

    def for_oar(self, name: str) -> float:
        """w_k of the OAR called ``name``."""
        return float(self.oar_overrides.get(name, self.oar))


DEFAULT_REWARD_WEIGHTS = RewardWeights()


@dataclass(frozen=True)
class RewardTerms:
    """The unweighted penalty terms (each a mean of squared doses relative to p) and their weights."""

    coverage: float
    hot_spot: float
    oars: Mapping[str, float]
    body: float
    weights: RewardWeights

    @property
    def penalty(self) -> float:
        """The weighted sum inside the brackets (≥ 0)."""
        w = self.weights
        oar_sum = sum(w.for_oar(name) * term for name, term in self.oars.items())
        return w.coverage * self.coverage + w.hot_spot * self.hot_spot + oar_sum + w.body * self.body

    @property
    def reward(self) -> float:
        """R = −100 · penalty (0 for a perfect plan, negative otherwise)."""
        return -REWARD_SCALE * self.penalty


def _mean_square(values: np.ndarray) -> float:
    """Mean of squares in float64; 0 for an empty region."""
    return float(np.mean(np.square(values, dtype=np.float64))) if values.size else 0.0


def penalty_reward(
    dose_gy: np.ndarray,
    prescription_gy: float,
    target_mask: np.ndarray,
    oar_masks: Mapping[str, np.ndarray],
    body_mask: np.ndarray,
    weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
) -> RewardTerms:
    """The reward's terms from a dose and masks of the same shape (any grid; reports use the CT grid)."""
    dose = np.asarray(dose_gy)

    def relative(mask: np.ndarray) -> np.ndarray:
        return dose[mask].astype(np.float64) / prescription_gy

    target = relative(target_mask)
    coverage = _mean_square(np.maximum(COVERAGE_LEVEL - target, 0.0))
    hot_spot = _mean_square(np.maximum(target - HOT_SPOT_LEVEL, 0.0))
    oars = {name: _mean_square(relative(mask)) for name, mask in oar_masks.items()}
    body = _mean_square(relative(body_mask & ~target_mask))
    return RewardTerms(coverage, hot_spot, oars, body, weights)


def plan_reward(
    case: Case,
    dose_ct_gy: np.ndarray,
    weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
) -> RewardTerms:
    """The reward's terms for a dose on the case's CT grid: PTV = the primary target, every OAR of the
    case, and the body outside all targets (a lower dose level is prescribed dose, not spill)."""
    return penalty_reward(
        dose_ct_gy,
        case.prescription_gy,
        case.primary_target.mask,
        {oar.name: oar.mask for oar in case.oars},
        case.body.mask & ~case.target_mask(),
        weights,
    )
