"""The dose-influence matrix D (rows: dose voxels, columns: beamlets) and the rows of it the optimizer sees.

:class:`DoseInfluence` is what the engine computes: D in Gy per unit beamlet weight on the dose grid, as
CSC, with its beams. The optimizer only needs the dose in the planning structures, a small part of the
body, so :class:`StructureInfluence` holds the union of their rows once as float32 CSR (uint16 beamlet
indices when there are at most 65 536 beamlets, a quarter less memory to stream), multiplied by numba
kernels that accumulate in float64 (scipy would upcast the float32 matrix to float64 on every product):

- d = A·x sums each row in a fixed order, for all rows or for the rows the optimizer asks for, the rows
  shared among threads;
- Aᵀ·g visits only the rows where g ≠ 0 — the objectives' gradients vanish on every voxel on the right
  side of its limit, most of the normal tissue — split into a fixed number of parts whose partial sums
  are added in order.

Neither depends on how many threads run, so the optimizer's results do not either. The kernels hold
one parallel region each: on a busy machine every region waits for its slowest thread. Agents that run
environments in parallel processes should give each process one numba thread (``NUMBA_NUM_THREADS=1``).

:class:`BeamRows` keeps those rows for many candidate beams at once, so that an agent trying beam sets
(the gantry environment) gets the rows of any subset without converting or resampling anything again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numba import get_num_threads, njit, prange, uint64
from scipy import sparse

from radagent.beams import BeamGeometry
from radagent.dose.kernels import csc_matvec
from radagent.errors import InputError
from radagent.geometry import Grid, resample_mask

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = [
    "TRANSPOSE_PARTS",
    "BeamInfo",
    "BeamRows",
    "DoseInfluence",
    "StructureInfluence",
    "influence_from_arrays",
    "row_sums_kernel",
    "stack_beams",
    "structure_rows_on_dose_grid",
    "transpose_product_kernel",
]

_ROW_PARTS = 64  # parts of A·x, balanced by entries (load balance among threads)
TRANSPOSE_PARTS = 16  # parts of Aᵀ·g with private partial sums, fixed so results ignore the thread count


@njit(cache=True)
def _balanced_parts(indptr, rows, parts):  # pragma: no cover - compiled
    """Bounds cutting ``rows`` into ``parts`` consecutive runs with about equal numbers of entries."""
    entries = np.zeros(rows.size + 1, dtype=np.int64)
    for n in range(rows.size):
        entries[n + 1] = entries[n] + indptr[rows[n] + 1] - indptr[rows[n]]
    bounds = np.searchsorted(entries, np.linspace(0.0, entries[-1], parts + 1))
    bounds[0], bounds[-1] = 0, rows.size
    return bounds


@njit(cache=True)
def _row_sum(indptr, indices, data, vector, row):  # pragma: no cover - compiled
    """Σ data[p]·vector[indices[p]] over CSR row ``row``, in entry order, accumulated in float64."""
    total = 0.0
    for position in range(uint64(indptr[row]), uint64(indptr[row + 1])):
        total += data[position] * vector[indices[position]]
    return total


@njit(cache=True, parallel=True)
def row_sums_kernel(indptr, indices, data, vector, rows, out):  # pragma: no cover - compiled
    """out[r] = Σ data[p]·vector[indices[p]] over row r, accumulated in float64, for r in ``rows``.

    Each row is summed in entry order, as one running total; four rows at a time, so that the four
    totals' additions overlap in the pipeline instead of each waiting for the one before (a single
    total is bound by the latency of floating-point addition). Positions are unsigned so that numba
    emits no negative-index wraparound on each read.
    """
    bounds = _balanced_parts(indptr, rows, _ROW_PARTS)
    for part in prange(bounds.size - 1):
        n, high = bounds[part], bounds[part + 1]
        while n + 4 <= high:
            r0, r1, r2, r3 = rows[n], rows[n + 1], rows[n + 2], rows[n + 3]
            p0, p1, p2, p3 = uint64(indptr[r0]), uint64(indptr[r1]), uint64(indptr[r2]), uint64(indptr[r3])
            e0, e1 = uint64(indptr[r0 + 1]), uint64(indptr[r1 + 1])
            e2, e3 = uint64(indptr[r2 + 1]), uint64(indptr[r3 + 1])
            common = min(e0 - p0, e1 - p1, e2 - p2, e3 - p3)
            t0 = t1 = t2 = t3 = 0.0
            for k in range(common):
                t0 += data[p0 + k] * vector[indices[p0 + k]]
                t1 += data[p1 + k] * vector[indices[p1 + k]]
                t2 += data[p2 + k] * vector[indices[p2 + k]]
                t3 += data[p3 + k] * vector[indices[p3 + k]]
            for position in range(p0 + common, e0):
                t0 += data[position] * vector[indices[position]]
            for position in range(p1 + common, e1):
                t1 += data[position] * vector[indices[position]]
            for position in range(p2 + common, e2):
                t2 += data[position] * vector[indices[position]]
            for position in range(p3 + common, e3):
                t3 += data[position] * vector[indices[position]]
            out[r0], out[r1], out[r2], out[r3] = t0, t1, t2, t3
            n += 4
        while n < high:
            out[rows[n]] = _row_sum(indptr, indices, data, vector, rows[n])
            n += 1


@njit(cache=True, parallel=True)
def transpose_product_kernel(indptr, indices, data, row_values, squared, parts, columns):  # pragma: no cover
    """Σ_r row_values[r]·(row r, its entries ``squared`` or not) over the rows where row_values[r] ≠ 0:
    each of ``parts`` consecutive runs of those rows into its own partial sum, in row order, then the
    partial sums added in part order (the result does not depend on the thread count). That is the
    order numpy's sum over the parts took for two or more columns; for a single column (a one-beamlet
    plan) numpy summed pairwise, so such a plan may differ in its last bits from before."""
    rows = np.flatnonzero(row_values)
    bounds = _balanced_parts(indptr, rows, parts)
    partial = np.empty((parts, columns))
    for part in prange(parts):
        sums = partial[part]
        sums[:] = 0.0
        for n in range(bounds[part], bounds[part + 1]):
            row = rows[n]
            value = row_values[row]
            low, high = uint64(indptr[row]), uint64(indptr[row + 1])
            if squared:
                for position in range(low, high):
                    sums[indices[position]] += data[position] * data[position] * value
            else:
                for position in range(low, high):
                    sums[indices[position]] += data[position] * value
    total = partial[0].copy()
    for part in range(1, parts):
        for column in range(columns):
            total[column] += partial[part, column]
    return total


@njit(cache=True)
def _row_norms_kernel(indptr, data):  # pragma: no cover - compiled
    """The 1-norm and the Euclidean norm of each CSR row (rows of the result), accumulated in float64."""
    out = np.empty((2, indptr.size - 1), dtype=np.float64)
    for row in range(indptr.size - 1):
        absolute = squares = 0.0
        for position in range(indptr[row], indptr[row + 1]):
            value = np.float64(data[position])
            absolute += abs(value)
            squares += value * value
        out[0, row] = absolute
        out[1, row] = np.sqrt(squares)
    return out


@njit(cache=True, parallel=True)
def _count_selected_rows_kernel(indices, row_map, counts, parts):  # pragma: no cover - compiled
    """counts[r + 1] = entries of a CSC matrix (row ``indices``) in selected row r = row_map[row]; the
    selected rows are cut into ``parts`` ranges, one per thread, so no two threads write alike."""
    rows = counts.size - 1
    for part in prange(parts):
        low, high = rows * part // parts, rows * (part + 1) // parts
        for position in range(indices.size):
            row = row_map[indices[position]]
            if low <= row < high:
                counts[row + 1] += 1


@njit(cache=True, parallel=True)
def _fill_selected_rows_kernel(  # pragma: no cover - compiled
    csc_indptr, csc_indices, csc_data, row_map, indptr, indices, data, parts
):
    """Write the selected rows of a CSC matrix as CSR into ``indices``/``data`` (columns ascending),
    the rows cut into ``parts`` ranges as in :func:`_count_selected_rows_kernel`."""
    rows = indptr.size - 1
    for part in prange(parts):
        low, high = rows * part // parts, rows * (part + 1) // parts
        cursor = indptr[low:high].copy()
        for column in range(csc_indptr.size - 1):
            for position in range(csc_indptr[column], csc_indptr[column + 1]):
                row = row_map[csc_indices[position]]
                if low <= row < high:
                    indices[cursor[row - low]] = column
                    data[cursor[row - low]] = csc_data[position]
                    cursor[row - low] += 1


def _selected_rows_csr(
    matrix: sparse.sparray | sparse.spmatrix, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``rows`` of ``matrix`` (in that order) as float32 CSR arrays: indptr, indices, data.

    Each row's entries come out in column order however the rows are shared among threads.
    """
    csc = sparse.csc_matrix(matrix)  # no copy when it is CSC already
    row_map = np.full(matrix.shape[0], -1, dtype=np.int64)
    row_map[rows] = np.arange(rows.size)
    parts = get_num_threads()
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    _count_selected_rows_kernel(csc.indices, row_map, indptr, parts)
    np.cumsum(indptr, out=indptr)
    indices = np.empty(indptr[-1], dtype=_index_type(int(matrix.shape[1])))
    data = np.empty(indptr[-1], dtype=np.float32)
    _fill_selected_rows_kernel(csc.indptr, csc.indices, csc.data, row_map, indptr, indices, data, parts)
    return indptr, indices, data


@dataclass(frozen=True, eq=False)
class BeamInfo:
    """One beam of a :class:`DoseInfluence`: its geometry and its beamlets' centres at the isocentre."""

    geometry: BeamGeometry
    beamlet_uv_mm: np.ndarray
    columns: slice

    @property
    def gantry_deg(self) -> float:
        """IEC 61217 gantry angle (degrees)."""
        return self.geometry.gantry_deg

    @property
    def n_beamlets(self) -> int:
        """Number of beamlets (columns) of this beam."""
        return int(self.beamlet_uv_mm.shape[0])


@dataclass(eq=False)
class DoseInfluence:
    """Sparse D (Gy per unit beamlet weight) on ``dose_grid``: row = flat ``[k, j, i]`` index.

    ``matrix`` is CSC with float32 data and int32 indices; only voxels inside the body have entries.
    """

    matrix: sparse.csc_matrix
    dose_grid: Grid
    beams: tuple[BeamInfo, ...]
    body_voxels: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.shape[0] != self.dose_grid.size:
            raise ValueError(
                f"matrix has {self.matrix.shape[0]} rows, the dose grid {self.dose_grid.size} voxels"
            )

    @property
    def n_beamlets(self) -> int:
        """Number of columns (beamlets of all beams)."""
        return int(self.matrix.shape[1])

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.matrix.nnz)

    @property
    def megabytes(self) -> float:
        """Memory held by the matrix arrays (MB)."""
        m = self.matrix
        return (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 1e6

    @property
    def gantry_angles_deg(self) -> tuple[float, ...]:
        """Gantry angles of the beams, in column order."""
        return tuple(beam.gantry_deg for beam in self.beams)

    def beam_columns(self, beam_index: int) -> slice:
        """Columns of beam ``beam_index``."""
        return self.beams[beam_index].columns

    def _weights(self, weights: np.ndarray) -> np.ndarray:
        x = np.asarray(weights, dtype=np.float64).ravel()
        if x.shape[0] != self.n_beamlets:
            raise InputError(f"got {x.shape[0]} beamlet weights, the plan has {self.n_beamlets} beamlets")
        return x

    def dose(self, weights: np.ndarray) -> np.ndarray:
        """Dose (Gy, float64) on the flat dose grid for beamlet ``weights``: D·x."""
        m = self.matrix
        return csc_matvec(m.indptr, m.indices, m.data, self._weights(weights), m.shape[0])

    def dose_volume(self, weights: np.ndarray) -> np.ndarray:
        """Dose (Gy) as a ``[k, j, i]`` array on :attr:`dose_grid`."""
        return self.dose(weights).reshape(self.dose_grid.shape)


def influence_from_arrays(
    data: np.ndarray,
    indices: np.ndarray,
    indptrs: list[np.ndarray],
    dose_grid: Grid,
    beams: list[tuple[BeamGeometry, np.ndarray]],
    body_voxels: np.ndarray,
) -> DoseInfluence:
    """A :class:`DoseInfluence` from CSC arrays that hold the beams one after the other (not copied).

    ``indptrs[b]`` are beam b's column pointers, as absolute positions in ``data``.
    """
    indptr = np.concatenate([indptrs[0], *(pointers[1:] for pointers in indptrs[1:])])
    index_type = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    shape = (dose_grid.size, len(indptr) - 1)
    matrix = sparse.csc_matrix((data, indices, indptr.astype(index_type)), shape=shape)
    matrix.has_sorted_indices = True
    infos, column = [], 0
    for geometry, beamlet_uv_mm in beams:
        infos.append(BeamInfo(geometry, beamlet_uv_mm, slice(column, column + len(beamlet_uv_mm))))
        column += len(beamlet_uv_mm)
    return DoseInfluence(matrix, dose_grid, tuple(infos), body_voxels)


def stack_beams(
    blocks: list[tuple[sparse.csc_matrix, BeamGeometry, np.ndarray]], dose_grid: Grid, body_voxels: np.ndarray
) -> DoseInfluence:
    """Join per-beam CSC blocks (same dose grid) side by side into one :class:`DoseInfluence`."""
    starts = np.cumsum([0] + [block.nnz for block, _, _ in blocks])
    return influence_from_arrays(
        np.concatenate([block.data for block, _, _ in blocks]),
        np.concatenate([block.indices for block, _, _ in blocks]),
        [block.indptr.astype(np.int64) + start for (block, _, _), start in zip(blocks, starts, strict=False)],
        dose_grid,
        [(geometry, beamlets) for _, geometry, beamlets in blocks],
        body_voxels,
    )


def structure_rows_on_dose_grid(case: Case, name: str, dose_grid: Grid) -> np.ndarray:
    """Flat ``[k, j, i]`` dose-grid indices of the voxels whose centres lie in structure ``name``."""
    structure = case.structure(name)
    mask = resample_mask(structure.mask, case.grid, dose_grid)
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        raise InputError(f"segment '{structure.name}' is empty after resampling to the dose grid")
    return rows


def _union_rows(
    case: Case, dose_grid: Grid, structure_names: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The union of the named structures' dose-grid rows, and each structure's positions within it."""
    structure_rows = {
        case.structure(n).name: structure_rows_on_dose_grid(case, n, dose_grid) for n in structure_names
    }
    rows = np.unique(np.concatenate(list(structure_rows.values())))
    return rows, {name: np.searchsorted(rows, r) for name, r in structure_rows.items()}


def _checked_matrix(matrix: sparse.sparray | sparse.spmatrix, dose_grid: Grid) -> None:
    """Refuse anything but a 2-D sparse matrix with one row per dose-grid voxel and some beamlets."""
    if not sparse.issparse(matrix) or matrix.ndim != 2:
        raise InputError("the dose-influence matrix must be a 2-D scipy sparse matrix")
    if matrix.shape[0] != dose_grid.size:
        raise InputError(
            f"the dose-influence matrix has {matrix.shape[0]} rows but the dose grid has "
            f"{dose_grid.size} voxels"
        )
    if matrix.shape[1] == 0:
        raise InputError("the dose-influence matrix has no beamlets")


@njit(cache=True)
def _column_range_dose_kernel(indptr, indices, data, low, high, weights, out):  # pragma: no cover
    """out += the dose of columns [low, high) of a CSC matrix, weighted by ``weights``, accumulated in
    float64 column by column."""
    for column in range(low, high):
        value = weights[column - low]
        if value != 0.0:
            for position in range(indptr[column], indptr[column + 1]):
                out[indices[position]] += value * data[position]


@njit(cache=True)
def _gather_beam_rows_kernel(  # pragma: no cover - compiled
    indices, data, starts, stops, beams, column_shifts, out_indptr, out_indices, out_data
):
    """Each row's entries of the chosen ``beams`` in their order, their columns shifted to the new
    numbering. Beam by beam, so each beam's block (held contiguously) is read once from start to end;
    serial: a copy of a few MB is not worth a parallel region on a busy machine."""
    cursor = out_indptr[:-1].copy()
    for n in range(beams.size):
        beam = beams[n]
        shift = column_shifts[n]
        for row in range(cursor.size):
            at = cursor[row]
            for position in range(starts[beam, row], stops[beam, row]):
                out_indices[at] = indices[position] + shift
                out_data[at] = data[position]
                at += 1
            cursor[row] = at


def _index_type(columns: int) -> type:
    """uint16 beamlet indices when they fit, else int32."""
    return np.uint16 if columns <= 1 << 16 else np.int32


@dataclass(frozen=True, eq=False)
class StructureInfluence:
    """Dose-influence rows (dose-grid voxels) of some structures, for fast A·x and Aᵀ·g in the optimizer.

    ``positions[name]`` indexes the structure's voxels within the union of rows (the vectors that
    :meth:`dose_gy` returns and :meth:`backproject` takes). ``column_blocks`` are full-height CSC
    matrices with a column range of each (not copies: the caller's matrix, or a cache's per-beam
    blocks): this influence's beamlets, in order, kept for the final dose on the whole dose grid.
    """

    dose_grid: Grid
    rows: np.ndarray
    positions: dict[str, np.ndarray]
    _csr: tuple[np.ndarray, np.ndarray, np.ndarray]
    beamlet_count: int
    column_blocks: tuple[tuple[sparse.csc_matrix, int, int], ...]

    @classmethod
    def build(
        cls,
        matrix: sparse.sparray | sparse.spmatrix,
        dose_grid: Grid,
        case: Case,
        structure_names: Sequence[str],
    ) -> StructureInfluence:
        """Select the rows of the named structures (masks resampled to the dose grid by voxel centre)."""
        _checked_matrix(matrix, dose_grid)
        rows, positions = _union_rows(case, dose_grid, structure_names)
        csc = sparse.csc_matrix(matrix)
        columns = int(matrix.shape[1])
        return cls(dose_grid, rows, positions, _selected_rows_csr(csc, rows), columns, ((csc, 0, columns),))

    @property
    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The union rows as CSR arrays (indptr, beamlet indices, float32 data), for compiled callers of
        :func:`row_sums_kernel` and :func:`transpose_product_kernel`."""
        return self._csr

    @property
    def names(self) -> tuple[str, ...]:
        """The structures whose rows are held."""
        return tuple(self.positions)

    @property
    def entry_count(self) -> int:
        """Number of stored entries in the union rows."""
        return int(self._csr[0][-1])

    @cached_property
    def row_entries(self) -> np.ndarray:
        """Number of stored entries of each union row."""
        return np.diff(self._csr[0])

    @cached_property
    def _row_norm_pair(self) -> np.ndarray:
        norms = _row_norms_kernel(self._csr[0], self._csr[2])
        norms.setflags(write=False)  # callers get views of it
        return norms

    @property
    def row_norms(self) -> np.ndarray:
        """‖Aᵢ‖₂ of each union row (Gy per unit weight): |Aᵢ·Δx| ≤ ‖Aᵢ‖₂·‖Δx‖₂ bounds a dose change."""
        return self._row_norm_pair[1]

    @property
    def row_l1_norms(self) -> np.ndarray:
        """‖Aᵢ‖₁ of each union row: |Aᵢ·Δx| ≤ ‖Aᵢ‖₁·max|Δx|, tighter than the 2-norm bound when the
        change is spread over many beamlets."""
        return self._row_norm_pair[0]

    @cached_property
    def nonnegative(self) -> bool:
        """Whether every entry is ≥ 0 (any dose-influence matrix): then only weight increases raise a dose."""
        return bool(self._csr[2].size == 0 or self._csr[2].min() >= 0)

    def dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose (float64) in the union of the structures' voxels for beamlet ``weights``."""
        out = np.empty(self.rows.size)
        self.fill_dose_gy(weights, np.arange(self.rows.size), out)
        return out

    def fill_dose_gy(self, weights: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
        """Write the dose of the union rows at ``positions`` into ``out`` (float64, one entry per row)."""
        vector = np.ascontiguousarray(weights, dtype=np.float64)
        row_sums_kernel(*self._csr, vector, positions, out)

    def backproject(self, row_gradient: np.ndarray) -> np.ndarray:
        """Aᵀ·g: a gradient with respect to the union-row doses mapped to the beamlet weights.

        Only the rows where g ≠ 0 cost anything.
        """
        return self._transpose_product(row_gradient, squared=False)

    def column_curvature(self, row_curvature: np.ndarray) -> np.ndarray:
        """Σᵢ cᵢ·Aᵢⱼ²: the Gauss–Newton diagonal of the Hessian in the beamlet weights for a diagonal
        Hessian c in the union-row doses."""
        return self._transpose_product(row_curvature, squared=True)

    def _transpose_product(self, row_values: np.ndarray, squared: bool) -> np.ndarray:
        """Σᵢ vᵢ·Aᵢ (or Aᵢ², entrywise), with the parts' partial sums added in a fixed order."""
        values = np.ascontiguousarray(row_values, dtype=np.float64)
        return transpose_product_kernel(*self._csr, values, squared, TRANSPOSE_PARTS, self.beamlet_count)

    def full_dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose on every dose-grid voxel (flat ``[k, j, i]``) with the full matrix, accumulated in float64."""
        out = np.zeros(self.dose_grid.size)
        vector = np.ascontiguousarray(weights, dtype=np.float64)
        first = 0
        for matrix, low, high in self.column_blocks:
            part = vector[first : first + high - low]
            _column_range_dose_kernel(matrix.indptr, matrix.indices, matrix.data, low, high, part, out)
            first += high - low
        return out


@dataclass(frozen=True, eq=False)
class BeamRows:
    """The structure rows of many beams (e.g. all candidate gantry angles), converted and resampled once,
    from which :meth:`select` assembles the rows of any subset of beams.

    Each beam's rows are held as one contiguous block (rows in order, its own columns ascending within a
    row), its run in row r at ``_starts[b, r]:_stops[b, r]``: a selection copies runs, nothing else. The
    beams' full CSC blocks are referenced, not copied (a cache's blocks stay shared).
    """

    beam_blocks: tuple[sparse.csc_matrix, ...]
    dose_grid: Grid
    rows: np.ndarray
    positions: dict[str, np.ndarray]
    _entries: tuple[np.ndarray, np.ndarray]  # beam-major column indices and data
    _starts: np.ndarray
    _stops: np.ndarray

    @classmethod
    def build(
        cls,
        beam_blocks: Sequence[sparse.sparray | sparse.spmatrix],
        dose_grid: Grid,
        case: Case,
        structure_names: Sequence[str],
    ) -> BeamRows:
        """The named structures' rows of each beam's block (full-height CSC, the beam's columns)."""
        blocks = tuple(sparse.csc_matrix(block) for block in beam_blocks)
        if not blocks:
            raise InputError("beam rows need at least one beam")
        for block in blocks:
            _checked_matrix(block, dose_grid)
        rows, positions = _union_rows(case, dose_grid, structure_names)
        per_beam = [_selected_rows_csr(block, rows) for block in blocks]
        offsets = np.cumsum([0] + [int(indptr[-1]) for indptr, _, _ in per_beam])
        starts = np.stack(
            [offset + indptr[:-1] for (indptr, _, _), offset in zip(per_beam, offsets, strict=False)]
        )
        stops = np.stack(
            [offset + indptr[1:] for (indptr, _, _), offset in zip(per_beam, offsets, strict=False)]
        )
        index_type = _index_type(max(int(block.shape[1]) for block in blocks))
        indices = np.concatenate([part.astype(index_type, copy=False) for _, part, _ in per_beam])
        data = np.concatenate([part for _, _, part in per_beam])
        return cls(blocks, dose_grid, rows, positions, (indices, data), starts, stops)

    @classmethod
    def of_influence(cls, influence: DoseInfluence, case: Case, structure_names: Sequence[str]) -> BeamRows:
        """:meth:`build` on the beams of a :class:`DoseInfluence` (their columns copied out of it)."""
        blocks = [influence.matrix[:, beam.columns] for beam in influence.beams]
        return cls.build(blocks, influence.dose_grid, case, structure_names)

    def select(self, beams: Sequence[int]) -> StructureInfluence:
        """The rows of these beams (indices into ``beam_blocks``), their beamlets in this order: the same
        matrix :meth:`StructureInfluence.build` makes from these beams stacked in this order."""
        chosen = np.asarray(beams, dtype=np.int64)
        if chosen.size == 0 or len(set(chosen.tolist())) != chosen.size:
            raise InputError(f"a beam selection needs distinct beams, got {list(beams)}")
        if chosen.min() < 0 or chosen.max() >= len(self.beam_blocks):
            raise InputError(f"beam indices {list(beams)} outside 0…{len(self.beam_blocks) - 1}")
        widths = np.array([self.beam_blocks[b].shape[1] for b in chosen], dtype=np.int64)
        shifts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        indptr = np.zeros(self.rows.size + 1, dtype=np.int64)
        np.cumsum(np.sum(self._stops[chosen] - self._starts[chosen], axis=0), out=indptr[1:])
        indices = np.empty(indptr[-1], dtype=_index_type(int(widths.sum())))
        data = np.empty(indptr[-1], dtype=np.float32)
        _gather_beam_rows_kernel(
            *self._entries, self._starts, self._stops, chosen, shifts, indptr, indices, data
        )
        return StructureInfluence(
            self.dose_grid,
            self.rows,
            self.positions,
            (indptr, indices, data),
            int(widths.sum()),
            tuple((self.beam_blocks[b], 0, int(w)) for b, w in zip(chosen, widths, strict=True)),
        )
