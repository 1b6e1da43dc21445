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
lower for random TPPs but took up to a quarter longer. The TPP terms have compiled forms
(:meth:`Objective.compiled_term`), so each outer iteration (freezing, about six inner evaluations that
drive the L-BFGS state machine of quasi_newton.py, f) is one compiled call, operation for operation
what the Python calls of the objectives compute; objectives without a compiled form are called from
Python.
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

from radagent.dose.influence import (
    TRANSPOSE_PARTS,
    StructureInfluence,
    row_sums_kernel,
    transpose_product_kernel,
)
from radagent.errors import InputError
from radagent.evaluate.dvh import normalization_factor
from radagent.geometry import Grid
from radagent.optimize.objectives import (
    Objective,
    SquaredUnderdose,
    compiled_term_value_and_gradient,
    frozen_parameters,
)
from radagent.optimize.quasi_newton import (
    EMITTED,
    FINISHED,
    InnerRun,
    LbfgsState,
    ProjectedLbfgs,
    ValueAndGradient,
    advance,
    restart,
    search,
    steps_taken,
    trial_point,
)
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


_MEMO, _REFERENCE = 0, 1  # rows of _UnionDose's state: the latest result, the last full product
_HAS_MEMO, _HAS_REFERENCE, _SKIPS, _BOUNDED_PRODUCTS = range(4)  # _UnionDose's flags and counter


@njit(cache=True)
def _union_dose_kernel(weights, state_weights, state_doses, flags, matrix, bounds):  # pragma: no cover
    """The union-row dose of :class:`_UnionDose` at ``weights``, its state (arrays) updated in place: one
    compiled home for the memo and the bound, so that Python and compiled callers share them."""
    indptr, indices, data = matrix
    row_norms, row_l1_norms, row_entries, levels, full_entries_limit = bounds
    if flags[_HAS_MEMO] and np.all(weights == state_weights[_MEMO]):
        return state_doses[_MEMO].copy()
    dose = np.empty(0)
    bounded = False
    if flags[_HAS_REFERENCE] and flags[_SKIPS]:
        bound, positions, entries = _bound_kernel(
            weights,
            state_weights[_REFERENCE],
            state_doses[_REFERENCE],
            row_norms,
            row_l1_norms,
            row_entries,
            levels,
        )
        if not entries > full_entries_limit:
            row_sums_kernel(indptr, indices, data, weights, positions, bound)
            dose, bounded = bound, True
            flags[_BOUNDED_PRODUCTS] += 1
    if not bounded:
        dose = np.empty(state_doses.shape[1])
        row_sums_kernel(indptr, indices, data, weights, np.arange(dose.size), dose)
        state_weights[_REFERENCE] = weights
        state_doses[_REFERENCE] = dose
        flags[_HAS_REFERENCE] = 1
    state_weights[_MEMO] = weights
    state_doses[_MEMO] = dose
    flags[_HAS_MEMO] = 1
    return dose


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
    next inner run share one product at the same weights. The state lives in arrays that compiled
    callers update through :func:`_union_dose_kernel` (``kernel_arguments``) as this class does.
    """

    influence: StructureInfluence
    inert_levels: np.ndarray
    # (state weights, state doses, flags, CSR arrays, (row norms, row 1-norms, row entries, inert levels,
    # the entry count above which a full product is taken)): the arguments of _union_dose_kernel
    kernel_arguments: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        influence = self.influence
        # Only for A ≥ 0 (every dose-influence matrix): the bound and its rounding margin rest on it.
        skips = bool(np.any(self.inert_levels > -np.inf)) and influence.nonnegative
        flags = np.zeros(4, dtype=np.int64)
        flags[_SKIPS] = skips
        bounds = (
            influence.row_norms,
            influence.row_l1_norms,
            influence.row_entries,
            np.ascontiguousarray(self.inert_levels, dtype=np.float64),
            _FULL_PRODUCT_SHARE * influence.entry_count,
        )
        self.kernel_arguments = (
            np.zeros((2, influence.beamlet_count)),
            np.zeros((2, influence.rows.size)),
            flags,
            influence.csr,
            bounds,
        )

    @property
    def bounded_products(self) -> int:
        """How many products so far skipped rows under the bound."""
        return int(self.kernel_arguments[2][_BOUNDED_PRODUCTS])

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Union-row dose for beamlet ``weights``: exact on every row an objective needs."""
        vector = np.ascontiguousarray(weights, dtype=np.float64)
        if vector.shape != (self.influence.beamlet_count,):
            raise ValueError(f"expected {self.influence.beamlet_count} beamlet weights, got {vector.shape}")
        return _union_dose_kernel(vector, *self.kernel_arguments)

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


@dataclass(frozen=True)
class _CompiledTerms:
    """Objectives in their compiled form (:meth:`Objective.compiled_term`), as arrays: each term's kind,
    parameters and count, and its structure's union positions at ``positions[bounds[t]:bounds[t + 1]]``."""

    kinds: np.ndarray
    parameters: np.ndarray
    counts: np.ndarray
    positions: np.ndarray
    bounds: np.ndarray

    @classmethod
    def of(
        cls, terms: Sequence[tuple[str, Objective]], influence: StructureInfluence
    ) -> _CompiledTerms | None:
        """The terms' compiled form, or None when one of them has none."""
        compiled = []
        for name, objective in terms:
            term = objective.compiled_term(influence.positions[name].size)
            if term is None:
                return None
            compiled.append(term)
        parameters = np.zeros((len(compiled), 3))
        for row, term in zip(parameters, compiled, strict=True):
            row[: len(term.parameters)] = term.parameters
        structures = [np.asarray(influence.positions[name], dtype=np.int64) for name, _ in terms]
        return cls(
            np.array([term.kind for term in compiled], dtype=np.int64),
            parameters,
            np.array([term.count for term in compiled], dtype=np.int64),
            np.concatenate(structures) if structures else np.zeros(0, dtype=np.int64),
            np.cumsum([0] + [s.size for s in structures]).astype(np.int64),
        )

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays in the order the compiled callers unpack them."""
        return (self.kinds, self.parameters, self.counts, self.positions, self.bounds)


@njit(cache=True)
def _compiled_value_and_gradient(weights, union, terms, columns):  # pragma: no cover - compiled
    """:func:`_value_and_gradient` for terms in compiled form (``union``: the kernel arguments of a
    :class:`_UnionDose`; ``terms``: :attr:`_CompiledTerms.arrays`), operation for operation."""
    dose = _union_dose_kernel(weights, *union)
    kinds, parameters, counts, positions, bounds = terms
    gradient_rows = np.zeros(dose.size)
    value = 0.0
    for term in range(kinds.size):
        rows = positions[bounds[term] : bounds[term + 1]]
        term_value, term_gradient = compiled_term_value_and_gradient(
            kinds[term], parameters[term], counts[term], dose[rows]
        )
        value += term_value
        for i in range(rows.size):
            gradient_rows[rows[i]] += term_gradient[i]
    indptr, indices, data = union[3]
    return value, transpose_product_kernel(
        indptr, indices, data, gradient_rows, False, TRANSPOSE_PARTS, columns
    )


@njit(cache=True)
def _compiled_minimize(lbfgs, iterations, union, terms, columns):  # pragma: no cover - compiled
    """:meth:`ProjectedLbfgs.minimize` on compiled terms, driving the method's state machine (``lbfgs``:
    :attr:`LbfgsState.arrays`) without leaving compiled code."""
    vectors, scalars, counters, s_rows, y_rows, pair_scalars, order, held = lbfgs
    while True:
        value, gradient = _compiled_value_and_gradient(trial_point(vectors).copy(), union, terms, columns)
        result = advance(
            vectors, scalars, counters, s_rows, y_rows, pair_scalars, order, held, value, gradient
        )
        if result & FINISHED or (result & EMITTED and steps_taken(counters) >= iterations):
            return
        if result & EMITTED:
            search(vectors, scalars, counters, s_rows, y_rows, pair_scalars, order, held)


@njit(cache=True)
def _compiled_outer_step(lbfgs, iterations, union, terms, weights, columns):  # pragma: no cover - compiled
    """One outer iteration on compiled terms: freeze them at the dose of ``weights`` and run at most
    ``iterations`` inner steps from there, the memory kept in ``lbfgs``."""
    vectors, scalars, counters = lbfgs[0], lbfgs[1], lbfgs[2]
    dose = _union_dose_kernel(weights, *union)
    kinds, parameters, counts, positions, bounds = terms
    frozen = np.empty_like(parameters)
    for term in range(kinds.size):
        rows = positions[bounds[term] : bounds[term + 1]]
        frozen[term] = frozen_parameters(kinds[term], parameters[term], counts[term], dose[rows])
    restart(vectors, scalars, counters, weights)
    _compiled_minimize(lbfgs, iterations, union, (kinds, frozen, counts, positions, bounds), columns)


@njit(cache=True)
def _compiled_objective_value(weights, union, terms):  # pragma: no cover - compiled
    """:func:`_objective_value` for terms in compiled form."""
    dose = _union_dose_kernel(weights, *union)
    kinds, parameters, counts, positions, bounds = terms
    value = 0.0
    for term in range(kinds.size):
        rows = positions[bounds[term] : bounds[term + 1]]
        value += compiled_term_value_and_gradient(kinds[term], parameters[term], counts[term], dose[rows])[0]
    return value


@dataclass
class _OuterSteps:
    """The outer TPP loop's two operations, f at some weights and one outer iteration (freeze the terms
    at their dose, then a bounded inner run), through Python calls of the objectives."""

    union_dose: _UnionDose
    terms: Sequence[tuple[str, Objective]]
    quasi_newton: ProjectedLbfgs

    def value(self, weights: np.ndarray) -> float:
        """f at ``weights``, nothing frozen."""
        names = list(dict.fromkeys(n for n, _ in self.terms))
        return _objective_value(self.terms, self.union_dose.by_structure(weights, names))

    def iteration(self, weights: np.ndarray, iterations: int) -> InnerRun:
        """The terms frozen at the dose of ``weights``, then at most ``iterations`` inner steps."""
        names = list(dict.fromkeys(n for n, _ in self.terms))
        doses = self.union_dose.by_structure(weights, names)
        frozen = [(name, objective.frozen(doses[name])) for name, objective in self.terms]
        objective = partial(_value_and_gradient, union_dose=self.union_dose, terms=frozen)
        return self.quasi_newton.minimize(objective, weights, iterations)


@dataclass
class _CompiledOuterSteps(_OuterSteps):
    """:class:`_OuterSteps` in compiled code, for terms that all have compiled forms (the TPP terms):
    one call per outer iteration, operation for operation the same."""

    compiled: _CompiledTerms
    _state: LbfgsState | None = None

    def value(self, weights: np.ndarray) -> float:
        return float(
            _compiled_objective_value(weights, self.union_dose.kernel_arguments, self.compiled.arrays)
        )

    def iteration(self, weights: np.ndarray, iterations: int) -> InnerRun:
        if self._state is None:
            self._state = self.quasi_newton.start(weights)
        state = self._state
        union, columns = self.union_dose.kernel_arguments, self.union_dose.influence.beamlet_count
        _compiled_outer_step(state.arrays, iterations, union, self.compiled.arrays, weights, columns)
        self.quasi_newton.keep(state)
        return state.run()


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
    """Objectives with jumps (TPP terms): refreeze them at each outer iteration's dose (METHOD §3), in
    compiled code when every term has a compiled form."""
    quasi_newton = ProjectedLbfgs(settings.lbfgs_memory)
    compiled = _CompiledTerms.of(terms, union_dose.influence)
    if compiled is None:
        steps = _OuterSteps(union_dose, terms, quasi_newton)
    else:
        steps = _CompiledOuterSteps(union_dose, terms, quasi_newton, compiled)
    result = _Run(weights, [steps.value(weights)])
    while result.outer < settings.max_outer_iterations and not result.converged:
        report(
            progress,
            result.outer / settings.max_outer_iterations,
            f"optimizing fluence: iteration {result.outer + 1}",
        )
        result.outer += 1
        run = steps.iteration(result.weights, settings.inner_iterations)
        change = norm(run.x - result.weights) / max(norm(result.weights), 1e-300)
        result.converged = change < settings.relative_change_tolerance
        result.weights = run.x
        result.inner += run.iterations
        result.evaluations += run.evaluations
        result.history.append(steps.value(result.weights))
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
