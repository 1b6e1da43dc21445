"""The fluence optimizer on a small synthetic phantom (optimize/solver.py, influence.py, quasi_newton.py)."""

from dataclasses import dataclass
from itertools import pairwise

import numba
import numpy as np
import pytest
from scipy import sparse

from radagent.errors import InputError
from radagent.evaluate.dvh import StructureDoses
from radagent.evaluate.scorecard import PROSTATE
from radagent.geometry import Grid, resample_mask
from radagent.optimize import (
    MaxDvh,
    OptimizerSettings,
    SquaredOverdose,
    SquaredUnderdose,
    StructureInfluence,
    TPPs,
    optimize_fluence,
    uniform_fluence,
)
from radagent.optimize.quasi_newton import ProjectedLbfgs
from radagent.optimize.solver import _inert_levels, _UnionDose
from radagent.patient import Case, Protocol, Structure
from radagent.progress import Cancelled

P_GY = 79.2


def sphere(shape, centre, radius):
    k, j, i = np.indices(shape)
    return (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= radius**2


def phantom(extra=()) -> Case:
    """A 9×20×20 CT (4 mm): cylindrical body, spherical PTV, bladder in front and rectum behind it."""
    shape = (9, 20, 20)
    _, j, i = np.indices(shape)
    body = (j - 9.5) ** 2 + (i - 9.5) ** 2 <= 9.0**2
    ptv = sphere(shape, (4, 9.5, 9.5), 3.2)
    bladder = sphere(shape, (4, 4.5, 9.5), 2.6) & ~ptv
    rectum = sphere(shape, (4, 14.0, 9.5), 2.2) & ~ptv
    structures = (
        Structure("PTV", "target", ptv),
        Structure("Bladder", "oar", bladder),
        Structure("Rectum", "oar", rectum),
        Structure("Body", "body", body),
        *extra,
    )
    grid = Grid.from_spacing(shape, (4.0, 4.0, 4.0))
    return Case("phantom", np.where(body, 0.0, -1000.0), grid, structures, Protocol(P_GY, 44, PROSTATE))


def pencil_beams(case: Case, dose_grid: Grid, beams: int = 5, bixel_mm: float = 6.0) -> sparse.csc_matrix:
    """A made-up influence matrix: Gaussian pencils attenuated with depth, from ``beams`` directions."""
    centres = dose_grid.voxel_centers_ras() - np.asarray(case.isocenter_ras)
    columns = []
    for beam in range(beams):
        angle = 2 * np.pi * beam / beams
        depth = centres @ [np.sin(angle), np.cos(angle), 0.0] + 60.0
        across, height = centres @ [np.cos(angle), -np.sin(angle), 0.0], centres[:, 2]
        for u in np.arange(-15.0, 15.1, bixel_mm):
            for v in np.arange(-12.0, 12.1, bixel_mm):
                pencil = np.exp(-((across - u) ** 2 + (height - v) ** 2) / (2 * 5.0**2) - 0.005 * depth)
                columns.append(np.where(pencil > 1e-3, pencil, 0.0))
    return sparse.csc_matrix(np.stack(columns, axis=1).astype(np.float32))


@pytest.fixture(scope="module")
def problem():
    case = phantom()
    dose_grid = case.grid.with_spacing(6.0)
    return case, dose_grid, pencil_beams(case, dose_grid)


SMOOTH_OBJECTIVES = [
    SquaredUnderdose("PTV", P_GY, 10.0),
    SquaredOverdose("PTV", 1.02 * P_GY, 10.0),
    SquaredOverdose("Rectum", 0.5 * P_GY, 3.0),
    SquaredOverdose("Bladder", 0.6 * P_GY, 1.0),
    SquaredOverdose("Body", 0.4 * P_GY, 0.5),
]
UNNORMALIZED = OptimizerSettings(normalize_percent=None)
TO_THE_END = OptimizerSettings(normalize_percent=None, objective_tolerance=0.0, max_steps=5000)


@dataclass(frozen=True)
class EveryVoxelOverdose(SquaredOverdose):
    """SquaredOverdose without its inert level, so the optimizer computes every voxel's dose."""

    @property
    def inert_below_gy(self) -> None:
        return None


def dense_value_and_gradient(case, dose_grid, matrix, objectives, weights):
    """Σ objectives and ∂f/∂x with a dense matrix and the structures' masks: the slow, obvious reference."""
    dense = matrix.toarray().astype(np.float64)
    dose = dense @ weights
    value, row_gradient = 0.0, np.zeros(dose.size)
    for objective in objectives:
        mask = resample_mask(case.structure(objective.structure).mask, case.grid, dose_grid).ravel()
        term_value, term_gradient = objective.value_and_gradient(dose[mask])
        value += term_value
        row_gradient[mask] += term_gradient
    return value, dense.T @ row_gradient


def target_d95(case, dose_grid, result):
    mask = resample_mask(case.structure("PTV").mask, case.grid, dose_grid).ravel()
    return StructureDoses("PTV", result.dose_gy[mask], dose_grid.voxel_volume_cc).dose_at_percent_gy(95)


def test_structure_influence_products_match_scipy(problem):
    case, dose_grid, matrix = problem
    influence = StructureInfluence.build(matrix, dose_grid, case, ["PTV", "Rectum"])
    rows = influence.rows
    assert set(influence.names) == {"PTV", "Rectum"}
    rng = np.random.default_rng(0)
    weights, row_gradient = rng.uniform(0, 1, matrix.shape[1]), rng.normal(size=rows.size)
    reference = matrix.toarray().astype(np.float64)[rows]
    np.testing.assert_allclose(influence.dose_gy(weights), reference @ weights, rtol=1e-6)
    np.testing.assert_allclose(
        influence.backproject(row_gradient), reference.T @ row_gradient, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(influence.full_dose_gy(weights), matrix.toarray() @ weights, rtol=1e-5)
    ptv_rows = rows[influence.positions["PTV"]]
    assert np.all(np.diff(ptv_rows) > 0) and influence.beamlet_count == matrix.shape[1]
    some = np.flatnonzero(rng.uniform(size=rows.size) < 0.3)
    partial = np.full(rows.size, -1.0)
    influence.fill_dose_gy(weights, some, partial)
    np.testing.assert_array_equal(partial[some], influence.dose_gy(weights)[some])
    assert np.all(np.delete(partial, some) == -1.0)
    np.testing.assert_allclose(influence.row_norms, np.linalg.norm(reference, axis=1), rtol=1e-6)
    np.testing.assert_allclose(influence.row_l1_norms, np.abs(reference).sum(axis=1), rtol=1e-6)
    assert influence.nonnegative
    assert influence.entry_count == int(np.count_nonzero(reference)) == influence.row_entries.sum()
    curvature = rng.uniform(0, 1, rows.size) * (rng.uniform(size=rows.size) < 0.5)
    np.testing.assert_allclose(influence.column_curvature(curvature), (reference**2).T @ curvature, rtol=1e-6)


def test_row_sums_follow_entry_order_exactly_for_any_rows(problem):
    """A·x sums each row as one running float64 total in entry order (a plain loop, computed here
    entry by entry), whatever rows are asked for and in whatever order: the four-rows-at-a-time
    kernel changes only speed, never a bit of the result."""
    case, dose_grid, matrix = problem
    influence = StructureInfluence.build(matrix, dose_grid, case, ["PTV", "Rectum", "Body"])
    indptr, indices, data = influence._csr
    rng = np.random.default_rng(11)
    weights = rng.uniform(0, 2, matrix.shape[1])
    expected = np.zeros(influence.rows.size)
    for row in range(influence.rows.size):
        total = 0.0
        for position in range(indptr[row], indptr[row + 1]):
            total += float(data[position]) * float(weights[indices[position]])
        expected[row] = total
    for positions in (
        np.arange(influence.rows.size),
        rng.permutation(influence.rows.size)[: influence.rows.size // 3 + 2],  # not a multiple of 4
        np.array([5]),
    ):
        out = np.full(influence.rows.size, -1.0)
        influence.fill_dose_gy(weights, positions, out)
        np.testing.assert_array_equal(out[positions], expected[positions])
        assert np.all(np.delete(out, positions) == -1.0)


def test_tpp_rows_below_their_threshold_are_skipped_exactly(problem, monkeypatch):
    """Skipping OAR rows that the bound keeps below their TPP threshold gives the very same optimization
    (weights and objective history, bit for bit) as computing every row at every evaluation."""
    import radagent.optimize.solver as solver

    case, dose_grid, matrix = problem
    made = []

    class Recorded(solver._UnionDose):
        def __post_init__(self):
            super().__post_init__()
            made.append(self)

    for seed in (4, 5):
        tpps = TPPs.random(("Bladder", "Rectum"), np.random.default_rng(seed))
        with monkeypatch.context() as patch:
            patch.setattr(solver, "_UnionDose", Recorded)
            skipping = optimize_fluence(matrix, dose_grid, case, tpps=tpps)
        assert made.pop().bounded_products > 0, "no product skipped a row: the test would prove nothing"
        with monkeypatch.context() as patch:
            patch.setattr(solver, "_FULL_PRODUCT_SHARE", 0.0)  # every product a full one
            computing = optimize_fluence(matrix, dose_grid, case, tpps=tpps)
        np.testing.assert_array_equal(skipping.weights, computing.weights)
        assert skipping.objective_history == computing.objective_history


def test_products_do_not_depend_on_the_thread_count(problem):
    case, dose_grid, matrix = problem
    rng = np.random.default_rng(3)
    weights, row_gradient = rng.uniform(0, 1, matrix.shape[1]), None
    most = numba.config.NUMBA_NUM_THREADS
    results = []
    for threads in (1, most):
        numba.set_num_threads(threads)
        try:
            influence = StructureInfluence.build(matrix, dose_grid, case, ["PTV", "Body"])
            row_gradient = rng.normal(size=influence.rows.size) if row_gradient is None else row_gradient
            results.append((*influence._csr, influence.dose_gy(weights), influence.backproject(row_gradient)))
        finally:
            numba.set_num_threads(most)
    for single, many in zip(*results, strict=True):
        np.testing.assert_array_equal(single, many)


def test_bad_inputs_are_reported_in_planner_terms(problem):
    case, dose_grid, matrix = problem
    with pytest.raises(InputError, match="rows but the dose grid"):
        optimize_fluence(matrix[:-1], dose_grid, case)
    with pytest.raises(InputError, match="either objectives or TPPs"):
        optimize_fluence(
            matrix,
            dose_grid,
            case,
            objectives=[SquaredUnderdose("PTV", P_GY)],
            tpps=TPPs.default(("Bladder", "Rectum")),
        )
    with pytest.raises(InputError, match="no structure named 'Liver'"):
        optimize_fluence(matrix, dose_grid, case, objectives=[SquaredUnderdose("Liver", P_GY)])
    speck = np.zeros(case.grid.shape, bool)
    speck[0, 10, 1] = True  # one CT voxel, no dose-grid voxel centre inside it
    small = phantom((Structure("Urethra", "oar", speck),))
    with pytest.raises(InputError, match="segment 'Urethra' is empty after resampling to the dose grid"):
        optimize_fluence(matrix, dose_grid, small, objectives=[SquaredUnderdose("Urethra", P_GY)])


def test_tpp_optimization_lowers_the_objective_and_normalizes_d95(problem):
    case, dose_grid, matrix = problem
    result = optimize_fluence(matrix, dose_grid, case)
    history = result.objective_history
    assert history[-1] < 0.5 * history[0]
    assert np.all(result.weights >= 0)
    assert result.dose_gy.shape == (dose_grid.size,)
    assert result.dose_volume_gy.shape == dose_grid.shape
    assert target_d95(case, dose_grid, result) == pytest.approx(P_GY, rel=1e-6)  # float32 matrix
    assert 1 <= result.outer_iterations <= 40 and result.inner_iterations >= result.outer_iterations
    assert result.function_evaluations > result.outer_iterations and result.time_s > 0


def test_optimization_is_deterministic_and_reuses_prepared_rows(problem):
    case, dose_grid, matrix = problem
    tpps = TPPs.random(("Bladder", "Rectum"), np.random.default_rng(4))
    first = optimize_fluence(matrix, dose_grid, case, tpps=tpps)
    prepared = StructureInfluence.build(matrix, dose_grid, case, ["PTV", "Bladder", "Rectum"])
    second = optimize_fluence(prepared, dose_grid, case, tpps=tpps)
    np.testing.assert_array_equal(first.weights, second.weights)
    assert first.objective_history == second.objective_history
    with pytest.raises(InputError, match="lack structures: Body"):
        optimize_fluence(prepared, dose_grid, case, objectives=[SquaredUnderdose("Body", 1.0)])


def test_custom_objectives_take_one_run_within_its_step_limit(problem):
    case, dose_grid, matrix = problem
    objectives = [SquaredUnderdose("PTV", P_GY, weight=5.0), MaxDvh("rectum", 0.6 * P_GY, 0.2)]
    settings = OptimizerSettings(max_steps=12, normalize_percent=None)
    result = optimize_fluence(matrix, dose_grid, case, objectives=objectives, settings=settings)
    assert result.outer_iterations == 1 and result.inner_iterations <= 12
    assert result.normalization_factor == 1.0
    assert len(result.objective_history) == 2
    assert result.objective_history[-1] < result.objective_history[0]


def test_tpp_outer_iteration_limits(problem):
    case, dose_grid, matrix = problem
    settings = OptimizerSettings(max_outer_iterations=3, inner_iterations=5)
    result = optimize_fluence(matrix, dose_grid, case, settings=settings)
    assert result.outer_iterations <= 3 and result.inner_iterations <= 15
    assert len(result.objective_history) == result.outer_iterations + 1


def test_one_run_reaches_the_kkt_point(problem):
    case, dose_grid, matrix = problem
    result = optimize_fluence(matrix, dose_grid, case, objectives=SMOOTH_OBJECTIVES, settings=TO_THE_END)
    assert result.converged and result.outer_iterations == 1
    start = uniform_fluence(matrix, dose_grid, case)
    scale = np.max(np.abs(dense_value_and_gradient(case, dose_grid, matrix, SMOOTH_OBJECTIVES, start)[1]))
    value, gradient = dense_value_and_gradient(case, dose_grid, matrix, SMOOTH_OBJECTIVES, result.weights)
    free, held = result.weights > 0, result.weights == 0
    assert np.all(free | held) and np.any(held)
    # KKT for x ≥ 0: no slope along the free weights, none pointing into the bound at the held ones
    assert np.max(np.abs(gradient[free])) < 1e-4 * scale
    assert np.min(gradient[held]) > -1e-4 * scale
    assert value == pytest.approx(result.objective_history[-1], rel=1e-9)


def test_default_stopping_rule_ends_near_the_optimum_and_says_so(problem):
    case, dose_grid, matrix = problem
    optimum = optimize_fluence(matrix, dose_grid, case, objectives=SMOOTH_OBJECTIVES, settings=TO_THE_END)
    result = optimize_fluence(matrix, dose_grid, case, objectives=SMOOTH_OBJECTIVES, settings=UNNORMALIZED)
    assert result.converged and result.inner_iterations < optimum.inner_iterations
    assert result.objective_history[-1] < 1.02 * optimum.objective_history[-1]
    short = OptimizerSettings(max_steps=5, normalize_percent=None)
    cut = optimize_fluence(matrix, dose_grid, case, objectives=SMOOTH_OBJECTIVES, settings=short)
    assert not cut.converged and cut.inner_iterations == 5


def test_rows_below_an_inert_level_are_skipped_exactly(problem):
    case, dose_grid, matrix = problem
    influence = StructureInfluence.build(matrix, dose_grid, case, ["PTV", "Body"])
    level = 0.9 * P_GY  # most of the body is below it at the uniform start
    terms = [("PTV", SquaredUnderdose("PTV", P_GY)), ("Body", SquaredOverdose("Body", level))]
    union_dose = _UnionDose(influence, _inert_levels(influence, terms))
    weights = uniform_fluence(matrix, dose_grid, case)
    np.testing.assert_array_equal(union_dose(weights), influence.dose_gy(weights))  # the first is full
    nearby = weights * np.random.default_rng(8).uniform(0.99, 1.01, weights.size)
    dose, exact = union_dose(nearby), influence.dose_gy(nearby)
    skipped = dose != exact
    body = np.zeros(dose.size, bool)
    body[influence.positions["Body"]] = True
    assert np.any(skipped) and not np.any(skipped & ~body)
    assert np.all(exact[skipped] <= dose[skipped]) and np.all(dose[skipped] <= level)
    # the whole optimization is the same as with every voxel's dose computed
    skipping = [SquaredUnderdose("PTV", P_GY), SquaredOverdose("Body", 0.4 * P_GY, 0.5)]
    computing = [SquaredUnderdose("PTV", P_GY), EveryVoxelOverdose("Body", 0.4 * P_GY, 0.5)]
    runs = [
        optimize_fluence(matrix, dose_grid, case, objectives=o, settings=UNNORMALIZED)
        for o in (skipping, computing)
    ]
    np.testing.assert_allclose(runs[0].weights, runs[1].weights, rtol=1e-9, atol=1e-12)
    assert runs[0].inner_iterations == runs[1].inner_iterations


def test_progress_reports_and_cancels(problem):
    case, dose_grid, matrix = problem
    fractions = []
    optimize_fluence(matrix, dose_grid, case, progress=lambda f, m: fractions.append(f))
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    with pytest.raises(Cancelled):
        optimize_fluence(matrix, dose_grid, case, progress=lambda f, m: f < 0.01)


def test_uniform_fluence_normalizes_the_target_mean(problem):
    case, dose_grid, matrix = problem
    weights = uniform_fluence(matrix, dose_grid, case)
    assert weights.shape == (matrix.shape[1],) and np.ptp(weights) == 0.0
    mask = resample_mask(case.structure("PTV").mask, case.grid, dose_grid).ravel()
    assert (matrix @ weights)[mask].mean() == pytest.approx(P_GY, rel=1e-5)


def test_one_run_reports_progress_and_cancels(problem):
    case, dose_grid, matrix = problem
    fractions = []
    optimize_fluence(matrix, dose_grid, case, SMOOTH_OBJECTIVES, progress=lambda f, m: fractions.append(f))
    assert len(fractions) > 10 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    with pytest.raises(Cancelled):
        optimize_fluence(matrix, dose_grid, case, SMOOTH_OBJECTIVES, progress=lambda f, m: f < 0.01)


def test_projected_lbfgs_solves_a_bound_constrained_quadratic():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(30, 12))
    hessian = basis.T @ basis + 0.1 * np.eye(12)
    centre = rng.normal(size=12)  # unconstrained minimizer, with negative entries

    def fun(x):
        gap = x - centre
        return 0.5 * gap @ hessian @ gap, hessian @ gap

    start = np.ones(12)
    run = ProjectedLbfgs(memory=8).minimize(fun, start, iterations=500)
    assert np.all(run.x >= 0)
    scale = np.max(np.abs(fun(start)[1]))
    gradient = fun(run.x)[1] / scale
    # KKT: zero gradient on free variables, non-negative gradient on those held at the bound
    assert np.any(run.x == 0) and np.any(run.x > 0)
    assert np.max(np.abs(gradient[run.x > 0])) < 1e-5
    assert np.all(gradient[run.x == 0] > -1e-5)
    assert run.iterations <= 500 and run.evaluations >= run.iterations


def test_projected_lbfgs_yields_the_start_then_each_step_until_stationary():
    hessian = np.diag([1.0, 4.0, 9.0])
    centre = np.array([1.0, -2.0, 0.5])

    def fun(x):
        gap = x - centre
        return 0.5 * gap @ hessian @ gap, hessian @ gap

    runs = list(ProjectedLbfgs().iterate(fun, np.ones(3)))
    assert runs[0].iterations == 0 and runs[0].evaluations == 1
    assert [r.iterations for r in runs] == list(range(len(runs)))
    assert all(b.value <= a.value for a, b in pairwise(runs))
    assert len(runs) < 100  # it ends by itself at the minimizer (1, 0, 0.5)
    np.testing.assert_allclose(runs[-1].x, [1.0, 0.0, 0.5], atol=1e-6)
    assert runs[-1].projected_gradient_norm < 1e-6 * runs[0].projected_gradient_norm


def same_bits(found, expected):
    """Equal to the last bit, the sign of zero included (assert_array_equal takes −0 for +0)."""
    found, expected = np.asarray(found, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    np.testing.assert_array_equal(found.view(np.uint64), expected.view(np.uint64))


def numpy_squared_violation(dose, reference, side, weight):
    """The squared under/overdose as numpy computed it before it was compiled."""
    from radagent.optimize.vectors import dot

    violation = np.maximum(side * (dose - reference), 0.0)
    scale = weight / dose.size
    return scale * dot(violation, violation), 2.0 * side * scale * violation


def numpy_frozen_scale(dose, threshold, volume_fraction, weight):
    """TppDoseVolume.frozen's scale as it was computed before it was compiled."""
    from radagent.evaluate.dvh import hottest_voxel_count
    from radagent.optimize.objectives import _hottest_overdose

    _, _, count = _hottest_overdose(dose, threshold, volume_fraction, 0.0, False)
    if count == 0:
        count = hottest_voxel_count(volume_fraction, dose.size) if volume_fraction > 0 else 1
    return weight / count


def test_compiled_terms_are_the_objectives_bit_for_bit():
    """Each objective's compiled form gives its Python value and gradient to the last bit (signed zeros
    included), the squared limits as their numpy form did, ties and doses exactly at the limits
    included, and an empty Ω⁺ or V = 0 as well; frozen TPP scales are the former formula's."""
    from radagent.optimize.objectives import (
        NO_PENALTY,
        HottestOverdose,
        TppDoseVolume,
        compiled_term_value_and_gradient,
        frozen_parameters,
    )

    rng = np.random.default_rng(12)
    dose = np.round(rng.uniform(0.0, 90.0, 777), 1)  # many ties
    dose[:5] = 60.0  # exactly at the threshold
    dose[5:9] = 70.0  # exactly at the coverage level
    objectives = [
        SquaredUnderdose("S", 70.0, 2.0),
        SquaredOverdose("S", 60.0, 0.3),
        HottestOverdose("S", 60.0, 0.15, 0.01),
        HottestOverdose("S", 60.0, 0.0, 0.01),
        HottestOverdose("S", 95.0, 0.5, 0.01),  # nothing above the threshold
        TppDoseVolume("S", 60.0, 0.4, 3.0),
        TppDoseVolume("S", 95.0, 0.4, 3.0),
        TppDoseVolume("S", 60.0, 0.0, 3.0),
    ]
    for objective in objectives:
        term = objective.compiled_term(dose.size)
        parameters = np.zeros(3)
        parameters[: len(term.parameters)] = term.parameters
        value, gradient = compiled_term_value_and_gradient(term.kind, parameters, term.count, dose)
        expected_value, expected_gradient = objective.value_and_gradient(dose)
        same_bits(value, expected_value)
        same_bits(gradient, expected_gradient)
        if isinstance(objective, TppDoseVolume):
            frozen = objective.frozen(dose)
            expected_scale = numpy_frozen_scale(dose, objective.threshold_gy, objective.volume_fraction, 3.0)
            assert frozen.scale == expected_scale
            if term.kind != NO_PENALTY:  # V > 0: the compiled freezing gives the frozen term's parameters
                frozen_term = frozen.compiled_term(dose.size)
                same_bits(frozen_parameters(term.kind, parameters, term.count, dose), frozen_term.parameters)
    for objective, side in ((objectives[0], -1.0), (objectives[1], 1.0)):
        expected_value, expected_gradient = numpy_squared_violation(
            dose, objective.reference_gy, side, objective.weight
        )
        value, gradient = objective.value_and_gradient(dose)
        same_bits(value, expected_value)
        same_bits(gradient, expected_gradient)
    assert MaxDvh("S", 60.0, 0.5).compiled_term(dose.size) is None  # no compiled form: Python calls it


def test_compiled_outer_iterations_are_the_python_ones(problem, monkeypatch):
    """TPP optimizations with the outer iterations in compiled code (freezing, inner runs, values) and
    with Python calls of each objective give the very same weights, objective history and counts."""
    import radagent.optimize.solver as solver

    case, dose_grid, matrix = problem
    for seed in (6, 7, 8):
        tpps = TPPs.random(("Bladder", "Rectum"), np.random.default_rng(seed))
        compiled = optimize_fluence(matrix, dose_grid, case, tpps=tpps)
        with monkeypatch.context() as patch:
            patch.setattr(solver._CompiledTerms, "of", classmethod(lambda cls, terms, influence: None))
            python = optimize_fluence(matrix, dose_grid, case, tpps=tpps)
        np.testing.assert_array_equal(compiled.weights, python.weights)
        np.testing.assert_array_equal(compiled.dose_gy, python.dose_gy)
        assert compiled.objective_history == python.objective_history
        assert (compiled.inner_iterations, compiled.function_evaluations) == (
            python.inner_iterations,
            python.function_evaluations,
        )
        assert compiled.outer_iterations == python.outer_iterations > 1
