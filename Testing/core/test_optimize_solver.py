"""The fluence optimizer on a small synthetic phantom (optimize/solver.py, influence.py, quasi_newton.py)."""

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
    SquaredUnderdose,
    StructureInfluence,
    TPPs,
    optimize_fluence,
    uniform_fluence,
)
from radagent.optimize.quasi_newton import ProjectedLbfgs
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


def test_custom_objectives_and_iteration_limits(problem):
    case, dose_grid, matrix = problem
    objectives = [SquaredUnderdose("PTV", P_GY, weight=5.0), MaxDvh("rectum", 0.6 * P_GY, 0.2)]
    settings = OptimizerSettings(max_outer_iterations=3, inner_iterations=5, normalize_percent=None)
    result = optimize_fluence(matrix, dose_grid, case, objectives=objectives, settings=settings)
    assert result.outer_iterations <= 3 and result.inner_iterations <= 15
    assert result.normalization_factor == 1.0
    assert result.objective_history[-1] < result.objective_history[0]


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
