"""3D gamma index (Low et al., Med Phys 25 (1998) 656) between two dose distributions on one grid.

For every reference voxel r above the cutoff, γ(r) = min over points e of
sqrt(|e − r|² / Δd² + (D_eval(e) − D_ref(r))² / ΔD²), with ΔD = dose_criterion × the normalization dose
(global) or × D_ref(r) (local). The evaluated dose is interpolated trilinearly on a sub-voxel lattice of
search points, aligned with the voxels and no coarser than ``distance_mm / resolution_fraction``
(Low & Dempsey, Med Phys 30 (2003) 2455: a coarse evaluated grid inflates γ, so the search step must be
well below the distance criterion; Δd/10 by default).
The search is a branch and bound: voxel cells are visited nearest first and skipped when their distance
plus the dose gap to their corner values cannot beat the best γ found, so cost stays low both for
well-matched points and for clearly failing ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from radagent.errors import InputError
from radagent.geometry import Grid

__all__ = ["GammaResult", "gamma_pass_rate"]


@dataclass(frozen=True)
class GammaResult:
    """Gamma map (NaN where not evaluated) and its pass rate (fraction of evaluated voxels with γ ≤ 1)."""

    pass_rate: float
    gamma: np.ndarray
    evaluated: np.ndarray
    normalization_gy: float
    dose_criterion: float
    distance_mm: float
    max_gamma: float

    @property
    def pass_rate_percent(self) -> float:
        """Pass rate in percent."""
        return 100.0 * self.pass_rate

    @property
    def mean_gamma(self) -> float:
        """Mean γ over the evaluated voxels (capped values count as ``max_gamma``)."""
        return float(np.mean(self.gamma[self.evaluated])) if np.any(self.evaluated) else float("nan")


def gamma_pass_rate(
    reference_gy: np.ndarray,
    evaluated_gy: np.ndarray,
    grid: Grid,
    dose_criterion: float = 0.03,
    distance_mm: float = 3.0,
    cutoff: float = 0.10,
    global_normalization: bool = True,
    *,
    normalization_gy: float | None = None,
    resolution_fraction: int = 10,
    max_gamma: float = 2.0,
) -> GammaResult:
    """Gamma analysis of ``evaluated_gy`` against ``reference_gy`` (same ``grid``, Gy).

    Voxels whose reference dose is below ``cutoff`` × the normalization dose (default: the reference
    maximum) are not evaluated. γ is searched out to ``max_gamma`` × ``distance_mm`` and capped there.
    """
    reference = np.asarray(reference_gy, dtype=np.float64)
    evaluated = np.asarray(evaluated_gy, dtype=np.float64)
    for label, dose in (("reference", reference), ("evaluated", evaluated)):
        if dose.shape != grid.shape:
            raise InputError(f"{label} dose has shape {dose.shape}, its grid {grid.shape}")
        if not np.all(np.isfinite(dose)):
            raise InputError(f"{label} dose contains NaN or infinite values")
    if not (0 < dose_criterion < 1 and distance_mm > 0 and 0 <= cutoff < 1 and max_gamma >= 1):
        raise InputError(
            "gamma criteria must satisfy 0 < dose_criterion < 1, distance_mm > 0, 0 ≤ cutoff < 1, "
            f"max_gamma ≥ 1; got {dose_criterion}, {distance_mm}, {cutoff}, {max_gamma}"
        )
    if resolution_fraction < 1:
        raise InputError(f"resolution_fraction must be a positive integer, got {resolution_fraction}")
    norm_gy = float(reference.max()) if normalization_gy is None else float(normalization_gy)
    if not norm_gy > 0:
        raise InputError(f"gamma needs a positive normalization dose, got {norm_gy:g} Gy")
    analysed = reference >= cutoff * norm_gy
    if not global_normalization:
        analysed &= reference > 0
    tolerance_gy = dose_criterion * (norm_gy if global_normalization else reference)
    radius_mm = max_gamma * distance_mm
    points = np.argwhere(analysed)  # (N, 3) as (k, j, i)
    spacing_kji_mm = grid.spacing_mm[::-1].copy()
    cells, cell_distance_mm2, (fraction_k, fraction_j, fraction_i) = _search_cells(
        spacing_kji_mm, grid.shape, radius_mm, distance_mm / resolution_fraction
    )
    gamma = np.full(grid.shape, np.nan, dtype=np.float32)
    gamma[analysed] = _gamma_kernel()(
        reference, evaluated, points, np.broadcast_to(tolerance_gy, grid.shape)[analysed].copy(),
        cells, cell_distance_mm2, fraction_k, fraction_j, fraction_i, spacing_kji_mm,
        float(distance_mm), float(max_gamma),
    )
    gamma_points = gamma[analysed]
    pass_rate = float(np.mean(gamma_points <= 1.0)) if gamma_points.size else float("nan")
    return GammaResult(pass_rate, gamma, analysed, norm_gy, dose_criterion, distance_mm, max_gamma)


def _search_cells(
    spacing_kji_mm: np.ndarray, shape: tuple[int, int, int], radius_mm: float, step_mm: float
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Voxel cells within ``radius_mm`` of a voxel centre, nearest first, and the sub-voxel fractions.

    A cell is the box between voxel centres ``c`` and ``c + 1`` (per axis, in (k, j, i) index units);
    the evaluated dose inside it is the trilinear blend of its 8 corners. Per axis the cell is sampled
    at fractions 0, 1/n, …, 1 with n the smallest count giving a step ≤ ``step_mm``, so every voxel
    centre within reach is sampled. An axis with a single voxel has one flat cell (fraction 0).
    """
    ranges, fractions = [], []
    for h, size in zip(spacing_kji_mm, shape, strict=True):
        if size == 1:
            ranges.append(np.array([0]))
            fractions.append(np.zeros(1))
            continue
        reach = int(np.ceil(radius_mm / h - 1e-9))
        ranges.append(np.arange(-reach, reach))
        count = int(np.ceil(h / step_mm - 1e-9))
        fractions.append(np.arange(count + 1) / count)
    cells = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    flat = np.array([size == 1 for size in shape])
    # Distance (in voxel units per axis) from the origin to the box [c, c+1]: 0 when it spans 0.
    gap = np.where(cells > 0, cells, np.where(cells + 1 < 0, -(cells + 1), 0)) * ~flat
    cell_distance_mm2 = np.sum((gap * spacing_kji_mm) ** 2, axis=1)
    keep = cell_distance_mm2 <= radius_mm**2 + 1e-9
    order = np.argsort(cell_distance_mm2[keep], kind="stable")
    return cells[keep][order], cell_distance_mm2[keep][order], fractions


def _gamma_search(
    reference: np.ndarray,
    evaluated: np.ndarray,
    points: np.ndarray,
    dose_tolerance_gy: np.ndarray,
    cells: np.ndarray,
    cell_distance_mm2: np.ndarray,
    fraction_k: np.ndarray,
    fraction_j: np.ndarray,
    fraction_i: np.ndarray,
    spacing_kji_mm: np.ndarray,
    distance_mm: float,
    max_gamma: float,
) -> np.ndarray:
    """γ per (k, j, i) point: branch and bound over voxel cells, then over each cell's sub-voxel lattice.

    A cell is skipped when its distance plus the dose gap to its corner range already exceeds the best
    γ², since trilinear values never leave the corners' range.
    """
    nk, nj, ni = evaluated.shape
    gamma = np.empty(points.shape[0], dtype=np.float32)
    inverse_distance2 = 1.0 / (distance_mm * distance_mm)
    hk, hj, hi = spacing_kji_mm[0], spacing_kji_mm[1], spacing_kji_mm[2]
    for p in range(points.shape[0]):
        k0, j0, i0 = points[p, 0], points[p, 1], points[p, 2]
        dose_ref = reference[k0, j0, i0]
        inverse_tolerance2 = 1.0 / (dose_tolerance_gy[p] * dose_tolerance_gy[p])
        best = max_gamma * max_gamma
        for c in range(cells.shape[0]):
            if cell_distance_mm2[c] * inverse_distance2 >= best:
                break
            ck, cj, ci = cells[c, 0], cells[c, 1], cells[c, 2]
            k, j, i = k0 + ck, j0 + cj, i0 + ci
            k1 = min(k + 1, nk - 1)
            j1 = min(j + 1, nj - 1)
            i1 = min(i + 1, ni - 1)
            if k < 0 or j < 0 or i < 0 or k + 1 > max(nk - 1, 1) or j + 1 > max(nj - 1, 1) \
                    or i + 1 > max(ni - 1, 1):
                continue  # the evaluated dose is unknown outside its grid
            d000, d001 = evaluated[k, j, i], evaluated[k, j, i1]
            d010, d011 = evaluated[k, j1, i], evaluated[k, j1, i1]
            d100, d101 = evaluated[k1, j, i], evaluated[k1, j, i1]
            d110, d111 = evaluated[k1, j1, i], evaluated[k1, j1, i1]
            low = min(d000, d001, d010, d011, d100, d101, d110, d111)
            high = max(d000, d001, d010, d011, d100, d101, d110, d111)
            dose_gap = max(low - dose_ref, dose_ref - high, 0.0)
            if cell_distance_mm2[c] * inverse_distance2 + dose_gap * dose_gap * inverse_tolerance2 >= best:
                continue
            for fk in fraction_k:
                dk2 = ((ck + fk) * hk) ** 2 * inverse_distance2
                if dk2 >= best:
                    continue
                for fj in fraction_j:
                    dkj2 = dk2 + ((cj + fj) * hj) ** 2 * inverse_distance2
                    if dkj2 >= best:
                        continue
                    e00 = d000 + (d010 - d000) * fj
                    e01 = d001 + (d011 - d001) * fj
                    e10 = d100 + (d110 - d100) * fj
                    e11 = d101 + (d111 - d101) * fj
                    e0 = e00 + (e10 - e00) * fk
                    e1 = e01 + (e11 - e01) * fk
                    for fi in fraction_i:
                        distance_term = dkj2 + ((ci + fi) * hi) ** 2 * inverse_distance2
                        if distance_term >= best:
                            continue
                        difference = e0 + (e1 - e0) * fi - dose_ref
                        value = distance_term + difference * difference * inverse_tolerance2
                        if value < best:
                            best = value
        gamma[p] = np.sqrt(best)
    return gamma


@functools.cache
def _gamma_kernel() -> Callable[..., np.ndarray]:
    """The search compiled with numba on first use (numba is imported only when gamma is computed)."""
    from numba import njit

    return njit(cache=True)(_gamma_search)
