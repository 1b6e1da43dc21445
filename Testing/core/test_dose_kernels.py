"""numba kernels of the dose engine against slow, obvious numpy references on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import box_case
from scipy import sparse
from scipy.special import erf

from radagent.beams import BeamGeometry
from radagent.dose import DoseEngineSettings, compute_dose_influence, open_field_beamlets
from radagent.dose.beam_model import DEFAULT_6MV, beamlet_dose, calibration_gy
from radagent.dose.engine import _beam_seed
from radagent.dose.kernels import ERF_TABLE, _erf, _voxel_hash, csc_matvec
from radagent.dose.raytrace import radiological_path_mm, trace_depth_table
from radagent.geometry import Grid


def brute_force_path_mm(density, grid, start, end, step_mm=0.005):
    """∫ density along the segment by midpoint steps, nearest voxel, 0 outside the grid."""
    length = np.linalg.norm(end - start)
    count = int(np.ceil(length / step_mm))
    t = (np.arange(count) + 0.5) / count
    points = start + np.outer(t, end - start)
    ijk = np.round(grid.ras_to_ijk_points(points)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(grid.shape[::-1])), axis=1)
    values = np.zeros(count)
    values[inside] = density[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
    return values.sum() * length / count


def oblique_grid(shape, spacing):
    rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))
    return Grid.from_spacing(shape, spacing, (5.0, -3.0, 2.0), rotation)


def test_siddon_path_matches_fine_step_integration_on_an_oblique_grid():
    rng = np.random.default_rng(1)
    grid = oblique_grid((6, 7, 8), (2.0, 3.0, 2.5))
    density = rng.uniform(0.0, 2.0, size=grid.shape).astype(np.float32)
    centre = grid.ijk_to_ras_points(np.array([[3.5, 3.0, 2.5]]))[0]
    for _ in range(12):
        start = centre + rng.normal(size=3) * 25.0  # mostly outside, some inside
        end = centre + rng.normal(size=3) * 25.0
        expected = brute_force_path_mm(density, grid, start, end)
        assert radiological_path_mm(density, grid, start, end) == pytest.approx(expected, abs=0.02)


def test_siddon_path_along_a_lattice_axis_and_missing_the_grid():
    grid = Grid.from_spacing((4, 4, 4), (2.0, 2.0, 2.0))
    density = np.ones(grid.shape, dtype=np.float32)
    assert radiological_path_mm(density, grid, np.array([0.0, 2.0, -10.0]), np.array([0.0, 2.0, 10.0])) == (
        pytest.approx(8.0)
    )
    assert radiological_path_mm(density, grid, np.array([50.0, 0.0, 0.0]), np.array([50.0, 9.0, 0.0])) == 0.0


def test_fan_depth_table_matches_single_ray_paths():
    rng = np.random.default_rng(2)
    grid = oblique_grid((10, 12, 11), (3.0, 3.0, 3.0))
    density = rng.uniform(0.0, 1.5, size=grid.shape).astype(np.float32)
    iso = grid.ijk_to_ras_points(np.array([[5.0, 6.0, 5.0]]))[0]
    beam = BeamGeometry(35.0, tuple(iso))
    table = trace_depth_table(density, grid, beam, (-12.0, 12.0), (-9.0, 9.0), (960.0, 1040.0), 3.0, 4.0)
    n_v, n_u, n_w = table.depth_mm.shape
    for iv, iu, iw in [(0, 0, 0), (n_v - 1, 3, n_w // 2), (n_v // 2, n_u // 2, n_w - 1), (2, n_u - 1, 7)]:
        u = table.u0_mm + iu * table.ray_step_mm
        v = table.v0_mm + iv * table.ray_step_mm
        w = table.w0_mm + iw * table.w_step_mm
        through_iso = np.asarray(iso) + u * beam.u_axis_ras + v * beam.v_axis_ras
        point = beam.source_ras + (w / beam.sad_mm) * (through_iso - beam.source_ras)
        expected = radiological_path_mm(density, grid, beam.source_ras, point)
        assert table.depth_mm[iv, iu, iw] == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_erf_table_is_accurate():
    x = np.linspace(-7.0, 7.0, 20001)
    assert np.max(np.abs([_erf(v, ERF_TABLE) for v in x] - erf(x))) < 1e-6


def reference_entries(case, influence, settings, beamlets):
    """The numpy formula (beam_model.beamlet_dose) for every (body voxel, beamlet) pair in the cutoff."""
    beam = influence.beams[0].geometry
    grid = influence.dose_grid
    rows = influence.body_voxels
    points = grid.voxel_centers_ras(rows)
    u, v, w = beam.to_beam_frame(points).T
    density = case.relative_electron_density()
    depth = np.array([radiological_path_mm(density, case.grid, beam.source_ras, p) for p in points])
    u_iso, v_iso = u * beam.sad_mm / w, v * beam.sad_mm / w
    du = u_iso[:, None] - beamlets[None, :, 0]
    dv = v_iso[:, None] - beamlets[None, :, 1]
    inside = (du**2 + dv**2) * (w[:, None] / beam.sad_mm) ** 2 < settings.lateral_cutoff_mm**2
    cutoff, taper = settings.lateral_cutoff_mm, settings.cutoff_taper_mm
    gray = calibration_gy(DEFAULT_6MV, settings.bixel_mm, cutoff, taper)
    bixel = settings.bixel_mm
    values = gray * beamlet_dose(DEFAULT_6MV, depth[:, None], w[:, None], du, dv, bixel, cutoff, taper)
    dense = np.zeros((grid.size, len(beamlets)))
    dense[rows] = np.where(inside, values, 0.0)
    return dense, inside


def test_beam_block_matches_the_numpy_beam_model():
    slab = ((0.0, 10.0, 0.0), (30.0, 8.0, 30.0), -600.0)
    case = box_case((30.0, 40.0, 30.0), spacing_mm=4.0, inserts=[slab])
    settings = DoseEngineSettings(
        dose_grid_mm=5.0, lateral_cutoff_mm=20.0, cutoff_taper_mm=5.0, exact_radius_mm=20.0,
        tail_sampling_stride=1,
    )
    beamlets = open_field_beamlets(10.0, 20.0, bixel_mm=5.0)
    influence = compute_dose_influence(case, [30.0], settings, (0.0, 0.0, 0.0), beamlets_uv_mm=[beamlets])
    dense, inside = reference_entries(case, influence, settings, beamlets)
    stored = influence.matrix.toarray()
    assert influence.nnz == np.count_nonzero(inside)
    scale = dense.max()
    assert np.max(np.abs(stored - dense)) < 0.003 * scale  # depth interpolation across the slab faces
    assert np.mean(np.abs(stored - dense)[dense > 0]) < 1e-4 * scale


@pytest.mark.parametrize("lattice_shift_mm", [(2.5, -2.5), (1.0, 3.5)])
def test_beam_block_honours_a_shifted_beamlet_lattice(lattice_shift_mm):
    # (2.5, −2.5) puts a beamlet on the axis, as matRad's stf lattices do. A 0.3 mm misplacement of the
    # beamlets changes the stored pairs and raises the mean error ~50-fold; voxels in the first 10 mm
    # are left out of the maximum, where the depth fan interpolates across the box surface.
    case = box_case((30.0, 40.0, 30.0), spacing_mm=4.0)
    settings = DoseEngineSettings(
        dose_grid_mm=5.0, lateral_cutoff_mm=20.0, cutoff_taper_mm=5.0, exact_radius_mm=20.0,
        tail_sampling_stride=1,
    )
    beamlets = open_field_beamlets(10.0, 20.0, bixel_mm=5.0) + np.array(lattice_shift_mm)
    influence = compute_dose_influence(case, [30.0], settings, (0.0, 0.0, 0.0), beamlets_uv_mm=[beamlets])
    dense, inside = reference_entries(case, influence, settings, beamlets)
    assert influence.nnz == np.count_nonzero(inside)
    rows = influence.body_voxels
    beam = influence.beams[0].geometry
    depth = np.array([
        radiological_path_mm(case.relative_electron_density(), case.grid, beam.source_ras, point)
        for point in influence.dose_grid.voxel_centers_ras(rows)
    ])
    error = np.abs(influence.matrix.toarray() - dense)[rows] / dense.max()
    assert error[depth > 10.0].max() < 0.005
    assert error[dense[rows] > 0].mean() < 2e-4


def test_columns_hold_sorted_body_rows_only():
    case = box_case((40.0, 40.0, 40.0))
    influence = compute_dose_influence(case, [0.0, 200.0], DoseEngineSettings(dose_grid_mm=4.0))
    matrix = influence.matrix
    assert matrix.data.dtype == np.float32 and matrix.indices.dtype == np.int32
    for column in range(matrix.shape[1]):
        rows = matrix.indices[matrix.indptr[column] : matrix.indptr[column + 1]]
        assert np.all(np.diff(rows) > 0)
    assert np.all(np.isin(matrix.indices, influence.body_voxels))
    assert np.all(matrix.data > 0)


def test_stored_pairs_are_the_exact_disc_plus_the_voxels_sub_lattice():
    case = box_case((40.0, 40.0, 40.0))
    settings = DoseEngineSettings(
        dose_grid_mm=4.0, lateral_cutoff_mm=30.0, cutoff_taper_mm=5.0, exact_radius_mm=12.0,
        tail_sampling_stride=3,
    )
    beamlets = open_field_beamlets(40.0, 30.0)
    influence = compute_dose_influence(case, [70.0], settings, (0.0, 0.0, 0.0), beamlets_uv_mm=[beamlets])
    beam = influence.beams[0].geometry
    rows = influence.body_voxels
    u, v, w = beam.to_beam_frame(influence.dose_grid.voxel_centers_ras(rows)).T
    units = beam.sad_mm / w / settings.bixel_mm  # lateral lengths in beamlet units at the isocentre
    x, y = u * units - 0.5, v * units - 0.5
    col, row = (beamlets / settings.bixel_mm - 0.5).T
    r2 = (col[None, :] - x[:, None]) ** 2 + (row[None, :] - y[:, None]) ** 2
    phase = np.array([_voxel_hash(int(flat), _beam_seed(70.0)) % 9 for flat in rows])
    on_columns = (col[None, :] - (phase % 3)[:, None]) % 3 == 0
    on_lattice = on_columns & ((row[None, :] - (phase // 3)[:, None]) % 3 == 0)
    exact_limit = (settings.exact_radius_mm * units[:, None]) ** 2
    cutoff_limit = (settings.lateral_cutoff_mm * units[:, None]) ** 2
    expected = (r2 < exact_limit) | (on_lattice & (r2 < cutoff_limit))
    ambiguous = np.isclose(r2, exact_limit) | np.isclose(r2, cutoff_limit)
    stored = influence.matrix.toarray()[rows] > 0
    assert np.array_equal(stored[~ambiguous], expected[~ambiguous])


def test_tail_sampling_is_unbiased_and_saves_entries():
    case = box_case((100.0, 100.0, 100.0), target_centre_ras=(0.0, 0.0, 0.0))
    beamlets = [open_field_beamlets(60.0)]
    exact = compute_dose_influence(
        case, [0.0], DoseEngineSettings(exact_radius_mm=50.0, tail_sampling_stride=1), beamlets_uv_mm=beamlets
    )
    sampled = compute_dose_influence(case, [0.0], DoseEngineSettings(), beamlets_uv_mm=beamlets)
    assert sampled.nnz < 0.6 * exact.nnz
    weights = np.random.default_rng(4).uniform(0.5, 1.5, exact.n_beamlets)
    reference, approximate = exact.dose(weights), sampled.dose(weights)
    relevant = reference > 0.1 * reference.max()
    error = (approximate - reference)[relevant] / reference.max()
    assert abs(np.mean(error)) < 0.002
    assert np.percentile(np.abs(error), 99) < 0.02


def test_sparse_product_matches_scipy():
    rng = np.random.default_rng(5)
    matrix = sparse.random(500, 60, density=0.1, format="csc", random_state=6, dtype=np.float32)
    matrix.indices = matrix.indices.astype(np.int32)
    matrix.indptr = matrix.indptr.astype(np.int32)
    x = rng.random(60)
    x[::7] = 0.0
    product = csc_matvec(matrix.indptr, matrix.indices, matrix.data, x, 500)
    assert np.allclose(product, matrix @ x, rtol=1e-6)
