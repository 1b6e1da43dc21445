"""One plan, end to end: beams → dose-influence matrix → fluence → dose on the CT grid → evaluation.

This is the pipeline every agent and both front ends (CLI, Slicer) call; it owns no physics itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from radagent import RESEARCH_USE_ONLY
from radagent.beams import DEFAULT_BEAMS, equispaced_angles
from radagent.dose import DoseEngineSettings, DoseInfluence, DoseInfluenceCache, compute_dose_influence
from radagent.errors import InputError
from radagent.evaluate.dvh import normalization_factor
from radagent.evaluate.metrics import DVH_STEP_GY, PlanEvaluation, dose_on_ct_grid, evaluate_plan
from radagent.evaluate.reward import DEFAULT_REWARD_WEIGHTS, RewardWeights
from radagent.geometry import Grid
from radagent.optimize import (
    OptimizationResult,
    OptimizerSettings,
    TPPs,
    optimize_fluence,
    tpp_oar_names,
    uniform_fluence,
)
from radagent.optimize.default_objectives import default_objectives
from radagent.optimize.solver import InfluenceInput
from radagent.patient import Case, Role
from radagent.progress import ProgressCallback, report, scaled

__all__ = [
    "PlanFluence",
    "PlanResult",
    "PlanSettings",
    "normalize_and_evaluate",
    "normalized_dose_on_ct",
    "overlap_warnings",
    "plan_case",
    "plan_fluence",
    "plan_normalization_factor",
]

FluenceMode = Literal["optimized", "uniform"]
ObjectiveSetName = Literal["default", "tpp"]


@dataclass(frozen=True)
class PlanSettings:
    """What to plan: gantry angles (IEC 61217, degrees), dose-engine and optimizer settings, fluence mode,
    and the objectives of optimized fluence: the default set (:mod:`radagent.optimize.default_objectives`)
    or the TPP objective of METHOD §3 with ``tpps`` (None: the sources' default start)."""

    angles_deg: tuple[float, ...] = field(default_factory=lambda: equispaced_angles(DEFAULT_BEAMS))
    engine: DoseEngineSettings = field(default_factory=DoseEngineSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    fluence: FluenceMode = "optimized"
    objective_set: ObjectiveSetName = "default"
    tpps: TPPs | None = None
    normalization_target: str | None = None  # None: the primary (highest-level) target
    isocenter_ras: tuple[float, float, float] | None = None
    seed: int = 0  # recorded with the plan; the pipeline itself is deterministic

    def __post_init__(self) -> None:
        if self.fluence not in ("optimized", "uniform"):
            raise InputError(f"fluence mode must be 'optimized' or 'uniform', got {self.fluence!r}")
        if self.objective_set not in ("default", "tpp"):
            raise InputError(f"objective set must be 'default' or 'tpp', got {self.objective_set!r}")
        if self.tpps is not None and self.objective_set != "tpp":
            raise InputError("TPP values apply to the TPP objective set, not the default one")
        if self.normalization_target is not None and self.fluence == "uniform":
            raise InputError("a normalization target applies to optimized fluence, not uniform")
        if not self.angles_deg:
            raise InputError("a plan needs at least one beam")
        if len(set(self.angles_deg)) != len(self.angles_deg):
            raise InputError(f"duplicate gantry angles: {self.angles_deg}")
        for angle in self.angles_deg:
            if not np.isfinite(angle) or not 0.0 <= angle < 360.0:
                raise InputError(f"gantry angle {angle} is out of range [0, 360)")


@dataclass
class PlanResult:
    """Everything a plan produced; :meth:`metrics` is the dictionary written as ``metrics.json``."""

    case: Case
    settings: PlanSettings
    isocenter_ras: tuple[float, float, float]
    dose_influence: DoseInfluence
    weights: np.ndarray
    dose_ct_gy: np.ndarray
    evaluation: PlanEvaluation
    optimization: OptimizationResult | None
    tpps: TPPs | None
    objectives: list[dict[str, Any]]  # the default set's terms as plain values (empty otherwise)
    warnings: list[str]  # what the planner should know about the inputs (overlaps), in plan.json too
    timing_s: dict[str, float]

    def metrics(self) -> dict[str, Any]:
        """Structures, plan indices, dose-influence size and timings (the CLI's ``metrics.json``)."""
        result = self.evaluation.to_dict()
        result["dij"] = {
            "n_beamlets": int(self.dose_influence.matrix.shape[1]),
            "nnz": int(self.dose_influence.nnz),
            "megabytes": round(float(self.dose_influence.megabytes), 3),
        }
        result["timing_s"] = {name: round(value, 4) for name, value in self.timing_s.items()}
        return result

    def plan_description(self) -> dict[str, Any]:
        """Angles, isocentre, beamlets and planning parameters (the CLI's ``plan.json``)."""
        influence = self.dose_influence
        beams = []
        for index, angle in enumerate(self.settings.angles_deg):
            columns = influence.beam_columns(index)
            beams.append(
                {
                    "gantry_deg": angle,
                    "n_beamlets": int(columns.stop - columns.start),
                    "beamlet_weight_sum": float(np.sum(self.weights[columns])),
                    "jaws_mm": self._jaws_mm(index),
                }
            )
        description: dict[str, Any] = {
            "notice": RESEARCH_USE_ONLY,
            "case": self.case.name,
            "patient_position": self.case.patient_position,
            "prescription_gy": self.case.prescription_gy,
            "fractions": int(self.case.protocol.fractions),
            "gantry_angles_deg": list(self.settings.angles_deg),
            "isocenter_ras_mm": [round(v, 3) for v in self.isocenter_ras],
            "n_beamlets": int(influence.matrix.shape[1]),
            "bixel_mm": self.settings.engine.bixel_mm,
            "dose_grid_mm": self.settings.engine.dose_grid_mm,
            "fluence": self.settings.fluence,
            "seed": self.settings.seed,
            "beams": beams,
            "objective_set": self.settings.objective_set if self.settings.fluence == "optimized" else None,
            "tpps": self.tpps.to_dict() if self.tpps is not None else None,
        }
        if self.objectives:
            description["objectives"] = self.objectives
        description["warnings"] = list(self.warnings)
        if self.optimization is not None:
            description["optimization"] = {
                "outer_iterations": int(self.optimization.outer_iterations),
                "converged": bool(self.optimization.converged),
                "objective_history": [float(v) for v in self.optimization.objective_history],
            }
        return description

    def _jaws_mm(self, beam_index: int) -> list[float]:
        """The beam's field at the isocentre, [X1, X2, Y1, Y2] in mm: the box around its beamlets of
        non-zero weight (all of them when none has any), each a bixel wide."""
        beam = self.dose_influence.beams[beam_index]
        weights = self.weights[beam.columns]
        uv = beam.beamlet_uv_mm[weights > 0] if np.any(weights > 0) else beam.beamlet_uv_mm
        half = 0.5 * self.settings.engine.bixel_mm
        low, high = uv.min(axis=0) - half, uv.max(axis=0) + half
        return [round(float(v), 3) for v in (low[0], high[0], low[1], high[1])]


def overlap_warnings(case: Case, settings: PlanSettings) -> list[str]:
    """One line per organ at risk that overlaps a target: by how much, and which objective owns the
    shared voxels under ``settings``' objective set."""
    warnings = []
    for oar in case.oars:
        for target in case.targets:
            shared = np.count_nonzero(oar.mask & target.mask)
            if not shared:
                continue
            if settings.fluence == "uniform":
                owner = "uniform fluence has no objectives"
            elif settings.objective_set == "default":
                owner = "the default objectives give those voxels to the target's terms, not the organ's"
            else:
                owner = "the TPP objective's term of the organ covers all of it, overlap included (METHOD §3)"
            warnings.append(
                f"organ at risk '{oar.name}' overlaps target '{target.name}' by "
                f"{shared * case.grid.voxel_volume_cc:.1f} cc; {owner}"
            )
    return warnings


def plan_normalization_factor(
    case: Case, dose_ct_gy: np.ndarray, fluence: FluenceMode, target: str | None = None
) -> float:
    """Scale putting the target's D95 (optimized) or mean (uniform) at its dose level, on the CT grid;
    the target is the primary (highest-level) one unless named."""
    chosen = case.structure(target) if target is not None else case.primary_target
    if chosen.role is not Role.TARGET:
        raise InputError(f"the plan can be normalized to a target only; '{chosen.name}' is not one")
    percent = None if fluence == "uniform" else 95.0
    return normalization_factor(
        dose_ct_gy[chosen.mask], case.target_level_gy(chosen.name), percent, f"target '{chosen.name}'"
    )


def normalized_dose_on_ct(
    case: Case,
    dose_gy: np.ndarray,
    dose_grid: Grid,
    fluence: FluenceMode = "optimized",
    target: str | None = None,
) -> tuple[np.ndarray, float]:
    """Resample a dose onto the CT grid and rescale it there (see :func:`plan_normalization_factor`).

    The optimizer normalizes on its own dose grid; reported numbers live on the CT grid, where a thin
    target's D95 can differ by a few percent, so the final (linear) rescale is done here. Returns the
    rescaled CT-grid dose and the factor, which the caller applies to the weights.
    """
    dose_ct = dose_on_ct_grid(dose_gy, dose_grid, case.grid)
    factor = plan_normalization_factor(case, dose_ct, fluence, target)
    dose_ct *= factor
    return dose_ct, factor


@dataclass(frozen=True)
class PlanFluence:
    """A plan's beamlet weights (before the CT-grid normalization), with the optimizer's run and the
    objectives that made them."""

    weights: np.ndarray
    optimization: OptimizationResult | None  # None for uniform fluence
    tpps: TPPs | None  # the TPPs of the TPP objective set
    objectives: list[dict[str, Any]]  # the default set's terms as plain values (empty otherwise)


def plan_fluence(
    matrix: InfluenceInput,
    dose_grid: Grid,
    case: Case,
    settings: PlanSettings,
    progress: ProgressCallback | None = None,
) -> PlanFluence:
    """The fluence step of every plan (:func:`plan_case` and the planning environments): uniform, or
    optimized for ``settings``' objective set; uses its fluence, objective set, TPPs and optimizer."""
    if settings.fluence == "uniform":
        return PlanFluence(uniform_fluence(matrix, dose_grid, case), None, None, [])
    if settings.objective_set == "tpp":
        tpps = settings.tpps or TPPs.default(tpp_oar_names(case))
        optimization = optimize_fluence(
            matrix, dose_grid, case, tpps=tpps, settings=settings.optimizer, progress=progress
        )
        return PlanFluence(optimization.weights, optimization, tpps, [])
    chosen = default_objectives(case)
    optimization = optimize_fluence(
        matrix,
        dose_grid,
        chosen.case_for(case),
        objectives=chosen.objectives,
        settings=settings.optimizer,
        progress=progress,
    )
    return PlanFluence(optimization.weights, optimization, None, chosen.describe())


def normalize_and_evaluate(
    case: Case,
    dose_gy: np.ndarray,
    dose_grid: Grid,
    fluence: FluenceMode = "optimized",
    target: str | None = None,
    reward_weights: RewardWeights = DEFAULT_REWARD_WEIGHTS,
    dvh_step_gy: float | None = DVH_STEP_GY,
) -> tuple[np.ndarray, float, PlanEvaluation]:
    """The evaluation step of every plan: the dose on the CT grid normalized there, the factor (which
    the caller applies to the weights) and the evaluation (``dvh_step_gy=None``: no DVH curves)."""
    dose_ct, factor = normalized_dose_on_ct(case, dose_gy, dose_grid, fluence, target)
    return dose_ct, factor, evaluate_plan(case, dose_ct, reward_weights, dvh_step_gy)


def plan_case(
    case: Case,
    settings: PlanSettings | None = None,
    progress: ProgressCallback | None = None,
    cache: DoseInfluenceCache | None = None,
) -> PlanResult:
    """Compute, optimize and evaluate one plan for ``case``; progress callbacks may cancel it."""
    settings = settings or PlanSettings()
    start = time.perf_counter()
    isocenter = settings.isocenter_ras or case.isocenter_ras
    engine_progress = scaled(progress, 0.0, 0.6)
    if cache is not None:
        influence = cache.get(case, settings.angles_deg, settings.engine, isocenter, progress=engine_progress)
    else:
        influence = compute_dose_influence(
            case, settings.angles_deg, settings.engine, isocenter_ras=isocenter, progress=engine_progress
        )
    engine_done = time.perf_counter()

    fluence = plan_fluence(influence.matrix, influence.dose_grid, case, settings, scaled(progress, 0.6, 0.95))
    optimized = time.perf_counter()

    report(progress, 0.95, "evaluating the plan on the CT grid")
    dose_ct, factor, evaluation = normalize_and_evaluate(
        case,
        influence.dose_volume(fluence.weights),
        influence.dose_grid,
        settings.fluence,
        settings.normalization_target,
    )
    weights = fluence.weights * factor
    finished = time.perf_counter()
    report(progress, 1.0, "plan done")
    return PlanResult(
        case=case,
        settings=settings,
        isocenter_ras=tuple(float(v) for v in isocenter),
        dose_influence=influence,
        weights=np.asarray(weights),
        dose_ct_gy=dose_ct,
        evaluation=evaluation,
        optimization=fluence.optimization,
        tpps=fluence.tpps,
        objectives=fluence.objectives,
        warnings=overlap_warnings(case, settings),
        timing_s={
            "dose_engine": engine_done - start,
            "optimization": optimized - engine_done,
            "evaluation": finished - optimized,
            "total": finished - start,
        },
    )
