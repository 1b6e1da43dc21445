"""The rows of the dose-influence matrix that the objectives see, prepared once per beam set.

The optimizer only needs the dose in the planning structures, a small part of the body, so it works
with the union of their rows, held once as float32 CSR (uint16 beamlet indices when there are at most
65 536 beamlets, a quarter less memory to stream) and multiplied by numba kernels that accumulate in
float64 (scipy would upcast the float32 matrix to float64 on every product):

- d = A·x sums each row in a fixed order, for all rows or for the rows the optimizer asks for, the rows
  shared among threads;
- Aᵀ·g visits only the rows where g ≠ 0 — the objectives' gradients vanish on every voxel on the right
  side of its limit, most of the normal tissue — split into a fixed number of parts whose partial sums
  are added in order.

Neither depends on how many threads run, so the optimizer's results do not either. The kernels hold
one parallel region each: on a busy machine every region waits for its slowest thread. Agents that run
environments in parallel processes should give each process one numba thread (``NUMBA_NUM_THREADS=1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numba import get_num_threads, njit, prange
from scipy import sparse

from radagent.errors import InputError
from radagent.geometry import Grid, resample_mask

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["StructureInfluence", "structure_rows_on_dose_grid"]

_ROW_PARTS = 64  # parts of A·x, balanced by entries (load balance among threads)
_TRANSPOSE_PARTS = 16  # parts of Aᵀ·g with private partial sums, fixed so results ignore the thread count


@njit(cache=True)
def _balanced_parts(indptr, rows, parts):  # pragma: no cover - compiled
    """Bounds cutting ``rows`` into ``parts`` consecutive runs with about equal numbers of entries."""
    entries = np.zeros(rows.size + 1, dtype=np.int64)
    for n in range(rows.size):
        entries[n + 1] = entries[n] + indptr[rows[n] + 1] - indptr[rows[n]]
    bounds = np.searchsorted(entries, np.linspace(0.0, entries[-1], parts + 1))
    bounds[0], bounds[-1] = 0, rows.size
    return bounds


@njit(cache=True, parallel=True)
def _row_sums_kernel(indptr, indices, data, vector, rows, out):  # pragma: no cover - compiled
    """out[r] = Σ data[p]·vector[indices[p]] over row r, accumulated in float64, for r in ``rows``."""
    bounds = _balanced_parts(indptr, rows, _ROW_PARTS)
    for part in prange(bounds.size - 1):
        for n in range(bounds[part], bounds[part + 1]):
            row = rows[n]
            total = 0.0
            for position in range(indptr[row], indptr[row + 1]):
                total += data[position] * vector[indices[position]]
            out[row] = total


@njit(cache=True, parallel=True)
def _transpose_product_kernel(indptr, indices, data, row_values, squared, partial):  # pragma: no cover
    """partial[k] = Σ_r row_values[r]·(row r, its entries ``squared`` or not) over the k-th part of the
    rows where row_values[r] ≠ 0 (``partial`` comes zeroed, one row per part)."""
    rows = np.flatnonzero(row_values)
    bounds = _balanced_parts(indptr, rows, partial.shape[0])
    for part in prange(partial.shape[0]):
        for n in range(bounds[part], bounds[part + 1]):
            row = rows[n]
            value = row_values[row]
            if squared:
                for position in range(indptr[row], indptr[row + 1]):
                    partial[part, indices[position]] += data[position] * data[position] * value
            else:
                for position in range(indptr[row], indptr[row + 1]):
                    partial[part, indices[position]] += data[position] * value


@njit(cache=True)
def _row_norms_kernel(indptr, data):  # pragma: no cover - compiled
    """Euclidean norm of each CSR row, accumulated in float64."""
    out = np.empty(indptr.size - 1, dtype=np.float64)
    for row in range(indptr.size - 1):
        total = 0.0
        for position in range(indptr[row], indptr[row + 1]):
            total += np.float64(data[position]) ** 2
        out[row] = np.sqrt(total)
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
    csc = sparse.csc_matrix(matrix)
    row_map = np.full(matrix.shape[0], -1, dtype=np.int64)
    row_map[rows] = np.arange(rows.size)
    parts = get_num_threads()
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    _count_selected_rows_kernel(csc.indices, row_map, indptr, parts)
    np.cumsum(indptr, out=indptr)
    index_type = np.uint16 if matrix.shape[1] <= 1 << 16 else np.int32
    indices = np.empty(indptr[-1], dtype=index_type)
    data = np.empty(indptr[-1], dtype=np.float32)
    _fill_selected_rows_kernel(csc.indptr, csc.indices, csc.data, row_map, indptr, indices, data, parts)
    return indptr, indices, data


def structure_rows_on_dose_grid(case: Case, name: str, dose_grid: Grid) -> np.ndarray:
    """Flat ``[k, j, i]`` dose-grid indices of the voxels whose centres lie in structure ``name``."""
    structure = case.structure(name)
    mask = resample_mask(structure.mask, case.grid, dose_grid)
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        raise InputError(f"segment '{structure.name}' is empty after resampling to the dose grid")
    return rows


@dataclass(frozen=True, eq=False)
class StructureInfluence:
    """Dose-influence rows (dose-grid voxels) of some structures, for fast A·x and Aᵀ·g in the optimizer.

    ``positions[name]`` indexes the structure's voxels within the union of rows (the vectors that
    :meth:`dose_gy` returns and :meth:`backproject` takes); ``matrix`` is the full matrix, kept for the
    final dose on the whole dose grid.
    """

    matrix: sparse.sparray | sparse.spmatrix
    dose_grid: Grid
    rows: np.ndarray
    positions: dict[str, np.ndarray]
    _csr: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def build(
        cls,
        matrix: sparse.sparray | sparse.spmatrix,
        dose_grid: Grid,
        case: Case,
        structure_names: Sequence[str],
    ) -> StructureInfluence:
        """Select the rows of the named structures (masks resampled to the dose grid by voxel centre)."""
        if not sparse.issparse(matrix) or matrix.ndim != 2:
            raise InputError("the dose-influence matrix must be a 2-D scipy sparse matrix")
        if matrix.shape[0] != dose_grid.size:
            raise InputError(
                f"the dose-influence matrix has {matrix.shape[0]} rows but the dose grid has "
                f"{dose_grid.size} voxels"
            )
        if matrix.shape[1] == 0:
            raise InputError("the dose-influence matrix has no beamlets")
        structure_rows = {
            case.structure(n).name: structure_rows_on_dose_grid(case, n, dose_grid) for n in structure_names
        }
        rows = np.unique(np.concatenate(list(structure_rows.values())))
        return cls(
            matrix=matrix,
            dose_grid=dose_grid,
            rows=rows,
            positions={name: np.searchsorted(rows, r) for name, r in structure_rows.items()},
            _csr=_selected_rows_csr(matrix, rows),
        )

    @property
    def beamlet_count(self) -> int:
        """Number of columns (beamlets)."""
        return int(self.matrix.shape[1])

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
    def row_norms(self) -> np.ndarray:
        """‖Aᵢ‖₂ of each union row (Gy per unit weight): |Aᵢ·Δx| ≤ ‖Aᵢ‖₂·‖Δx‖₂ bounds a dose change."""
        return _row_norms_kernel(self._csr[0], self._csr[2])

    def dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose (float64) in the union of the structures' voxels for beamlet ``weights``."""
        out = np.empty(self.rows.size)
        self.fill_dose_gy(weights, np.arange(self.rows.size), out)
        return out

    def fill_dose_gy(self, weights: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
        """Write the dose of the union rows at ``positions`` into ``out`` (float64, one entry per row)."""
        vector = np.ascontiguousarray(weights, dtype=np.float64)
        _row_sums_kernel(*self._csr, vector, positions, out)

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
        partial = np.zeros((_TRANSPOSE_PARTS, self.beamlet_count))
        values = np.ascontiguousarray(row_values, dtype=np.float64)
        _transpose_product_kernel(*self._csr, values, squared, partial)
        return partial.sum(axis=0)

    def full_dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose on every dose-grid voxel (flat ``[k, j, i]``, float64) with the full matrix."""
        dtype = self.matrix.dtype if self.matrix.dtype in (np.float32, np.float64) else np.float64
        return np.asarray(self.matrix @ np.asarray(weights, dtype=dtype), dtype=np.float64).ravel()
