"""The 6 MV finite-size pencil-beam engine: case + gantry angles → dose-influence matrix (METHOD §2).

Per beam: a fan of rays gives the radiological depth (:mod:`radagent.dose.raytrace`), the beamlets tile
the divergent projection of the targets on a square lattice in the isocentre plane, and the numba
kernel (:mod:`radagent.dose.kernels`) evaluates the beam model (:mod:`radagent.dose.beam_model`) for
every (body voxel, beamlet) pair inside the lateral cutoff.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse

from radagent.beams import BeamGeometry
from radagent.dose.beam_model import DEFAULT_6MV, BeamModel, calibration_gy
from radagent.dose.influence import DoseInfluence, influence_from_arrays
from radagent.dose.kernels import BeamLattice, count_entries, fill_entries
from radagent.dose.raytrace import trace_depth_table
from radagent.errors import InputError
from radagent.geometry import Grid, resample_mask
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = [
    "DoseEngineSettings",
    "PreparedCase",
    "beam_block",
    "compute_beam",
    "compute_dose_influence",
    "dose_grid_for",
    "open_field_beamlets",
    "prepare_case",
    "target_beamlets",
    "validated_angles",
]

# The source must stay this far (as a fraction of SAD) from every dose voxel, or the inverse square
# and the fan geometry stop making sense.
MIN_SOURCE_DISTANCE_FRACTION = 0.3
COUNT_SHARE = 0.3  # share of the progress bar for counting the entries of all beams


@dataclass(frozen=True)
class DoseEngineSettings:
    """Every choice of the engine (lengths in mm).

    Sparsity: (voxel, beamlet) pairs closer than ``exact_radius_mm`` (in the plane at the voxel) are
    stored exactly; from there to ``lateral_cutoff_mm`` only every ``tail_sampling_stride``-th beamlet
    in u and v is kept per voxel (a voxel-dependent sub-lattice), weighted by the stride squared. That
    keeps the far scatter unbiased at a fraction of the entries; stride 1 stores every pair up to the
    cutoff. The kernel goes smoothly to 0 over the last ``cutoff_taper_mm`` before the cutoff.

    Why these defaults: scatter is a few per mille of a beamlet's peak per entry but ≈ 25 % of the dose
    inside a field, so neither a dose threshold nor a short hard cutoff can drop it (a hard 25–30 mm
    cutoff loses 1–2 % in the target and more outside it). On a prostate-like phantom (7 beams, 65 mm
    PTV, 3 mm grid) the defaults store 31 M entries instead of 122 M for every pair within 50 mm; with
    the fluence optimized on the sampled matrix, the exact one gives the same PTV D95 / D2 within 0.1 %,
    voxel doses within 1 % of the maximum (99th percentile 0.5 %) and a 1 %/1 mm gamma pass rate of
    100 %. Stride 2 halves that noise for 1.5× the entries.
    """

    bixel_mm: float = 5.0
    dose_grid_mm: float = 3.0
    target_margin_mm: float | None = None  # around the targets' projection; None: one bixel
    lateral_cutoff_mm: float = 50.0
    cutoff_taper_mm: float = 10.0
    exact_radius_mm: float = 20.0
    tail_sampling_stride: int = 3
    body_margin_mm: float | None = 10.0  # dose grid = body box + margin; None: the whole CT
    ray_spacing_mm: float | None = None  # depth fan, at the isocentre; None: half the dose grid
    depth_step_mm: float | None = None  # depth samples along the rays; None: half the dose grid
    beam_model: BeamModel = field(default=DEFAULT_6MV)

    def __post_init__(self) -> None:
        positive = {
            "bixel size": self.bixel_mm,
            "dose grid spacing": self.dose_grid_mm,
            "lateral cutoff": self.lateral_cutoff_mm,
            "exact radius": self.exact_radius_mm,
        }
        optional = {
            "ray spacing": self.ray_spacing_mm,
            "depth step": self.depth_step_mm,
        }
        for name, value in {**positive, **{k: v for k, v in optional.items() if v is not None}}.items():
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive length in mm, got {value}")
        for name, value in {
            "target margin": self.target_margin_mm,
            "body margin": self.body_margin_mm,
            "cutoff taper": self.cutoff_taper_mm,
        }.items():
            if value is not None and (not np.isfinite(value) or value < 0):
                raise InputError(f"{name} must be a non-negative length in mm, got {value}")
        if self.cutoff_taper_mm >= self.lateral_cutoff_mm:
            raise InputError(
                f"cutoff taper ({self.cutoff_taper_mm} mm) must be shorter than the lateral cutoff "
                f"({self.lateral_cutoff_mm} mm)"
            )
        if int(self.tail_sampling_stride) != self.tail_sampling_stride or self.tail_sampling_stride < 1:
            raise InputError(
                f"tail sampling stride must be a positive integer, got {self.tail_sampling_stride}"
            )

    @property
    def margin_mm(self) -> float:
        """Margin around the targets' projection when choosing beamlets (default: one bixel)."""
        return self.bixel_mm if self.target_margin_mm is None else self.target_margin_mm

    @property
    def effective_stride(self) -> int:
        """Sub-lattice stride actually used: 1 when the exact radius already reaches the cutoff."""
        return 1 if self.exact_radius_mm >= self.lateral_cutoff_mm else int(self.tail_sampling_stride)


def dose_grid_for(case: Case, dose_grid_mm: float, body_margin_mm: float | None = 10.0) -> Grid:
    """Dose grid on the CT's lattice axes at ``dose_grid_mm``, cropped to the body box plus a margin.

    ``body_margin_mm=None`` keeps the whole CT extent.
    """
    if not np.isfinite(dose_grid_mm) or dose_grid_mm <= 0:
        raise InputError(f"dose grid spacing must be a positive length in mm, got {dose_grid_mm}")
    full = case.grid.with_spacing(dose_grid_mm)
    if body_margin_mm is None:
        return full
    k, j, i = np.nonzero(case.body.mask)
    corners_ct = np.array(
        [[a, b, c] for a in (i.min() - 0.5, i.max() + 0.5) for b in (j.min() - 0.5, j.max() + 0.5)
         for c in (k.min() - 0.5, k.max() + 0.5)]
    )
    corners_dose = full.ras_to_ijk_points(case.grid.ijk_to_ras_points(corners_ct))
    pad = body_margin_mm / full.spacing_mm
    low = np.maximum(np.floor(corners_dose.min(axis=0) - pad), 0).astype(int)
    high = np.minimum(np.ceil(corners_dose.max(axis=0) + pad), np.array(full.shape[::-1]) - 1).astype(int)
    origin = full.ijk_to_ras_points(low[None, :])[0]
    shape = tuple(int(n) for n in (high - low + 1)[::-1])
    return Grid.from_spacing(shape, tuple(full.spacing_mm), tuple(origin), full.direction)


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """What every beam of a case needs: RED on the CT grid, the dose grid and its body voxels."""

    density: np.ndarray
    ct_grid: Grid
    dose_grid: Grid
    body_voxels: np.ndarray
    target_points_ras: np.ndarray
    patient_position: str
    target_centroid_ras: tuple[float, float, float]


def prepare_case(case: Case, settings: DoseEngineSettings) -> PreparedCase:
    """Compute the per-case inputs of the engine once (shared by all beams)."""
    dose_grid = dose_grid_for(case, settings.dose_grid_mm, settings.body_margin_mm)
    body = resample_mask(case.body.mask, case.grid, dose_grid)
    body_voxels = np.flatnonzero(body).astype(np.int32)
    if body_voxels.size == 0:
        raise InputError(
            f"the body of case '{case.name}' has no voxel on the {settings.dose_grid_mm} mm dose grid"
        )
    k, j, i = np.nonzero(case.target_mask())
    return PreparedCase(
        density=np.ascontiguousarray(case.relative_electron_density(), dtype=np.float32),
        ct_grid=case.grid,
        dose_grid=dose_grid,
        body_voxels=body_voxels,
        target_points_ras=case.grid.ijk_to_ras_points(np.stack([i, j, k], axis=1)),
        patient_position=case.patient_position,
        target_centroid_ras=case.isocenter_ras,
    )


def open_field_beamlets(
    field_u_mm: float, field_v_mm: float | None = None, bixel_mm: float = 5.0
) -> np.ndarray:
    """(n, 2) centres of the beamlets filling an open rectangular field centred on the axis.

    The field sides (at the isocentre) must be multiples of ``bixel_mm`` with an even count of beamlets,
    so that the field edges fall on the beamlet lattice (centres at (n + ½)·bixel).
    """
    field_v_mm = field_u_mm if field_v_mm is None else field_v_mm
    centres = []
    for side in (field_u_mm, field_v_mm):
        count = side / bixel_mm
        if count < 2 or abs(count - round(count)) > 1e-6 or round(count) % 2:
            raise InputError(f"field side {side} mm is not an even number of {bixel_mm} mm beamlets")
        centres.append((np.arange(round(count)) - 0.5 * (round(count) - 1)) * bixel_mm)
    u, v = np.meshgrid(centres[0], centres[1], indexing="xy")
    return np.stack([u.ravel(), v.ravel()], axis=1)


def target_beamlets(prepared: PreparedCase, beam: BeamGeometry, settings: DoseEngineSettings) -> np.ndarray:
    """(n, 2) centres of the beamlets whose square overlaps the targets' projection, dilated by the margin.

    The projection uses the target voxel centres; half the largest CT spacing is added to the margin
    for the voxels' extent.
    """
    bixel = settings.bixel_mm
    projected = beam.project_to_isocenter_plane(prepared.target_points_ras)
    radius = settings.margin_mm + 0.5 * float(prepared.ct_grid.spacing_mm.max())
    pixel = bixel / 5.0
    low = np.floor((projected.min(axis=0) - radius) / bixel - 1) * bixel
    high = np.ceil((projected.max(axis=0) + radius) / bixel + 1) * bixel
    n_u, n_v = np.round((high - low) / pixel).astype(int)
    hits = np.zeros((n_v, n_u), dtype=bool)
    pu, pv = np.floor((projected - low) / pixel).astype(int).T
    hits[pv, pu] = True
    covered = ndimage.distance_transform_edt(~hits, sampling=pixel) <= radius
    per_bixel = covered.reshape(n_v // 5, 5, n_u // 5, 5).any(axis=(1, 3))
    rows, cols = np.nonzero(per_bixel)
    return np.stack([low[0] + (cols + 0.5) * bixel, low[1] + (rows + 0.5) * bixel], axis=1)


def _beamlet_lattice(
    beamlet_uv_mm: np.ndarray, bixel_mm: float
) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """(map[v index, u index] → column or −1, lattice index of map[0, 0], lattice offset) of a beam.

    The beamlets must lie on one square lattice of pitch ``bixel_mm``: centres at (n + offset)·bixel
    with one offset in [0, 1) per axis, taken from the first beamlet (½ for radagent's own lattices,
    0 for matRad's and pyRadPlan's, which centre a beamlet on the beam axis).
    """
    if len(beamlet_uv_mm) == 0:
        raise InputError("a beam needs at least one beamlet")
    offset = np.mod(beamlet_uv_mm[0] / bixel_mm, 1.0)
    offset[offset > 1.0 - 1e-9] = 0.0
    index_float = beamlet_uv_mm / bixel_mm - offset
    index = np.round(index_float).astype(np.int64)
    if np.any(np.abs(index_float - index) > 1e-6):
        raise InputError(f"beamlet centres must lie on one {bixel_mm} mm square lattice")
    if len(np.unique(index, axis=0)) != len(index):
        raise InputError("duplicate beamlet positions in a beam")
    origin = index.min(axis=0)
    size = index.max(axis=0) - origin + 1
    lattice = np.full((size[1], size[0]), -1, dtype=np.int32)
    lattice[index[:, 1] - origin[1], index[:, 0] - origin[0]] = np.arange(len(index), dtype=np.int32)
    return lattice, (int(origin[0]), int(origin[1])), offset


@dataclass(frozen=True, eq=False)
class _CountedBeam:
    """A beam whose entries are counted: what its fill pass needs besides the output arrays."""

    geometry: BeamGeometry
    beamlet_uv_mm: np.ndarray
    lattice: BeamLattice
    counts: np.ndarray
    fan_low_mm: np.ndarray
    fan_high_mm: np.ndarray
    w_range_mm: tuple[float, float]

    @property
    def nnz(self) -> int:
        return int(self.counts.sum())


def _count_beam(
    prepared: PreparedCase, beam: BeamGeometry, beamlet_uv_mm: np.ndarray, settings: DoseEngineSettings
) -> _CountedBeam:
    """Place the beamlets, map the dose grid into the beam frame and count the entries per column."""
    dose_grid = prepared.dose_grid
    bixel = settings.bixel_mm
    beamlet_map, origin, offset = _beamlet_lattice(beamlet_uv_mm, bixel)
    axes = np.stack([beam.u_axis_ras, beam.v_axis_ras, beam.direction_ras])
    to_beam = np.zeros((3, 4))
    to_beam[:, :3] = axes @ dose_grid.ijk_to_ras[:3, :3]
    to_beam[:, 3] = axes @ (dose_grid.ijk_to_ras[:3, 3] - beam.source_ras)
    corner_w = (dose_grid.corners_ras() - beam.source_ras) @ beam.direction_ras
    w_min, w_max = float(corner_w.min()), float(corner_w.max())
    if w_min < MIN_SOURCE_DISTANCE_FRACTION * beam.sad_mm:
        raise InputError(
            f"the dose grid reaches within {max(w_min, 0.0):.0f} mm of the source of the beam at "
            f"gantry {beam.gantry_deg:g}°; the isocentre must lie inside the patient"
        )
    reach_iso = settings.lateral_cutoff_mm * beam.sad_mm / w_min
    model = settings.beam_model
    geometry = np.array(
        [
            bixel, beam.sad_mm, settings.lateral_cutoff_mm, settings.cutoff_taper_mm,
            min(settings.exact_radius_mm, settings.lateral_cutoff_mm),
            _calibration_gy(model, bixel, settings.lateral_cutoff_mm, settings.cutoff_taper_mm),
            *offset,
        ]
    )
    lattice = BeamLattice(
        beamlet_map, np.asarray(origin, dtype=np.int64), to_beam, geometry, settings.effective_stride,
        _beam_seed(beam.gantry_deg), int(2 * reach_iso / bixel) + 3,
    )
    ray_step = _ray_step_mm(settings)
    edge_low = (np.asarray(origin) + offset - 0.5) * bixel  # lower edges of the lattice's bounding box
    return _CountedBeam(
        beam,
        beamlet_uv_mm,
        lattice,
        count_entries(prepared.body_voxels, dose_grid.shape, lattice),
        edge_low - reach_iso - ray_step,
        edge_low + np.array(beamlet_map.shape[::-1]) * bixel + reach_iso + ray_step,
        (w_min, w_max),
    )


def _ray_step_mm(settings: DoseEngineSettings) -> float:
    return settings.ray_spacing_mm or 0.5 * settings.dose_grid_mm


def _fill_beam(
    prepared: PreparedCase,
    counted: _CountedBeam,
    settings: DoseEngineSettings,
    data: np.ndarray,
    indices: np.ndarray,
    start: int,
) -> np.ndarray:
    """Trace the beam's fan and write its entries from ``start`` on; return its (absolute) indptr."""
    w_step = settings.depth_step_mm or 0.5 * settings.dose_grid_mm
    w_min, w_max = counted.w_range_mm
    low, high = counted.fan_low_mm, counted.fan_high_mm
    table = trace_depth_table(
        prepared.density, prepared.ct_grid, counted.geometry, (low[0], high[0]), (low[1], high[1]),
        (w_min - w_step, w_max + w_step), _ray_step_mm(settings), w_step,
    )
    return fill_entries(
        prepared.body_voxels, prepared.dose_grid.shape, counted.lattice, counted.counts, table.depth_mm,
        np.array([table.u0_mm, table.v0_mm, table.ray_step_mm, table.w0_mm, table.w_step_mm]),
        settings.beam_model.packed(), data, indices, start,
    )


def beam_block(
    prepared: PreparedCase,
    beam: BeamGeometry,
    beamlet_uv_mm: np.ndarray,
    settings: DoseEngineSettings,
) -> sparse.csc_matrix:
    """The CSC block (Gy per unit weight) of one beam with the given beamlets on the dose grid."""
    counted = _count_beam(prepared, beam, np.asarray(beamlet_uv_mm, dtype=np.float64), settings)
    data = np.empty(counted.nnz, dtype=np.float32)
    indices = np.empty(counted.nnz, dtype=np.int32)
    indptr = _fill_beam(prepared, counted, settings, data, indices, 0)
    index_type = np.int32 if counted.nnz < np.iinfo(np.int32).max else np.int64
    return sparse.csc_matrix(
        (data, indices, indptr.astype(index_type)), shape=(prepared.dose_grid.size, len(beamlet_uv_mm))
    )


@functools.lru_cache(maxsize=16)
def _calibration_gy(model: BeamModel, bixel_mm: float, cutoff_mm: float, taper_mm: float) -> float:
    return calibration_gy(model, bixel_mm, cutoff_mm, taper_mm)


def _beam_seed(gantry_deg: float) -> int:
    """A per-beam seed for the tail sub-lattice phases, so beams do not share their sampling pattern."""
    return round(gantry_deg * 1000.0) * 2654435761 % (1 << 32)


def _beam_geometry(gantry_deg: float, isocenter_ras: Sequence[float], patient_position: str) -> BeamGeometry:
    try:
        return BeamGeometry(gantry_deg, tuple(isocenter_ras), patient_position)
    except ValueError as error:
        raise InputError(str(error)) from None


def _beamlets(
    prepared: PreparedCase, beam: BeamGeometry, settings: DoseEngineSettings, given: np.ndarray | None
) -> np.ndarray:
    if given is None:
        return target_beamlets(prepared, beam, settings)
    return np.asarray(given, dtype=np.float64).reshape(-1, 2)


def compute_beam(
    prepared: PreparedCase,
    gantry_deg: float,
    isocenter_ras: Sequence[float],
    settings: DoseEngineSettings,
    beamlet_uv_mm: np.ndarray | None = None,
) -> tuple[sparse.csc_matrix, BeamGeometry, np.ndarray]:
    """One beam: (CSC block, its geometry, its beamlet centres); beamlets default to the targets'."""
    beam = _beam_geometry(gantry_deg, isocenter_ras, prepared.patient_position)
    beamlets = _beamlets(prepared, beam, settings, beamlet_uv_mm)
    return beam_block(prepared, beam, beamlets, settings), beam, beamlets


def compute_dose_influence(
    case: Case,
    gantry_angles_deg: Sequence[float],
    settings: DoseEngineSettings | None = None,
    isocenter_ras: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    beamlets_uv_mm: Sequence[np.ndarray] | None = None,
) -> DoseInfluence:
    """Dose-influence matrix of coplanar beams at ``gantry_angles_deg`` (IEC 61217, degrees).

    The isocentre defaults to the targets' centroid; beamlets default to :func:`target_beamlets`, or
    are given per beam as (n, 2) centres in mm at the isocentre (e.g. :func:`open_field_beamlets`), on
    a square lattice of pitch ``settings.bixel_mm`` with any offset (matRad's stf positions included).
    All beams are counted first so that the matrix is written once, in place.
    """
    settings = settings or DoseEngineSettings()
    angles = validated_angles(gantry_angles_deg)
    if beamlets_uv_mm is not None and len(beamlets_uv_mm) != len(angles):
        raise InputError(f"got beamlets for {len(beamlets_uv_mm)} beams, but {len(angles)} gantry angles")
    report(progress, 0.0, "preparing the case for dose calculation")
    prepared = prepare_case(case, settings)
    iso = prepared.target_centroid_ras if isocenter_ras is None else isocenter_ras
    counted = []
    for n, angle in enumerate(angles):
        beam = _beam_geometry(angle, iso, prepared.patient_position)
        given = None if beamlets_uv_mm is None else beamlets_uv_mm[n]
        counted.append(_count_beam(prepared, beam, _beamlets(prepared, beam, settings, given), settings))
        report(progress, COUNT_SHARE * (n + 1) / len(angles), f"beamlets of beam {n + 1}/{len(angles)}")
    total = sum(beam.nnz for beam in counted)
    data = np.empty(total, dtype=np.float32)
    indices = np.empty(total, dtype=np.int32)
    indptrs: list[np.ndarray] = []
    for n, beam in enumerate(counted):
        start = int(indptrs[-1][-1]) if indptrs else 0
        indptrs.append(_fill_beam(prepared, beam, settings, data, indices, start))
        fraction = COUNT_SHARE + (1.0 - COUNT_SHARE) * (n + 1) / len(angles)
        report(progress, fraction, f"dose of beam {n + 1}/{len(angles)} (gantry {angles[n]:g}°)")
    return influence_from_arrays(
        data, indices, indptrs, prepared.dose_grid,
        [(beam.geometry, beam.beamlet_uv_mm) for beam in counted], prepared.body_voxels,
    )


def validated_angles(gantry_angles_deg: Sequence[float]) -> tuple[float, ...]:
    """Gantry angles as floats, each checked to lie in [0, 360) degrees."""
    angles = tuple(float(a) for a in np.atleast_1d(np.asarray(gantry_angles_deg, dtype=np.float64)))
    if not angles:
        raise InputError("no gantry angles given")
    for angle in angles:
        if not np.isfinite(angle) or not 0.0 <= angle < 360.0:
            raise InputError(f"gantry angle {angle:g}° is out of range [0, 360)")
    return angles
