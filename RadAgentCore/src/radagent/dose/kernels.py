"""numba kernels of the dose engine: one beam's sparse block, and the sparse mat-vecs.

A beam block is built voxel by voxel (each voxel shares its depth, kernel widths and lateral profile
factors among the beamlets around it) in two passes over the same geometry: the first counts the
entries of every beamlet column per chunk of voxels, the second writes them straight into CSC arrays
at offsets known from the counts, so the row indices come out sorted without a transpose.

Sparsity (see ``DoseEngineSettings``): pairs closer than the *exact radius* are stored exactly; beyond
it, up to the lateral cutoff, each voxel keeps only the beamlets on one sub-lattice of stride ``s`` (its
phase drawn from a hash of the voxel and beam), with the value multiplied by ``s²``. The far scatter
is thus sampled without bias (a stratified quadrature of a wide, smooth kernel) at ``1/s²`` of the
cost. A smooth blend over the outer half of the exact radius keeps the sampled part continuous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, njit, prange
from scipy.special import erf

__all__ = ["ERF_TABLE", "BeamLattice", "count_entries", "csc_matvec", "fill_entries"]

ERF_TABLE = erf(np.arange(0.0, 6.0 + 2.0 / 512.0, 1.0 / 512.0))  # step 1/512, as _erf reads it
_HASH_MULTIPLIER = 0x9E3779B1
_ROOT_TWO = math.sqrt(2.0)
_ROOT_TWO_PI = math.sqrt(2.0 * math.pi)


@njit(cache=True)
def _erf(x: float, table: np.ndarray) -> float:
    """erf by linear interpolation in a table on [0, 6] (error < 1e-6)."""
    magnitude = abs(x) * 512.0
    if magnitude >= table.shape[0] - 2:
        value = 1.0
    else:
        index = int(magnitude)
        fraction = magnitude - index
        value = table[index] + fraction * (table[index + 1] - table[index])
    return value if x >= 0.0 else -value


@njit(cache=True)
def _smoothstep(t: float) -> float:
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return 1.0
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True)
def _voxel_frame(flat: int, n_j: int, n_i: int, to_beam: np.ndarray) -> tuple[float, float, float]:
    """Beam coordinates (u, v, w) in mm of the dose voxel with flat index ``flat``."""
    k = flat // (n_j * n_i)
    rest = flat - k * n_j * n_i
    j = rest // n_i
    i = rest - j * n_i
    u = to_beam[0, 0] * i + to_beam[0, 1] * j + to_beam[0, 2] * k + to_beam[0, 3]
    v = to_beam[1, 0] * i + to_beam[1, 1] * j + to_beam[1, 2] * k + to_beam[1, 3]
    w = to_beam[2, 0] * i + to_beam[2, 1] * j + to_beam[2, 2] * k + to_beam[2, 3]
    return u, v, w


@njit(cache=True, inline="always")
def _lookup_depth(
    table: np.ndarray, table_geometry: np.ndarray, u_iso: float, v_iso: float, w: float
) -> float:
    """Trilinear interpolation of the fan depth table at isocentre-plane (u, v) and distance w."""
    u0, v0, ray_step, w0, w_step = table_geometry
    n_v, n_u, n_w = table.shape
    fu = min(max((u_iso - u0) / ray_step, 0.0), n_u - 1.000001)
    fv = min(max((v_iso - v0) / ray_step, 0.0), n_v - 1.000001)
    fw = min(max((w - w0) / w_step, 0.0), n_w - 1.000001)
    iu = int(fu)
    iv = int(fv)
    iw = int(fw)
    tu = fu - iu
    tv = fv - iv
    tw = fw - iw
    total = 0.0
    for dv in range(2):
        weight_v = tv if dv else 1.0 - tv
        for du in range(2):
            weight_uv = weight_v * (tu if du else 1.0 - tu)
            near = table[iv + dv, iu + du, iw]
            far = table[iv + dv, iu + du, iw + 1]
            total += weight_uv * (near + tw * (far - near))
    return total


@njit(cache=True, inline="always")
def _components(params: np.ndarray, depth: float, amplitude: np.ndarray, sigma: np.ndarray) -> None:
    """Fill ``A_c(d)`` and ``σ_c(d)`` (mm) for the three components (see beam_model.BeamModel)."""
    d = max(depth, 0.0)
    for c in range(3):
        mu = params[3 + c]
        beta = params[6 + c]
        amplitude[c] = params[c] * beta / (beta - mu) * (math.exp(-mu * d) - math.exp(-beta * d))
        sigma[c] = params[9 + c] + params[12 + c] * d
    amplitude[0] += params[15] * math.exp(-d / params[16])


@njit(cache=True, inline="always")
def _scatter_factors(first_offset: float, step: float, count: int, sigma: float, out: np.ndarray) -> None:
    """``out[n] = step/(√(2π)σ)·exp(−x_n²/2σ²)`` at ``x_n = first_offset + n·step``, by recurrence."""
    inverse = 0.5 / (sigma * sigma)
    value = step / (_ROOT_TWO_PI * sigma) * math.exp(-first_offset * first_offset * inverse)
    ratio = math.exp(-(2.0 * first_offset * step + step * step) * inverse)
    growth = math.exp(-2.0 * step * step * inverse)
    for n in range(count):
        out[n] = value
        value *= ratio
        ratio *= growth


@njit(cache=True, inline="always")
def _primary_factors(
    first_offset: float, step: float, count: int, sigma: float, erf_table: np.ndarray, out: np.ndarray
) -> None:
    """Fraction of a Gaussian (width σ) centred at 0 over each beamlet ``[x_n − step/2, x_n + step/2]``."""
    scale = 1.0 / (_ROOT_TWO * sigma)
    reach = 0.5 * step + 6.0 * sigma
    for n in range(count):
        centre = first_offset + n * step
        if abs(centre) > reach:
            out[n] = 0.0
        else:
            high = _erf((centre + 0.5 * step) * scale, erf_table)
            low = _erf((centre - 0.5 * step) * scale, erf_table)
            out[n] = 0.5 * (high - low)


@njit(cache=True)
def _voxel_hash(flat: int, seed: int) -> int:
    """A well-mixed 32-bit hash of a voxel index and a beam seed."""
    h = (flat * _HASH_MULTIPLIER + seed) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    return h


@njit(cache=True)
def _span(centre: float, half: float, low: int, high: int) -> tuple[int, int]:
    """Integers n with |n − centre| ≤ half, clipped to [low, high] (empty when first > last)."""
    return max(math.ceil(centre - half), low), min(math.floor(centre + half), high)


@njit(cache=True)
def _next_index(index: int, next_sampled: int, core_first: int, core_last: int) -> int:
    """Next row or column to visit after ``index``: the core span, then the sampled sub-lattice."""
    if index < core_first <= core_last:
        return min(next_sampled, core_first)
    return next_sampled


@njit(cache=True, inline="always")
def _visit_voxel(
    flat: int,
    fill: bool,
    column_cursor: np.ndarray,
    data: np.ndarray,
    indices: np.ndarray,
    scratch: np.ndarray,
    n_j: int,
    n_i: int,
    to_beam: np.ndarray,
    depth_table: np.ndarray,
    table_geometry: np.ndarray,
    beamlet_map: np.ndarray,
    map_origin: np.ndarray,
    params: np.ndarray,
    erf_table: np.ndarray,
    geometry: np.ndarray,
    stride: int,
    seed: int,
) -> None:
    """Count (``fill`` False) or write the entries of one voxel's row.

    Counting adds to ``column_cursor[col]``; filling writes at ``column_cursor[col]`` and advances it.
    Lateral positions are in beamlet units, relative to the lattice: beamlet (col, row) is centred at
    (col, row), the voxel at (x, y) in the isocentre plane.
    """
    bixel, sad, cutoff, taper, exact_radius, calibration, offset_u, offset_v = geometry
    u, v, w = _voxel_frame(flat, n_j, n_i, to_beam)
    if w <= 0.0:
        return
    to_iso = sad / w
    to_units = to_iso / bixel
    x = u * to_units - offset_u
    y = v * to_units - offset_v
    reach = cutoff * to_units
    n_v_map, n_u_map = beamlet_map.shape
    col_lo, col_hi = _span(x, reach, map_origin[0], map_origin[0] + n_u_map - 1)
    row_lo, row_hi = _span(y, reach, map_origin[1], map_origin[1] + n_v_map - 1)
    if col_lo > col_hi or row_lo > row_hi:
        return
    reach2 = reach * reach
    exact = exact_radius * to_units
    exact2 = exact * exact
    blend_start2 = 0.25 * exact2
    taper_inner2 = (max(cutoff - taper, 0.0) * to_units) ** 2
    per_taper = 1.0 / (reach2 - taper_inner2)
    per_blend = 1.0 / (exact2 - blend_start2) if exact2 > 0.0 else 0.0
    weight = stride * stride
    phase = _voxel_hash(flat, seed) % weight
    phase_u = phase % stride
    phase_v = phase // stride

    scale = 0.0
    amplitude = scratch[0, :3]
    if fill:
        sigma = scratch[0, 3:6]
        depth = _lookup_depth(depth_table, table_geometry, u * to_iso, v * to_iso, w)
        _components(params, depth, amplitude, sigma)
        scale = calibration * to_iso * to_iso
        n_cols = col_hi - col_lo + 1
        n_rows = row_hi - row_lo + 1
        first_u = col_lo - x
        first_v = row_lo - y
        for c, rows in ((0, 1), (1, 3), (2, 5)):
            width = sigma[c] * to_units
            if c == 0:
                _primary_factors(first_u, 1.0, n_cols, width, erf_table, scratch[rows])
                _primary_factors(first_v, 1.0, n_rows, width, erf_table, scratch[rows + 1])
            else:
                _scatter_factors(first_u, 1.0, n_cols, width, scratch[rows])
                _scatter_factors(first_v, 1.0, n_rows, width, scratch[rows + 1])

    core_row_lo, core_row_hi = _span(y, exact, row_lo, row_hi)
    next_row = row_lo + (phase_v - row_lo) % stride
    row = _next_index(row_lo - 1, next_row, core_row_lo, core_row_hi)
    while row <= row_hi:
        row_sampled = row == next_row
        if row_sampled:
            next_row += stride
        dv = row - y
        dv2 = dv * dv
        lo, hi = _span(x, math.sqrt(max(reach2 - dv2, 0.0)), col_lo, col_hi)
        core_lo, core_hi = hi + 1, hi
        if dv2 < exact2:
            core_lo, core_hi = _span(x, math.sqrt(exact2 - dv2), lo, hi)
        next_col = lo + (phase_u - lo) % stride if row_sampled else hi + 1
        col = _next_index(lo - 1, next_col, core_lo, core_hi)
        while col <= hi:
            in_core = core_lo <= col <= core_hi
            sampled = col == next_col
            if sampled:
                next_col += stride
            column = beamlet_map[row - map_origin[1], col - map_origin[0]]
            if column >= 0:
                if fill:
                    du = col - x
                    r2 = du * du + dv2
                    a = col - col_lo
                    b = row - row_lo
                    value = scale * (
                        amplitude[0] * scratch[1, a] * scratch[2, b]
                        + amplitude[1] * scratch[3, a] * scratch[4, b]
                        + amplitude[2] * scratch[5, a] * scratch[6, b]
                    )
                    if r2 > taper_inner2:
                        value *= _smoothstep((reach2 - r2) * per_taper)
                    if not in_core:
                        value *= weight
                    elif r2 > blend_start2:
                        blend = _smoothstep((r2 - blend_start2) * per_blend)
                        value *= 1.0 - blend + (weight * blend if sampled else 0.0)
                    position = column_cursor[column]
                    data[position] = value
                    indices[position] = flat
                    column_cursor[column] = position + 1
                else:
                    column_cursor[column] += 1
            col = col + 1 if core_lo <= col < core_hi else _next_index(col, next_col, core_lo, core_hi)
        if core_row_lo <= row < core_row_hi:
            row += 1
        else:
            row = _next_index(row, next_row, core_row_lo, core_row_hi)


@njit(cache=True, parallel=True)
def _count_pass(
    rows: np.ndarray,
    chunk_bounds: np.ndarray,
    n_columns: int,
    n_j: int,
    n_i: int,
    to_beam: np.ndarray,
    beamlet_map: np.ndarray,
    map_origin: np.ndarray,
    geometry: np.ndarray,
    stride: int,
    seed: int,
) -> np.ndarray:
    """Entries per (chunk of voxels, beamlet column)."""
    n_chunks = chunk_bounds.shape[0] - 1
    counts = np.zeros((n_chunks, n_columns), dtype=np.int64)
    empty_f = np.empty(0, dtype=np.float32)
    empty_i = np.empty(0, dtype=np.int32)
    dummy_table = np.zeros((2, 2, 2), dtype=np.float32)
    dummy = np.zeros(8)
    for chunk in prange(n_chunks):
        scratch = np.empty((1, 8))
        for n in range(chunk_bounds[chunk], chunk_bounds[chunk + 1]):
            _visit_voxel(
                rows[n], False, counts[chunk], empty_f, empty_i, scratch, n_j, n_i, to_beam,
                dummy_table, dummy, beamlet_map, map_origin, dummy, dummy, geometry, stride, seed,
            )
    return counts


@njit(cache=True, parallel=True)
def _fill_pass(
    rows: np.ndarray,
    chunk_bounds: np.ndarray,
    offsets: np.ndarray,
    data: np.ndarray,
    indices: np.ndarray,
    window: int,
    n_j: int,
    n_i: int,
    to_beam: np.ndarray,
    depth_table: np.ndarray,
    table_geometry: np.ndarray,
    beamlet_map: np.ndarray,
    map_origin: np.ndarray,
    params: np.ndarray,
    erf_table: np.ndarray,
    geometry: np.ndarray,
    stride: int,
    seed: int,
) -> None:
    """Write the entries (Gy per unit weight, row index) at the per-chunk column ``offsets``."""
    n_chunks = chunk_bounds.shape[0] - 1
    for chunk in prange(n_chunks):
        scratch = np.empty((7, max(window, 8)))
        cursor = offsets[chunk].copy()
        for n in range(chunk_bounds[chunk], chunk_bounds[chunk + 1]):
            _visit_voxel(
                rows[n], True, cursor, data, indices, scratch, n_j, n_i, to_beam, depth_table,
                table_geometry, beamlet_map, map_origin, params, erf_table, geometry, stride, seed,
            )


@dataclass(frozen=True, eq=False)
class BeamLattice:
    """Where one beam's beamlets are and how it meets the dose grid.

    ``beamlet_map[row − origin_v, col − origin_u]`` is the column of the beamlet centred at
    ((col + offset_u)·bixel, (row + offset_v)·bixel) in the isocentre plane, or −1; ``to_beam`` maps
    dose-grid (i, j, k, 1) to beam (u, v, w) in mm; ``geometry`` = (bixel, SAD, cutoff, taper, exact
    radius, calibration Gy, offset_u, offset_v), the lattice offsets in [0, 1) bixel (½ for radagent's
    own lattices, 0 for matRad's, which have a beamlet centred on the axis); ``window`` bounds the
    beamlet columns or rows around one voxel.
    """

    beamlet_map: np.ndarray
    origin: np.ndarray
    to_beam: np.ndarray
    geometry: np.ndarray
    stride: int
    seed: int
    window: int


def count_entries(rows: np.ndarray, grid_shape: tuple[int, int, int], lattice: BeamLattice) -> np.ndarray:
    """Entries per (chunk of ``rows``, beamlet column) of one beam, int64 ``[chunk, column]``."""
    _, n_j, n_i = grid_shape
    n_columns = int(lattice.beamlet_map.max()) + 1
    return _count_pass(
        rows, _chunk_bounds(len(rows)), n_columns, n_j, n_i, lattice.to_beam, lattice.beamlet_map,
        lattice.origin, lattice.geometry, lattice.stride, lattice.seed,
    )


def fill_entries(
    rows: np.ndarray,
    grid_shape: tuple[int, int, int],
    lattice: BeamLattice,
    counts: np.ndarray,
    depth_table: np.ndarray,
    table_geometry: np.ndarray,
    params: np.ndarray,
    data: np.ndarray,
    indices: np.ndarray,
    start: int,
) -> np.ndarray:
    """Write one beam's CSC entries into ``data``/``indices`` from position ``start``; return its indptr.

    ``counts`` comes from :func:`count_entries` for the same rows and lattice.
    """
    _, n_j, n_i = grid_shape
    indptr = np.empty(counts.shape[1] + 1, dtype=np.int64)
    indptr[0] = start
    np.cumsum(counts.sum(axis=0), out=indptr[1:])
    indptr[1:] += start
    offsets = indptr[:-1] + np.cumsum(counts, axis=0) - counts
    _fill_pass(
        rows, _chunk_bounds(len(rows)), offsets, data, indices, lattice.window, n_j, n_i,
        lattice.to_beam, depth_table, table_geometry, lattice.beamlet_map, lattice.origin, params,
        ERF_TABLE, lattice.geometry, lattice.stride, lattice.seed,
    )
    return indptr


def _chunk_bounds(n_rows: int) -> np.ndarray:
    """Split the voxel list into contiguous chunks, several per thread for load balance."""
    n_chunks = max(1, min(n_rows // 2048, 16 * get_num_threads()))
    return np.linspace(0, n_rows, n_chunks + 1).astype(np.int64)


@njit(cache=True, parallel=True)
def _csc_matvec(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, bounds: np.ndarray, n_rows: int
) -> np.ndarray:
    n_parts = bounds.shape[0] - 1
    partial = np.zeros((n_parts, n_rows))
    for part in prange(n_parts):
        target = partial[part]
        for column in range(bounds[part], bounds[part + 1]):
            weight = x[column]
            if weight != 0.0:
                for position in range(indptr[column], indptr[column + 1]):
                    target[indices[position]] += weight * data[position]
    out = np.empty(n_rows)
    for row in prange(n_rows):
        total = 0.0
        for part in range(n_parts):
            total += partial[part, row]
        out[row] = total
    return out


def csc_matvec(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, n_rows: int
) -> np.ndarray:
    """``D @ x`` (float64) for a CSC matrix, columns split among threads into private accumulators."""
    threads = get_num_threads()
    targets = np.linspace(0, indptr[-1], threads + 1)
    bounds = np.searchsorted(indptr, targets).astype(np.int64)
    bounds[0], bounds[-1] = 0, len(indptr) - 1
    return _csc_matvec(indptr, indices, data, np.asarray(x, dtype=np.float64), bounds, n_rows)
