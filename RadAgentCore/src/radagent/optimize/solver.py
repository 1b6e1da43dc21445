"""Fluence optimization (METHOD §3): minimize Σ objectives(A·x) over beamlet weights x ≥ 0.

Cold start: a uniform fluence scaled so that the target's mean dose is the prescription. Each outer
iteration freezes the parts of the objectives that jump with the dose (the TPP terms' 1/|Ω⁺|, see
objectives.py) at the current dose and takes a bounded number of projected L-BFGS steps on the result,
warm-started from the current x and keeping the curvature memory. The loop stops when ‖Δx‖/‖x‖ falls
below 5e-3 or after 40 outer iterations (the sources' rule), and the plan is rescaled so the target's
D95 on the dose grid equals the prescription.

Five inner steps per outer iteration (our choice): on the prostate phantom at 5 mm, random TPPs reach
objective values within 1–3 % of a 200-step run, in half the time of ten steps, which keeps a
TPP-environment step within its budget when the outer rule runs all 40 iterations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from radagent.errors import InputError
from radagent.evaluate.dvh import hottest_minimum_gy
from radagent.geometry import Grid
from radagent.optimize.influence import StructureInfluence
from radagent.optimize.objectives import Objective
from radagent.optimize.quasi_newton import ProjectedLbfgs
from radagent.optimize.tpp import TPPs, tpp_oar_names, tpp_objectives
from radagent.optimize.vectors import norm
from radagent.progress import ProgressCallback, report

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["OptimizationResult", "OptimizerSettings", "optimize_fluence", "uniform_fluence"]

InfluenceInput = sparse.sparray | sparse.spmatrix | StructureInfluence


@dataclass(frozen=True)
class OptimizerSettings:
    """Iteration limits and normalization (METHOD §3 defaults)."""

    max_outer_iterations: int = 40
    inner_iterations: int = 5  # projected L-BFGS iterations per outer iteration (see the module notes)
    relative_change_tolerance: float = 5e-3  # stop when ‖Δx‖/‖x‖ is below this
    lbfgs_memory: int = 10
    normalize_percent: float | None = 95.0  # rescale so target D(this %) = p; None keeps the optimum

    def __post_init__(self) -> None:
        if self.max_outer_iterations < 1 or self.inner_iterations < 1:
            raise InputError("the optimizer needs at least one outer and one inner iteration")
        if self.relative_change_tolerance <= 0:
            raise InputError("the optimizer's convergence tolerance must be positive")


DEFAULT_SETTINGS = OptimizerSettings()


@dataclass(frozen=True, eq=False)
class OptimizationResult:
    """Beamlet weights, the dose on the dose grid (Gy, flat ``[k, j, i]``) and how the optimizer got there."""

    weights: np.ndarray
    dose_gy: np.ndarray
    dose_grid: Grid
    objective_history: tuple[float, ...]  # f at the cold start and after each outer iteration (unnormalized)
    outer_iterations: int
    inner_iterations: int
    function_evaluations: int
    time_s: float
    converged: bool
    normalization_factor: float

    @property
    def dose_volume_gy(self) -> np.ndarray:
        """The dose as a ``[k, j, i]`` volume on the dose grid."""
        return self.dose_gy.reshape(self.dose_grid.shape)


def _prepared(
    matrix: InfluenceInput, dose_grid: Grid, case: Case, names: Sequence[str]
) -> StructureInfluence:
    """The structure rows for ``names``: built here from a sparse matrix, or checked when prebuilt."""
    if not isinstance(matrix, StructureInfluence):
        return StructureInfluence.build(matrix, dose_grid, case, names)
    if not matrix.dose_grid.same_as(dose_grid):
        raise InputError("the prepared dose-influence rows belong to a different dose grid")
    missing = [n for n in names if n not in matrix.positions]
    if missing:
        raise InputError(f"the prepared dose-influence rows lack structures: {', '.join(missing)}")
    return matrix


def _canonical(case: Case, objectives: Sequence[Objective]) -> list[tuple[str, Objective]]:
    """Each objective with its structure's exact name in the case (raises for unknown structures)."""
    return [(case.structure(o.structure).name, o) for o in objectives]


def _doses_by_structure(
    influence: StructureInfluence, names: Sequence[str], weights: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Union-row dose and each named structure's voxel doses for beamlet ``weights``."""
    dose = influence.dose_gy(weights)
    return dose, {name: dose[influence.positions[name]] for name in names}


def _objective_value(terms: Sequence[tuple[str, Objective]], doses: dict[str, np.ndarray]) -> float:
    """Σ objectives for the structures' voxel doses (the true objective, nothing frozen)."""
    return float(sum(objective.value_and_gradient(doses[name])[0] for name, objective in terms))


def _value_and_gradient(
    weights: np.ndarray, influence: StructureInfluence, terms: Sequence[tuple[str, Objective]]
) -> tuple[float, np.ndarray]:
    """Σ objectives and its gradient with respect to the beamlet weights (Aᵀ·∂f/∂d)."""
    dose, doses = _doses_by_structure(influence, list(dict.fromkeys(n for n, _ in terms)), weights)
    gradient_rows = np.zeros(dose.size)
    value = 0.0
    for name, objective in terms:
        term_value, term_gradient = objective.value_and_gradient(doses[name])
        value += term_value
        gradient_rows[influence.positions[name]] += term_gradient
    return value, influence.backproject(gradient_rows)


def _target_dose_gy(influence: StructureInfluence, target: str, weights: np.ndarray) -> np.ndarray:
    """The target voxels' doses on the dose grid."""
    return _doses_by_structure(influence, [target], weights)[1][target]


def _normalization_factor(target_dose_gy: np.ndarray, percent: float, prescription_gy: float) -> float:
    """The factor that brings the target's D(percent) on the dose grid to the prescription."""
    d_percent = hottest_minimum_gy(target_dose_gy, percent / 100.0)
    if d_percent <= 0:
        raise InputError(f"the plan gives no dose to {percent:g} % of the target, so it cannot be normalized")
    return prescription_gy / d_percent


def _check_objectives(objectives: Sequence[Objective] | None, tpps: TPPs | None) -> None:
    """Reject ambiguous or empty objective specifications."""
    if objectives is not None and tpps is not None:
        raise InputError("give the optimizer either objectives or TPPs, not both")
    if objectives is not None and not objectives:
        raise InputError("the optimizer needs at least one objective")


def optimize_fluence(
    matrix: InfluenceInput,
    dose_grid: Grid,
    case: Case,
    objectives: Sequence[Objective] | None = None,
    tpps: TPPs | None = None,
    settings: OptimizerSettings = DEFAULT_SETTINGS,
    progress: ProgressCallback | None = None,
) -> OptimizationResult:
    """Optimize beamlet weights for ``objectives``, or for the TPP objective of ``tpps`` (default TPPs).

    ``matrix`` is the dose-influence matrix (rows: flat ``[k, j, i]`` dose-grid voxels, columns:
    beamlets) or a :class:`StructureInfluence` prepared from it, to reuse across calls. The target is
    the case's first target. Deterministic for given inputs; cancellable through ``progress``.
    """
    start = time.perf_counter()
    _check_objectives(objectives, tpps)
    target = case.targets[0].name
    if objectives is None:
        chosen = tpps if tpps is not None else TPPs.default(tpp_oar_names(case))
        objectives = tpp_objectives(chosen, target, case.prescription_gy)
    terms = _canonical(case, objectives)
    influence = _prepared(matrix, dose_grid, case, list(dict.fromkeys([target, *(n for n, _ in terms)])))

    unit_dose = _target_dose_gy(influence, target, np.ones(influence.beamlet_count))
    if not np.any(unit_dose > 0):
        raise InputError(f"the beams deliver no dose to target '{target}'")
    weights = np.full(influence.beamlet_count, case.prescription_gy / float(np.mean(unit_dose)))
    names = list(dict.fromkeys(n for n, _ in terms))
    doses = _doses_by_structure(influence, names, weights)[1]
    history = [_objective_value(terms, doses)]
    quasi_newton = ProjectedLbfgs(settings.lbfgs_memory)
    inner = evaluations = outer = 0
    converged = False
    while outer < settings.max_outer_iterations and not converged:
        report(progress, outer / settings.max_outer_iterations, f"optimizing fluence: iteration {outer + 1}")
        outer += 1
        frozen = [(name, objective.frozen(doses[name])) for name, objective in terms]
        frozen_objective = partial(_value_and_gradient, influence=influence, terms=frozen)
        run = quasi_newton.minimize(frozen_objective, weights, settings.inner_iterations)
        change = norm(run.x - weights) / max(norm(weights), 1e-300)
        converged = change < settings.relative_change_tolerance
        weights = run.x
        inner += run.iterations
        evaluations += run.evaluations
        doses = _doses_by_structure(influence, names, weights)[1]
        history.append(_objective_value(terms, doses))
    report(progress, 1.0, "fluence optimized")

    factor = 1.0
    if settings.normalize_percent is not None:
        target_dose = _target_dose_gy(influence, target, weights)
        factor = _normalization_factor(target_dose, settings.normalize_percent, case.prescription_gy)
        weights = weights * factor
    return OptimizationResult(
        weights=weights,
        dose_gy=influence.full_dose_gy(weights),
        dose_grid=dose_grid,
        objective_history=tuple(history),
        outer_iterations=outer,
        inner_iterations=inner,
        function_evaluations=evaluations,
        time_s=time.perf_counter() - start,
        converged=converged,
        normalization_factor=factor,
    )


def uniform_fluence(matrix: InfluenceInput, dose_grid: Grid, case: Case) -> np.ndarray:
    """Forward planning: equal beamlet weights, scaled so that the target's mean dose is the prescription."""
    target = case.targets[0].name
    influence = _prepared(matrix, dose_grid, case, [target])
    mean_gy = float(np.mean(_target_dose_gy(influence, target, np.ones(influence.beamlet_count))))
    if mean_gy <= 0:
        raise InputError(f"the beams deliver no dose to target '{target}'")
    return np.full(influence.beamlet_count, case.prescription_gy / mean_gy)
