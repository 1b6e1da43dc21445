"""The rows of the dose-influence matrix that the objectives see, prepared once per beam set.

The optimizer only needs the dose in the planning structures, a small part of the body, so it works
with the union of their rows: one float32 CSR copy for d = A·x and one CSC copy (the CSR of Aᵀ) for the
gradient Aᵀ·g, both multiplied by a numba kernel that accumulates in float64 (scipy would upcast the
float32 matrix to float64 on every product). The kernel is serial on purpose: agents run environments in
parallel processes, and on shared cores a threaded product measured several times slower; serial sums
in a fixed order also make results independent of the thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit
from scipy import sparse

from radagent.errors import InputError
from radagent.geometry import Grid, resample_mask

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["StructureInfluence", "structure_rows_on_dose_grid"]


@njit(cache=True)
def _compressed_matvec_kernel(indptr, indices, data, vector):  # pragma: no cover - compiled
    """out[r] = Σ data[p]·vector[indices[p]] over the r-th compressed row, accumulated in float64."""
    rows = indptr.size - 1
    out = np.empty(rows, dtype=np.float64)
    for row in range(rows):
        total = 0.0
        for position in range(indptr[row], indptr[row + 1]):
            total += data[position] * vector[indices[position]]
        out[row] = total
    return out


def _compressed_matvec(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, vector: np.ndarray
) -> np.ndarray:
    """CSR (or CSC-as-transpose) matrix times a float64 vector, float64 result."""
    return _compressed_matvec_kernel(indptr, indices, data, np.ascontiguousarray(vector, dtype=np.float64))


@njit(cache=True)
def _select_csc_rows_kernel(indptr, indices, data, row_map):  # pragma: no cover
    """The rows with ``row_map >= 0`` of a CSC matrix, renumbered by ``row_map``, as float32 CSC arrays."""
    columns = indptr.size - 1
    new_indptr = np.zeros(columns + 1, dtype=np.int64)
    for column in range(columns):
        kept = 0
        for position in range(indptr[column], indptr[column + 1]):
            if row_map[indices[position]] >= 0:
                kept += 1
        new_indptr[column + 1] = new_indptr[column] + kept
    new_indices = np.empty(new_indptr[columns], dtype=np.int32)
    new_data = np.empty(new_indptr[columns], dtype=np.float32)
    for column in range(columns):
        out = new_indptr[column]
        for position in range(indptr[column], indptr[column + 1]):
            row = row_map[indices[position]]
            if row >= 0:
                new_indices[out] = row
                new_data[out] = data[position]
                out += 1
    return new_indptr, new_indices, new_data


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
    _forward: tuple[np.ndarray, np.ndarray, np.ndarray]
    _transpose: tuple[np.ndarray, np.ndarray, np.ndarray]

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
        positions = {name: np.searchsorted(rows, r) for name, r in structure_rows.items()}
        row_map = np.full(matrix.shape[0], -1, dtype=np.int64)
        row_map[rows] = np.arange(rows.size)
        csc = sparse.csc_matrix(matrix)
        transpose = _select_csc_rows_kernel(csc.indptr, csc.indices, csc.data, row_map)
        selected = sparse.csc_matrix(
            (transpose[2], transpose[1], transpose[0]), shape=(rows.size, matrix.shape[1])
        )
        forward = selected.tocsr()
        return cls(
            matrix=matrix,
            dose_grid=dose_grid,
            rows=rows,
            positions=positions,
            _forward=(forward.indptr, forward.indices, forward.data),
            _transpose=transpose,
        )

    @property
    def beamlet_count(self) -> int:
        """Number of columns (beamlets)."""
        return int(self.matrix.shape[1])

    @property
    def names(self) -> tuple[str, ...]:
        """The structures whose rows are held."""
        return tuple(self.positions)

    def dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose (float64) in the union of the structures' voxels for beamlet ``weights``."""
        return _compressed_matvec(*self._forward, weights)

    def backproject(self, row_gradient: np.ndarray) -> np.ndarray:
        """Aᵀ·g: a gradient with respect to the union-row doses mapped to the beamlet weights."""
        return _compressed_matvec(*self._transpose, row_gradient)

    def full_dose_gy(self, weights: np.ndarray) -> np.ndarray:
        """Dose on every dose-grid voxel (flat ``[k, j, i]``, float64) with the full matrix."""
        dtype = self.matrix.dtype if self.matrix.dtype in (np.float32, np.float64) else np.float64
        return np.asarray(self.matrix @ np.asarray(weights, dtype=dtype), dtype=np.float64).ravel()
