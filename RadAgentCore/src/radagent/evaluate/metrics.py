"""Plan evaluation on the CT grid (METHOD §4): per-structure DVH metrics, HI, CI, score and reward.

:func:`evaluate_plan` is what the CLI writes as ``metrics.json`` and ``dvh.csv`` and what agents are
compared on; "the target" for HI, CI and the reward is the case's primary (highest-level) target, as in
the optimizer; each dose level also gets its own HI and CI.
Without a score card the score, its maximum and the smooth score are None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from radagent.errors import InputError
from radagent.evaluate.dvh import StructureDoses, dose_on_ct_grid, hottest_voxel_count
from radagent.evaluate.reward import DEFAULT_REWARD_WEIGHTS, RewardTerms, RewardWeights, plan_reward
from radagent.evaluate.scorecard import HOT_SPOT_VOLUME_CC, CriterionResult, smooth_score, total_score

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = [
    "PlanEvaluation",
    "StructureMetrics",
    "TargetLevelMetrics",
    "cumulative_dvhs",
    "dose_on_ct_grid",
    "dose_spill",
    "dvh_table",
    "evaluate_plan",
    "homogeneity_index",
    "paddick_conformity_index",
    "plan_summary",
    "score_text",
    "structure_doses",
    "target_levels",
]

_REPORTED_PERCENTS = (2, 5, 10, 50, 95, 98)
DVH_STEP_GY = 0.1


@dataclass(frozen=True)
class StructureMetrics:
    """The reported dose metrics of one structure (Gy, cm³)."""

    role: str
    volume_cc: float
    mean_gy: float
    max_gy: float
    min_gy: float
    d0_03cc_gy: float
    d2_gy: float
    d5_gy: float
    d10_gy: float
    d50_gy: float
    d95_gy: float
    d98_gy: float

    @classmethod
    def from_doses(cls, role: str, doses: StructureDoses) -> StructureMetrics:
        """All metrics from one partial sort of the structure's doses."""
        cc_count = doses.hottest_count_for_cc(HOT_SPOT_VOLUME_CC)
        counts = [hottest_voxel_count(p / 100.0, doses.voxel_count) for p in _REPORTED_PERCENTS]
        values = doses.hottest_doses_gy([*counts, cc_count])
        d0_03cc = doses.max_gy if cc_count > doses.voxel_count else float(values[-1])
        d2, d5, d10, d50, d95, d98 = (float(v) for v in values[:-1])
        return cls(
            role, doses.volume_cc, doses.mean_gy, doses.max_gy, doses.min_gy, d0_03cc,
            d2, d5, d10, d50, d95, d98,
        )  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        """The metrics.json entry of the structure."""
        return dict(vars(self))


def homogeneity_index(target: StructureDoses) -> float:
    """ICRU 83 homogeneity index (D2 − D98) / D50 (0 is perfectly homogeneous)."""
    d2, d50, d98 = target.doses_at_percent_gy((2, 50, 98))
    if d50 <= 0:
        return float("nan")
    return float((d2 - d98) / d50)


def paddick_conformity_index(
    dose_gy: np.ndarray, target_mask: np.ndarray, body_mask: np.ndarray, prescription_gy: float
) -> float:
    """Paddick CI = TV_PIV² / (TV · PIV) (1 is ideal).

    PIV counts the voxels of body ∪ target receiving ≥ p, TV the target voxels, TV_PIV their overlap.
    """
    covered = np.asarray(dose_gy) >= prescription_gy
    tv = np.count_nonzero(target_mask)
    piv = np.count_nonzero(covered & (body_mask | target_mask))
    tv_piv = np.count_nonzero(covered & target_mask)
    if piv == 0:
        return 0.0
    return tv_piv * tv_piv / (tv * piv)


def structure_doses(case: Case, dose_ct_gy: np.ndarray) -> dict[str, StructureDoses]:
    """Each structure's doses from a dose on the case's CT grid, by structure name."""
    dose = np.asarray(dose_ct_gy)
    if dose.shape != case.grid.shape:
        raise InputError(
            f"dose shape {dose.shape} does not match the CT grid {case.grid.shape}; "
            "resample it with dose_on_ct_grid first"
        )
    voxel_cc = case.grid.voxel_volume_cc
    return {s.name: StructureDoses.from_mask(s.name, dose, s.mask, voxel_cc) for s in case.structures}


def cumulative_dvhs(
    doses: Mapping[str, StructureDoses], dose_step_gy: float = DVH_STEP_GY
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A shared dose axis (0 Gy up past the hottest voxel) and each structure's volume fraction ≥ it."""
    if dose_step_gy <= 0:
        raise InputError(f"DVH dose step must be positive, got {dose_step_gy} Gy")
    top_gy = max(d.max_gy for d in doses.values())
    levels = max(2, int(np.ceil(top_gy / dose_step_gy)) + 2)
    axis = np.linspace(0.0, (levels - 1) * dose_step_gy, levels)
    return axis, {name: structure.cumulative_dvh(axis) for name, structure in doses.items()}


def _csv_columns(axis_gy: np.ndarray, fractions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``dose_gy``, then one volume-% column per structure."""
    return {"dose_gy": axis_gy, **{name: 100.0 * f for name, f in fractions.items()}}


@dataclass(frozen=True)
class TargetLevelMetrics:
    """One target's dose level and how the plan meets it on its region: the target minus the targets of
    higher levels and of the same level listed before it (the whole target with one level), as ICRU 83
    and Paddick define HI and CI. A region the other targets cover entirely has no D2, HI or CI."""

    name: str
    dose_level_gy: float
    region_cc: float
    d95_gy: float  # of the whole target
    d2_gy: float | None  # of the region
    homogeneity_index: float | None
    conformity_index: float | None  # PIV: voxels ≥ the level, outside the other targets at or above it

    def to_dict(self) -> dict[str, object]:
        """The metrics.json entry of the level."""
        return dict(vars(self))


def target_levels(
    case: Case, dose_ct_gy: np.ndarray, doses: Mapping[str, StructureDoses]
) -> list[TargetLevelMetrics]:
    """Each target's level metrics, highest level first (equal levels in input order)."""
    dose = np.asarray(dose_ct_gy)
    voxel_cc = case.grid.voxel_volume_cc
    ordered = sorted(case.targets, key=lambda t: -case.target_level_gy(t.name))
    none = np.zeros(case.grid.shape, dtype=bool)
    levels = []
    for n, target in enumerate(ordered):
        level = case.target_level_gy(target.name)
        region = target.mask & ~np.logical_or.reduce([none, *(t.mask for t in ordered[:n])])
        others = [t.mask for t in ordered if t is not target and case.target_level_gy(t.name) >= level]
        outside_others = case.body.mask & ~np.logical_or.reduce([none, *others])
        region_doses = StructureDoses.from_mask(target.name, dose, region, voxel_cc) if region.any() else None
        levels.append(
            TargetLevelMetrics(
                name=target.name,
                dose_level_gy=level,
                region_cc=float(np.count_nonzero(region) * voxel_cc),
                d95_gy=float(doses[target.name].doses_at_percent_gy((95,))[0]),
                d2_gy=float(region_doses.doses_at_percent_gy((2,))[0]) if region_doses else None,
                homogeneity_index=homogeneity_index(region_doses) if region_doses else None,
                conformity_index=(
                    paddick_conformity_index(dose, region, outside_others, level) if region_doses else None
                ),
            )
        )
    return levels


def dose_spill(case: Case, dose_ct_gy: np.ndarray) -> tuple[float, float]:
    """Where dose goes outside the targets: the mean dose (Gy) of the body outside all targets, and R50,
    the volume inside the 50 % isodose of the prescription over the targets' volume."""
    dose = np.asarray(dose_ct_gy)
    targets = case.target_mask()
    outside = case.body.mask & ~targets
    mean_gy = float(np.mean(dose[outside], dtype=np.float64)) if outside.any() else 0.0
    half = np.count_nonzero((dose >= 0.5 * case.prescription_gy) & case.body.mask)  # targets lie inside it
    return mean_gy, half / np.count_nonzero(targets)


@dataclass(frozen=True)
class PlanEvaluation:
    """Everything reported about a plan: per-structure metrics and DVHs, HI, CI (of the primary target and
    per dose level), dose outside the targets, score card and reward."""

    prescription_gy: float
    structures: Mapping[str, StructureMetrics]
    homogeneity_index: float
    conformity_index: float
    primary_target: str
    levels: tuple[TargetLevelMetrics, ...]
    body_minus_targets_mean_gy: float
    r50: float
    criteria: tuple[CriterionResult, ...]
    score: float | None
    score_max: float | None
    smooth_score: float | None
    reward_terms: RewardTerms
    dvh_dose_gy: np.ndarray | None  # None: evaluated without DVH curves (the environments' steps)
    dvh_volume_fractions: Mapping[str, np.ndarray]

    @property
    def reward(self) -> float:
        """The penalty reward R (≤ 0, 0 for a perfect plan)."""
        return self.reward_terms.reward

    def dvh_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each structure's cumulative DVH as (dose axis in Gy, volume fraction)."""
        self._check_dvhs()
        return {name: (self.dvh_dose_gy, f) for name, f in self.dvh_volume_fractions.items()}

    def dvh_table(self) -> dict[str, np.ndarray]:
        """The DVHs as CSV columns: ``dose_gy``, then the volume % of each structure."""
        self._check_dvhs()
        return _csv_columns(self.dvh_dose_gy, self.dvh_volume_fractions)

    def _check_dvhs(self) -> None:
        if self.dvh_dose_gy is None:
            raise ValueError("this plan was evaluated without DVH curves (dvh_step_gy=None)")

    def to_dict(self) -> dict[str, object]:
        """The ``structures`` and ``plan`` sections of the CLI's metrics.json."""
        return {
            "structures": {name: m.to_dict() for name, m in self.structures.items()},
            "plan": {
                "prescription_gy": self.prescription_gy,
                "primary_target": self.primary_target,
                "homogeneity_index": self.homogeneity_index,
                "conformity_index": self.conformity_index,
                "body_minus_targets_mean_gy": self.body_minus_targets_mean_gy,
                "r50": self.r50,
                "target_levels": [level.to_dict() for level in self.levels],
                "score": self.score,
                "score_max": self.score_max,
                "reward": self.reward,
                "smooth_score": self.smooth_score,
                "criteria": [r.to_dict() for r in self.criteria],
            },
        }


def evaluate_plan(
    case: Case,
    dose_ct_gy: np.ndarray,
    reward_weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
    dvh_step_gy: float | None = DVH_STEP_GY,
) -> PlanEvaluation:
    """Evaluate a dose on the case's CT grid (Gy) against its protocol's prescription and score card;
    ``dvh_step_gy=None`` leaves out the DVH curves (the metrics, score and reward stay), which a planning
    environment's step does not need."""
    doses = structure_doses(case, dose_ct_gy)
    target = case.primary_target
    prescription_gy = case.prescription_gy
    card = case.protocol.scorecard
    criteria = card.evaluate(doses, prescription_gy) if card is not None else ()
    dvh_axis, dvh_fractions = cumulative_dvhs(doses, dvh_step_gy) if dvh_step_gy is not None else (None, {})
    body_mean_gy, r50 = dose_spill(case, dose_ct_gy)
    return PlanEvaluation(
        prescription_gy=prescription_gy,
        structures={
            s.name: StructureMetrics.from_doses(s.role.value, doses[s.name]) for s in case.structures
        },
        homogeneity_index=homogeneity_index(doses[target.name]),
        conformity_index=paddick_conformity_index(dose_ct_gy, target.mask, case.body.mask, prescription_gy),
        primary_target=target.name,
        levels=tuple(target_levels(case, dose_ct_gy, doses)),
        body_minus_targets_mean_gy=body_mean_gy,
        r50=r50,
        criteria=criteria,
        score=total_score(criteria) if card is not None else None,
        score_max=card.max_score if card is not None else None,
        smooth_score=smooth_score(criteria) if card is not None else None,
        reward_terms=plan_reward(case, dose_ct_gy, reward_weights),
        dvh_dose_gy=dvh_axis,
        dvh_volume_fractions=dvh_fractions,
    )


def dvh_table(case: Case, dose_ct_gy: np.ndarray, dose_step_gy: float = DVH_STEP_GY) -> dict[str, np.ndarray]:
    """Cumulative DVHs as CSV columns: ``dose_gy``, then the volume % ≥ that dose of each structure."""
    return _csv_columns(*cumulative_dvhs(structure_doses(case, dose_ct_gy), dose_step_gy))


def score_text(score: float | None, score_max: float | None) -> str:
    """``score 7.50/9``, or ``no score card``: how every front end and agent prints a plan's score."""
    if score is None or score_max is None:
        return "no score card"
    return f"score {score:.2f}/{score_max:g}"


def plan_summary(plan: Mapping[str, Any]) -> str:
    """``score 7.50/9, reward -12.345`` from the ``plan`` section of metrics.json: the one-line summary
    the CLI, batch mode and the Slicer panel print after a plan."""
    return f"{score_text(plan.get('score'), plan.get('score_max'))}, reward {plan['reward']:.3f}"
