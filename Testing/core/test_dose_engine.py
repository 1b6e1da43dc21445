"""The dose engine's public API: settings and input validation, beamlets, dose grid, progress, cache."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dose_phantoms import box_case

from radagent.beams import BeamGeometry
from radagent.dose import (
    BeamRows,
    DoseEngineSettings,
    DoseInfluenceCache,
    StructureInfluence,
    case_fingerprint,
    compute_dose_influence,
    dose_grid_for,
    open_field_beamlets,
)
from radagent.dose.engine import prepare_case, target_beamlets
from radagent.errors import InputError
from radagent.patient import Role
from radagent.progress import Cancelled


@pytest.fixture(scope="module")
def small_case():
    return box_case((60.0, 60.0, 60.0), target_centre_ras=(10.0, 0.0, 5.0))


@pytest.mark.parametrize(
    "changes",
    [
        {"bixel_mm": 0.0},
        {"dose_grid_mm": -3.0},
        {"lateral_cutoff_mm": float("nan")},
        {"tail_sampling_stride": 0},
        {"target_margin_mm": -1.0},
        {"cutoff_taper_mm": 60.0},
    ],
)
def test_bad_settings_raise_input_error(changes):
    with pytest.raises(InputError):
        DoseEngineSettings(**changes)


@pytest.mark.parametrize("angle", [360.0, -1.0, float("nan")])
def test_gantry_angle_out_of_range_raises_input_error(small_case, angle):
    with pytest.raises(InputError, match="gantry angle"):
        compute_dose_influence(small_case, [0.0, angle])


def test_influence_shapes_columns_and_memory(small_case):
    influence = compute_dose_influence(small_case, [0.0, 90.0, 180.0])
    assert influence.gantry_angles_deg == (0.0, 90.0, 180.0)
    columns = [influence.beam_columns(n) for n in range(3)]
    assert columns[0].start == 0 and columns[-1].stop == influence.n_beamlets
    assert all(a.stop == b.start for a, b in itertools.pairwise(columns))
    assert influence.nnz == influence.matrix.nnz > 0
    assert influence.megabytes == pytest.approx(influence.nnz * 8 / 1e6, rel=0.05)
    weights = np.ones(influence.n_beamlets)
    assert influence.dose_volume(weights).shape == influence.dose_grid.shape
    assert np.allclose(influence.dose(weights), influence.matrix @ weights, rtol=1e-5)
    with pytest.raises(InputError, match="beamlet weights"):
        influence.dose(weights[:-1])


def test_dose_grid_is_cropped_to_the_body_and_aligned_with_the_ct(small_case):
    grid = dose_grid_for(small_case, 3.0, body_margin_mm=6.0)
    full = dose_grid_for(small_case, 3.0, body_margin_mm=None)
    assert grid.size < full.size
    offset = full.ras_to_ijk_points(grid.origin_ras[None, :])[0]
    assert np.allclose(offset, np.round(offset), atol=1e-6)
    assert np.allclose(grid.direction, small_case.grid.direction)
    low, high = grid.corners_ras().min(axis=0), grid.corners_ras().max(axis=0)
    assert np.all(low <= -60.0) and np.all(high >= 60.0) and np.all(high - low <= 120.0 + 2 * 9.1)


def test_target_beamlets_cover_the_target_projection_with_a_margin(small_case):
    settings = DoseEngineSettings()
    prepared = prepare_case(small_case, settings)
    beam = BeamGeometry(30.0, small_case.isocenter_ras)
    beamlets = target_beamlets(prepared, beam, settings)
    projected = beam.project_to_isocenter_plane(prepared.target_points_ras)
    covering = np.max(np.abs(projected[:, None, :] - beamlets[None, :, :]), axis=2) <= 2.5
    assert np.all(covering.any(axis=1))
    distance = np.min(np.linalg.norm(beamlets[:, None, :] - projected[None, :, :], axis=2), axis=1)
    assert distance.max() <= settings.margin_mm + 2.0 + 2.5 * np.sqrt(2.0)
    assert np.allclose((beamlets / 5.0 - 0.5) % 1.0, 0.0)


def test_open_field_beamlets_tile_the_field():
    beamlets = open_field_beamlets(100.0, 60.0, bixel_mm=5.0)
    assert beamlets.shape == (20 * 12, 2)
    assert beamlets[:, 0].min() == -47.5 and beamlets[:, 1].max() == 27.5
    with pytest.raises(InputError):
        open_field_beamlets(52.0)


def test_given_beamlets_must_share_one_lattice(small_case):
    on_axis = np.array([[0.0, 0.0], [5.0, 0.0], [-5.0, 10.0]])  # matRad's lattice: offset 0
    influence = compute_dose_influence(small_case, [0.0], beamlets_uv_mm=[on_axis])
    assert influence.n_beamlets == 3
    for beamlets, message in (
        ([[0.0, 0.0], [2.5, 0.0]], "one 5.0 mm square lattice"),
        ([[0.0, 0.0], [0.0, 0.0]], "duplicate"),
    ):
        with pytest.raises(InputError, match=message):
            compute_dose_influence(small_case, [0.0], beamlets_uv_mm=[np.array(beamlets)])


def test_progress_reports_each_beam_and_cancels(small_case):
    calls = []
    compute_dose_influence(small_case, [0.0, 180.0], progress=lambda f, m: calls.append((f, m)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) == 5
    with pytest.raises(Cancelled):
        compute_dose_influence(small_case, [0.0, 180.0], progress=lambda f, m: f < 0.5)


def test_cache_reuses_beams_and_assembles_any_angle_set(small_case):
    cache = DoseInfluenceCache()
    first = cache.get(small_case, [0.0, 90.0])
    assert (cache.hits, cache.misses) == (0, 2)
    second = cache.get(small_case, [90.0, 200.0])
    assert (cache.hits, cache.misses) == (1, 3)
    direct = compute_dose_influence(small_case, [90.0, 200.0])
    assert (second.matrix != direct.matrix).nnz == 0
    assert (second.matrix[:, second.beam_columns(0)] != first.matrix[:, first.beam_columns(1)]).nnz == 0
    other = DoseEngineSettings(bixel_mm=10.0)
    cache.get(small_case, [0.0], other)
    assert cache.misses == 4
    assert cache.megabytes > 0 and len(cache) == 4


def test_cache_evicts_least_recently_used_beyond_its_size(small_case):
    cache = DoseInfluenceCache(max_megabytes=1e-3)
    cache.get(small_case, [0.0, 90.0])
    cache.get(small_case, [180.0])
    assert len(cache) == 1


def test_case_fingerprint_changes_with_the_ct(small_case):
    changed = box_case((60.0, 60.0, 60.0), target_centre_ras=(10.0, 0.0, 5.0))
    assert case_fingerprint(changed) == case_fingerprint(small_case)
    changed.ct_hu[0, 0, 0] += 1.0
    assert case_fingerprint(changed) != case_fingerprint(small_case)


def test_beam_rows_select_the_matrix_that_stacking_those_beams_gives(small_case):
    """BeamRows.select(b) is StructureInfluence.build on the beams b stacked in that order, array for
    array; its full dose is D·x over those beams' columns."""
    angles = [0.0, 60.0, 120.0, 200.0, 290.0]
    influence = compute_dose_influence(small_case, angles)
    names = [s.name for s in small_case.structures if s.role is not Role.BODY]
    beam_rows = BeamRows.of_influence(influence, small_case, names)
    rng = np.random.default_rng(3)
    for chosen in ([4, 0, 2], [1], [3, 2, 1, 0, 4]):
        columns = np.concatenate([np.arange(influence.n_beamlets)[influence.beam_columns(b)] for b in chosen])
        stacked = influence.matrix[:, columns]
        reference = StructureInfluence.build(stacked, influence.dose_grid, small_case, names)
        selected = beam_rows.select(chosen)
        for ours, theirs in zip(selected._csr, reference._csr, strict=True):
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(selected.rows, reference.rows)
        assert selected.beamlet_count == columns.size
        weights = rng.uniform(0.0, 1.0, columns.size)
        np.testing.assert_array_equal(selected.dose_gy(weights), reference.dose_gy(weights))
        expected = stacked.toarray().astype(np.float64) @ weights
        np.testing.assert_allclose(selected.full_dose_gy(weights), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError, match="distinct beams"):
        beam_rows.select([1, 1])
    with pytest.raises(InputError, match="outside"):
        beam_rows.select([5])


def test_cache_hashes_a_case_once(small_case, monkeypatch):
    import radagent.dose.cache as cache_module

    calls = []
    original = cache_module.case_fingerprint
    monkeypatch.setattr(cache_module, "case_fingerprint", lambda case: calls.append(case) or original(case))
    cache = DoseInfluenceCache()
    settings = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=10.0)
    first = cache.get(small_case, [0.0], settings)
    second = cache.get(small_case, [0.0, 90.0], settings)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 2
    np.testing.assert_array_equal(second.matrix[:, : first.n_beamlets].toarray(), first.matrix.toarray())
    other = box_case((60.0, 60.0, 60.0), target_centre_ras=(10.0, 0.0, 5.0))
    cache.get(other, [0.0], settings)  # an equal case: hashed once more, its blocks found
    assert len(calls) == 2 and cache.hits == 2
