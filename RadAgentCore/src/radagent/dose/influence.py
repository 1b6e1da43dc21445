"""The dose-influence matrix D (rows: dose voxels, columns: beamlets) and what it knows of its beams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from radagent.beams import BeamGeometry
from radagent.dose.kernels import csc_matvec, csc_rmatvec
from radagent.errors import InputError
from radagent.geometry import Grid

__all__ = ["BeamInfo", "DoseInfluence", "influence_from_arrays", "stack_beams"]


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

    def transpose_dot(self, voxel_values: np.ndarray) -> np.ndarray:
        """Dᵀ·y (float64, one value per beamlet), e.g. the gradient of an objective from ∂f/∂dose."""
        y = np.asarray(voxel_values, dtype=np.float64).ravel()
        if y.shape[0] != self.matrix.shape[0]:
            raise InputError(f"got {y.shape[0]} voxel values, the dose grid has {self.matrix.shape[0]}")
        m = self.matrix
        return csc_rmatvec(m.indptr, m.indices, m.data, y)


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
