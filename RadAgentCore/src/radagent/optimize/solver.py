"""Fluence optimization (METHOD §3): minimize Σ objectives(A·x) over beamlet weights x ≥ 0.

Cold start: a uniform fluence scaled so that the target's mean dose is the prescription. The plan is
finally rescaled so the target's D95 on the dose grid equals the prescription.

Objectives that are fixed functions of the dose (squared under/overdose, mean, min/max, DVH, gEUD) make
one problem, solved by one projected L-BFGS run in the beamlet weights' natural scales (see
:func:`_beamlet_scales`) until the last ten steps together lowered f by less than 0.1 % (matRad's IPOPT
settings accept less than 0.1 % in each of three successive steps), the projected gradient fell to
1e-5 of its start, or after 500 steps. On TG-119's 5-beam C-shape that stops after about 150 steps,
0.7 % above the optimum; running on to it (610 steps) moves the target's and the core's D10 at
D95 = p by less than 0.1 Gy. Normal-tissue voxels that cannot reach their overdose limit are left out
of the products, exactly (:class:`_UnionDose`).

The TPP terms' 1/|Ω⁺| jumps with the dose (objectives.py), so with them each outer iteration freezes it
at the current dose and takes a bounded number of projected L-BFGS steps on the result, warm-started
from the current x and keeping the curvature memory. That loop stops when ‖Δx‖/‖x‖ falls below 5e-3 or
after 40 outer iterations (the sources' rule). Five inner steps per outer iteration (our choice): on the
prostate phantom at 5 mm, random TPPs reach objective values within 1–3 % of a 200-step run, in half
the time of ten steps, which keeps a TPP-environment step within its budget when the outer rule runs
all 40 iterations. This loop works in the weights themselves: scaled, it reached objectives about 1 %
lower for random TPPs but took up to a quarter longer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from numba import njit
from scipy import sparse

from radagent.dose.influence import StructureInfluence
from radagent.errors import InputError
from radagent.evaluate.dvh import normalization_factor
from radagent.geometry import Grid
from radagent.optimize.objectives import Objective, SquaredUnderdose
from radagent.optimize.quasi_newton import InnerRun, ProjectedLbfgs, ValueAndGradient
from radagent.optimize.tpp import COVERAGE_WEIGHT, TPPs, tpp_oar_names, tpp_objectives
from radagent.optimize.vectors import norm
from radagent.progress import ProgressCallback, report

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["OptimizationResult", "OptimizerSettings", "optimize_fluence", "uniform_fluence"]

InfluenceInput = sparse.sparray | sparse.spmatrix | StructureInfluence

_DECREASE_WINDOW = 10  # objective_tolerance bounds the decrease over this many steps
_BOUND_MARGIN = 1.0 + 1e-9  # relative margin on the bound that lets _UnionDose skip a row
_FULL_PRODUCT_SHARE = 0.8  # _UnionDose renews its reference when the rows to compute hold more entries


@dataclass(frozen=True)
class OptimizerSettings:
    """Iteration limits, stopping rules and normalization (METHOD §3 defaults; see the module notes)."""

    max_outer_iterations: int = 40  # with TPP terms: outer iterations, each refreezing 1/|Ω⁺|
    inner_iterations: int = 5  # projected L-BFGS iterations per outer iteration (see the module notes)
    relative_change_tolerance: float = 5e-3  # with TPP terms: stop when ‖Δx‖/‖x‖ is below this
    max_steps: int = 500  # without TPP terms: projected L-BFGS steps of the one run
    objective_tolerance: float = 1e-3  # without TPP terms: stop when 10 steps lower f by less than this·f
    gradient_tolerance: float = 1e-5  # without TPP terms: stop when ‖projected ∇f‖ falls below this·start
    lbfgs_memory: int = 10
    normalize_percent: float | None = 95.0  # rescale so target D(this %) = p; None keeps the optimum

    def __post_init__(self) -> None:
        if self.max_outer_iterations < 1 or self.inner_iterations < 1 or self.max_steps < 1:
            raise InputError("the optimizer's iteration and step limits must be at least 1")
        if self.relative_change_tolerance <= 0:
            raise InputError("the optimizer's convergence tolerance must be positive")
        if self.objective_tolerance < 0 or self.gradient_tolerance < 0:
            raise InputError("the optimizer's stopping tolerances must not be negative")


DEFAULT_SETTINGS = OptimizerSettings()


@dataclass(frozen=True, eq=False)
class OptimizationResult:
    """Beamlet weights, the dose on the dose grid (Gy, flat ``[k, j, i]``) and how the optimizer got there."""

    weights: np.ndarray
    dose_gy: np.ndarray
    dose_grid: Grid
    objective_history: tuple[float, ...]  # f at the cold start and after each outer iteration (unnormalized)
    outer_iterations: int  # 1 without TPP terms: one run to convergence
    inner_iterations: int
    function_evaluations: int
    time_s: float
    converged: bool
    normalization_factor: float

    @property
    def dose_volume_gy(self) -> np.ndarray:
        """The dose as a ``[k, j, i]`` volume on the dose grid."""
        return self.dose_gy.reshape(self.dose_grid.shape)


@dataclass
class _Run:
    """Where the iterations ended and what they cost."""

    weights: np.ndarray
    history: list[float]
    outer: int = 0
    inner: int = 0
    evaluations: int = 0
    converged: bool = False


def _inert_levels(influence: StructureInfluence, terms: Sequence[tuple[str, Objective]]) -> np.ndarray:
    """Per union row, the dose up to which every objective on it is inert: −∞ where one needs the exact
    dose, +∞ where none looks."""
    levels = np.full(influence.rows.size, np.inf)
    for name, objective in terms:
        level = objective.inert_below_gy
        position = influence.positions[name]
        levels[position] = np.minimum(levels[position], -np.inf if level is None else level)
    return levels


@njit(cache=True)
def _bound_kernel(  # pragma: no cover - compiled
    weights, reference_weights, reference_dose, row_norms, row_l1_norms, row_entries, levels
):
    """The bound of _UnionDose on each row's dose at ``weights``, the rows it cannot keep at or below
    their inert level, and those rows' entry count."""
    squares = largest = 0.0
    for j in range(weights.size):
        change = max(weights[j] - reference_weights[j], 0.0)  # A ≥ 0: a lower weight cannot raise a dose
        squares += change * change
        largest = max(largest, change)
    length = np.sqrt(squares)
    bound = np.empty(reference_dose.size)
    positions = np.empty(reference_dose.size, dtype=np.int64)
    count = entries = 0
    for i in range(bound.size):
        bound[i] = reference_dose[i] + min(row_norms[i] * length, row_l1_norms[i] * largest)
        # The rounding of a computed dose (a few ulps) cannot carry it past a bound this much smaller.
        if bound[i] * _BOUND_MARGIN > levels[i]:
            positions[count] = i
            count += 1
            entries += row_entries[i]
    return bound, positions[:count], entries


@dataclass
class _UnionDose:
    """The union-row dose that the objectives see, computed only where they can feel it.

    Rows whose objectives all ignore doses up to some level (:attr:`Objective.inert_below_gy`: normal
    tissue below its overdose limit, OAR voxels below their TPP threshold) are skipped while a bound keeps
    them there: from the last full product d₀ = A·x₀, dᵢ(x) − d₀ᵢ ≤ min(‖Aᵢ‖₂·‖Δ‖₂, ‖Aᵢ‖₁·max Δ) with
    Δ = max(x − x₀, 0), since A ≥ 0 (a matrix with negative entries is never skipped). Skipped rows hold
    that bound in place of their dose, which their objectives read as no penalty, so values and
    gradients stay exact. A full product renews x₀ when the rows left to compute would hold more than
    80 % of the entries (a random-TPP step then computes a quarter fewer entries than with half, each
    bounded product costing its share). The latest result is remembered, so that the outer loop and the
    next inner run share one product at the same weights.
    """

    influence: StructureInfluence
    inert_levels: np.ndarray
    _weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    _dose: np.ndarray = field(default_factory=lambda: np.empty(0))
    _reference: tuple[np.ndarray, np.ndarray] | None = None  # (x₀, d₀)
    _skips: bool = field(init=False)

    def __post_init__(self) -> None:
        # Only for A ≥ 0 (every dose-influence matrix): the bound and its rounding margin rest on it.
        self._skips = bool(np.any(self.inert_levels > -np.inf)) and self.influence.nonnegative

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Union-row dose for beamlet ``weights``: exact on every row an objective needs."""
        if np.array_equal(weights, self._weights):
            return self._dose
        dose = self._bounded(weights)
        if dose is None:
            dose = self.influence.dose_gy(weights)
            self._reference = (weights.copy(), dose)
        self._weights, self._dose = weights.copy(), dose
        return dose

    def _bounded(self, weights: np.ndarray) -> np.ndarray | None:
        """The dose with the rows that the bound keeps inert skipped; None when a full product is due."""
        if self._reference is None or not self._skips:
            return None
        reference_weights, reference_dose = self._reference
        influence = self.influence
        bound, positions, entries = _bound_kernel(
            weights,
            reference_weights,
            reference_dose,
            influence.row_norms,
            influence.row_l1_norms,
            influence.row_entries,
            self.inert_levels,
        )
        if entries > _FULL_PRODUCT_SHARE * influence.entry_count:
            return None
        self.influence.fill_dose_gy(weights, positions, bound)
        return bound

    def by_structure(self, weights: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Each named structure's voxel doses for beamlet ``weights``."""
        dose = self(weights)
        return {name: dose[self.influence.positions[name]] for name in names}


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


def _objective_value(terms: Sequence[tuple[str, Objective]], doses: dict[str, np.ndarray]) -> float:
    """Σ objectives for the structures' voxel doses (the true objective, nothing frozen)."""
    return float(sum(objective.value_and_gradient(doses[name])[0] for name, objective in terms))


def _value_and_gradient(
    weights: np.ndarray, union_dose: _UnionDose, terms: Sequence[tuple[str, Objective]]
) -> tuple[float, np.ndarray]:
    """Σ objectives and its gradient with respect to the beamlet weights (Aᵀ·∂f/∂d)."""
    dose = union_dose(weights)
    positions = union_dose.influence.positions
    gradient_rows = np.zeros(dose.size)
    value = 0.0
    doses: dict[str, np.ndarray] = {}  # each structure's doses gathered once, however many terms it has
    for name, objective in terms:
        if name not in doses:
            doses[name] = dose[positions[name]]
        term_value, term_gradient = objective.value_and_gradient(doses[name])
        value += term_value
        gradient_rows[positions[name]] += term_gradient
    return value, union_dose.influence.backproject(gradient_rows)


def _in_scaled_weights(
    scaled_weights: np.ndarray, objective: ValueAndGradient, scales: np.ndarray
) -> tuple[float, np.ndarray]:
    """``objective`` in the variables u = x / scales: f(scales·u) and scales·∇f."""
    value, gradient = objective(scaled_weights * scales)
    return value, gradient * scales


def _beamlet_scales(
    union_dose: _UnionDose, terms: Sequence[tuple[str, Objective]], weights: np.ndarray
) -> np.ndarray:
    """The beamlet weights' natural scales: 1/√(Σᵢ cᵢ·Aᵢⱼ²), cᵢ the curvature voxel i adds on the penalized
    side of its objectives (at ``weights`` where it depends on the dose).

    In these units the Gauss–Newton Hessian with every voxel penalized has a unit diagonal. Counting
    only the voxels penalized at the cold start instead halved the speed on TG-119's 9-beam plan.
    Beamlets that no curved voxel sees get the largest scale among the others.
    """
    dose = union_dose(weights)
    positions = union_dose.influence.positions
    row_curvature = np.zeros(dose.size)
    for name, objective in terms:
        row_curvature[positions[name]] += objective.curvature(dose[positions[name]])
    diagonal = union_dose.influence.column_curvature(row_curvature)
    curved = diagonal > 0
    if not np.any(curved):
        return np.ones(diagonal.size)
    return 1.0 / np.sqrt(np.where(curved, diagonal, np.min(diagonal[curved])))


def _target_dose_gy(influence: StructureInfluence, target: str, weights: np.ndarray) -> np.ndarray:
    """The target voxels' doses on the dose grid."""
    return influence.dose_gy(weights)[influence.positions[target]]


def _check_objectives(objectives: Sequence[Objective] | None, tpps: TPPs | None) -> None:
    """Reject ambiguous or empty objective specifications."""
    if objectives is not None and tpps is not None:
        raise InputError("give the optimizer either objectives or TPPs, not both")
    if objectives is not None and not objectives:
        raise InputError("the optimizer needs at least one objective")


def _settled(values: Sequence[float], run: InnerRun, start: InnerRun, settings: OptimizerSettings) -> bool:
    """The one-run stopping rule: a small projected gradient, or a small decrease over the last steps."""
    if run.projected_gradient_norm <= settings.gradient_tolerance * start.projected_gradient_norm:
        return True
    if len(values) <= _DECREASE_WINDOW:
        return False
    return values[-1 - _DECREASE_WINDOW] - values[-1] <= settings.objective_tolerance * abs(values[-1])


def _one_run(
    union_dose: _UnionDose,
    terms: Sequence[tuple[str, Objective]],
    weights: np.ndarray,
    settings: OptimizerSettings,
    progress: ProgressCallback | None,
) -> _Run:
    """Objectives without jumps: one projected L-BFGS run from ``weights`` until the stopping rule holds."""
    scales = _beamlet_scales(union_dose, terms, weights)
    objective = partial(_value_and_gradient, union_dose=union_dose, terms=terms)
    scaled = partial(_in_scaled_weights, objective=objective, scales=scales)
    steps = ProjectedLbfgs(settings.lbfgs_memory).iterate(scaled, weights / scales)
    start = run = next(steps)
    values = [start.value]
    converged = True  # the iteration ends by itself only at a stationary point
    for run in steps:
        values.append(run.value)
        report(progress, run.iterations / settings.max_steps, f"optimizing fluence: step {run.iterations}")
        if _settled(values, run, start, settings):
            break
        if run.iterations >= settings.max_steps:
            converged = False
            break
    return _Run(run.x * scales, [values[0], run.value], 1, run.iterations, run.evaluations, converged)


def _outer_iterations(
    union_dose: _UnionDose,
    terms: Sequence[tuple[str, Objective]],
    weights: np.ndarray,
    settings: OptimizerSettings,
    progress: ProgressCallback | None,
) -> _Run:
    """Objectives with jumps (TPP terms): refreeze them at each outer iteration's dose (METHOD §3)."""
    names = list(dict.fromkeys(n for n, _ in terms))
    doses = union_dose.by_structure(weights, names)
    result = _Run(weights, [_objective_value(terms, doses)])
    quasi_newton = ProjectedLbfgs(settings.lbfgs_memory)
    while result.outer < settings.max_outer_iterations and not result.converged:
        report(
            progress,
            result.outer / settings.max_outer_iterations,
            f"optimizing fluence: iteration {result.outer + 1}",
        )
        result.outer += 1
        frozen = [(name, objective.frozen(doses[name])) for name, objective in terms]
        frozen_objective = partial(_value_and_gradient, union_dose=union_dose, terms=frozen)
        run = quasi_newton.minimize(frozen_objective, result.weights, settings.inner_iterations)
        change = norm(run.x - result.weights) / max(norm(result.weights), 1e-300)
        result.converged = change < settings.relative_change_tolerance
        result.weights = run.x
        result.inner += run.iterations
        result.evaluations += run.evaluations
        doses = union_dose.by_structure(result.weights, names)
        result.history.append(_objective_value(terms, doses))
    return result


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
    the case's primary (highest-level) target; lower dose levels get the coverage term of the TPP
    objective too. Deterministic for given inputs; cancellable through ``progress``.
    """
    start = time.perf_counter()
    _check_objectives(objectives, tpps)
    target = case.primary_target.name
    if objectives is None:
        chosen = tpps if tpps is not None else TPPs.default(tpp_oar_names(case))
        objectives = tpp_objectives(chosen, target, case.prescription_gy)
        lower = [t for t in case.targets if t.name != target]  # their coverage, as the primary's (β)
        objectives += tuple(
            SquaredUnderdose(t.name, case.target_level_gy(t.name), COVERAGE_WEIGHT) for t in lower
        )
    terms = _canonical(case, objectives)
    influence = _prepared(matrix, dose_grid, case, list(dict.fromkeys([target, *(n for n, _ in terms)])))

    unit_dose = _target_dose_gy(influence, target, np.ones(influence.beamlet_count))
    if not np.any(unit_dose > 0):
        raise InputError(f"the beams deliver no dose to target '{target}'")
    weights = np.full(influence.beamlet_count, case.prescription_gy / float(np.mean(unit_dose)))
    union_dose = _UnionDose(influence, _inert_levels(influence, terms))
    if any(objective.needs_outer_iterations for _, objective in terms):
        run = _outer_iterations(union_dose, terms, weights, settings, progress)
    else:
        run = _one_run(union_dose, terms, weights, settings, progress)
    report(progress, 1.0, "fluence optimized")

    weights, factor = run.weights, 1.0
    if settings.normalize_percent is not None:
        target_dose = _target_dose_gy(influence, target, weights)
        factor = normalization_factor(
            target_dose, case.prescription_gy, settings.normalize_percent, f"target '{target}'"
        )
        weights = weights * factor
    return OptimizationResult(
        weights=weights,
        dose_gy=influence.full_dose_gy(weights),
        dose_grid=dose_grid,
        objective_history=tuple(run.history),
        outer_iterations=run.outer,
        inner_iterations=run.inner,
        function_evaluations=run.evaluations,
        time_s=time.perf_counter() - start,
        converged=run.converged,
        normalization_factor=factor,
    )


def uniform_fluence(matrix: InfluenceInput, dose_grid: Grid, case: Case) -> np.ndarray:
    """Forward planning: equal beamlet weights, scaled so that the primary target's mean dose is the
    prescription."""
    target = case.primary_target.name
    influence = _prepared(matrix, dose_grid, case, [target])
    unit_dose = _target_dose_gy(influence, target, np.ones(influence.beamlet_count))
    scale = normalization_factor(unit_dose, case.prescription_gy, None, f"target '{target}'")
    return np.full(influence.beamlet_count, scale)
