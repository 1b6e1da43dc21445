"""Radiological depth by Siddon voxel traversal through the relative-electron-density grid.

Rays are traced in the CT's *lattice frame*: coordinates in mm along the grid's i, j, k axes, with
voxel ``(i, j, k)`` centred at ``(i·sx, j·sy, k·sz)``. The direction matrix is orthonormal, so
lengths there are physical lengths even for an oblique CT.

For one beam the tracer follows a fan of rays from the source through a regular lattice in the
isocentre plane and records the cumulative water-equivalent depth on planes at regular distances
``w`` from the source (measured along the central axis). The engine then interpolates this table at
each dose voxel's beam coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from radagent.beams import BeamGeometry
from radagent.geometry import Grid

__all__ = ["DepthTable", "radiological_path_mm", "trace_depth_table"]

_TINY = 1e-12


@njit(cache=True)
def _cumulative_depth_along_ray(
    density: np.ndarray,
    spacing_mm: np.ndarray,
    start_mm: np.ndarray,
    direction: np.ndarray,
    sample_t_mm: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill ``out[s]`` with ∫₀^{t_s} density dt along ``start + t·direction`` (Siddon traversal).

    ``sample_t_mm`` must increase. Outside the grid the density is taken as 0.
    """
    nk, nj, ni = density.shape
    counts = (ni, nj, nk)
    t_enter = -1e300
    t_exit = 1e300
    for axis in range(3):
        low = -0.5 * spacing_mm[axis]
        high = (counts[axis] - 0.5) * spacing_mm[axis]
        if abs(direction[axis]) < _TINY:
            if start_mm[axis] <= low or start_mm[axis] >= high:
                t_exit = -1e300
        else:
            t0 = (low - start_mm[axis]) / direction[axis]
            t1 = (high - start_mm[axis]) / direction[axis]
            t_enter = max(t_enter, min(t0, t1))
            t_exit = min(t_exit, max(t0, t1))
    n_samples = sample_t_mm.shape[0]
    sample = 0
    if t_exit <= t_enter:
        for s in range(n_samples):
            out[s] = 0.0
        return
    t_now = max(t_enter, 0.0)
    while sample < n_samples and sample_t_mm[sample] <= t_now:
        out[sample] = 0.0
        sample += 1
    index = np.empty(3, dtype=np.int64)
    step = np.empty(3, dtype=np.int64)
    t_next = np.empty(3, dtype=np.float64)
    t_delta = np.empty(3, dtype=np.float64)
    t_mid = t_now + 1e-9
    for axis in range(3):
        position = (start_mm[axis] + t_mid * direction[axis]) / spacing_mm[axis]
        index[axis] = min(max(int(np.floor(position + 0.5)), 0), counts[axis] - 1)
        if direction[axis] > _TINY:
            step[axis] = 1
            boundary = (index[axis] + 0.5) * spacing_mm[axis]
            t_next[axis] = (boundary - start_mm[axis]) / direction[axis]
            t_delta[axis] = spacing_mm[axis] / direction[axis]
        elif direction[axis] < -_TINY:
            step[axis] = -1
            boundary = (index[axis] - 0.5) * spacing_mm[axis]
            t_next[axis] = (boundary - start_mm[axis]) / direction[axis]
            t_delta[axis] = -spacing_mm[axis] / direction[axis]
        else:
            step[axis] = 0
            t_next[axis] = 1e300
            t_delta[axis] = 1e300
    cumulative = 0.0
    while t_now < t_exit and sample < n_samples:
        axis = 0
        if t_next[1] < t_next[axis]:
            axis = 1
        if t_next[2] < t_next[axis]:
            axis = 2
        t_end = min(t_next[axis], t_exit)
        value = density[index[2], index[1], index[0]]
        while sample < n_samples and sample_t_mm[sample] <= t_end:
            out[sample] = cumulative + (sample_t_mm[sample] - t_now) * value
            sample += 1
        cumulative += (t_end - t_now) * value
        t_now = t_end
        index[axis] += step[axis]
        t_next[axis] += t_delta[axis]
        if index[axis] < 0 or index[axis] >= counts[axis]:
            break
    while sample < n_samples:
        out[sample] = cumulative
        sample += 1


@njit(cache=True, parallel=True)
def _trace_fan(
    density: np.ndarray,
    spacing_mm: np.ndarray,
    source_mm: np.ndarray,
    iso_mm: np.ndarray,
    u_axis: np.ndarray,
    v_axis: np.ndarray,
    ray_u_iso_mm: np.ndarray,
    ray_v_iso_mm: np.ndarray,
    plane_w_mm: np.ndarray,
    sad_mm: float,
) -> np.ndarray:
    """Cumulative radiological depth table ``[v ray, u ray, plane]`` (float32, mm) for a fan of rays."""
    n_v = ray_v_iso_mm.shape[0]
    n_u = ray_u_iso_mm.shape[0]
    n_w = plane_w_mm.shape[0]
    table = np.empty((n_v, n_u, n_w), dtype=np.float32)
    for ray in prange(n_v * n_u):
        iv = ray // n_u
        iu = ray - iv * n_u
        direction = np.empty(3)
        for axis in range(3):
            direction[axis] = (
                iso_mm[axis]
                + ray_u_iso_mm[iu] * u_axis[axis]
                + ray_v_iso_mm[iv] * v_axis[axis]
                - source_mm[axis]
            )
        length_to_iso = np.sqrt(direction[0] ** 2 + direction[1] ** 2 + direction[2] ** 2)
        direction /= length_to_iso
        sample_t = plane_w_mm * (length_to_iso / sad_mm)
        depth = np.empty(n_w)
        _cumulative_depth_along_ray(density, spacing_mm, source_mm, direction, sample_t, depth)
        for s in range(n_w):
            table[iv, iu, s] = depth[s]
    return table


def _to_lattice_frame(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, origin): lattice coordinates (mm) = rotation @ (ras − origin)."""
    return grid.direction.T.copy(), grid.origin_ras


def radiological_path_mm(
    density: np.ndarray, grid: Grid, start_ras: np.ndarray, end_ras: np.ndarray
) -> float:
    """Water-equivalent length (mm) of the straight segment from ``start_ras`` to ``end_ras``."""
    rotation, origin = _to_lattice_frame(grid)
    start = rotation @ (np.asarray(start_ras, dtype=np.float64) - origin)
    end = rotation @ (np.asarray(end_ras, dtype=np.float64) - origin)
    length = float(np.linalg.norm(end - start))
    if length == 0.0:
        return 0.0
    out = np.empty(1)
    _cumulative_depth_along_ray(
        np.ascontiguousarray(density, dtype=np.float32),
        grid.spacing_mm,
        start,
        (end - start) / length,
        np.array([length]),
        out,
    )
    return float(out[0])


@dataclass(frozen=True)
class DepthTable:
    """Cumulative radiological depth (mm) on a fan: ``depth_mm[v ray, u ray, plane]``.

    Ray ``(iv, iu)`` passes through the isocentre-plane point ``(u0 + iu·step, v0 + iv·step)``;
    plane ``n`` lies at distance ``w0 + n·w_step`` from the source along the central axis.
    """

    depth_mm: np.ndarray
    u0_mm: float
    v0_mm: float
    ray_step_mm: float
    w0_mm: float
    w_step_mm: float


def trace_depth_table(
    density: np.ndarray,
    grid: Grid,
    beam: BeamGeometry,
    u_range_iso_mm: tuple[float, float],
    v_range_iso_mm: tuple[float, float],
    w_range_mm: tuple[float, float],
    ray_step_mm: float,
    w_step_mm: float,
) -> DepthTable:
    """Trace the fan covering the given isocentre-plane rectangle and source-distance range."""
    rotation, origin = _to_lattice_frame(grid)
    ray_u = _regular_samples(*u_range_iso_mm, ray_step_mm)
    ray_v = _regular_samples(*v_range_iso_mm, ray_step_mm)
    planes = _regular_samples(*w_range_mm, w_step_mm)
    table = _trace_fan(
        np.ascontiguousarray(density, dtype=np.float32),
        grid.spacing_mm,
        rotation @ (beam.source_ras - origin),
        rotation @ (np.asarray(beam.isocenter_ras) - origin),
        rotation @ beam.u_axis_ras,
        rotation @ beam.v_axis_ras,
        ray_u,
        ray_v,
        planes,
        float(beam.sad_mm),
    )
    return DepthTable(table, ray_u[0], ray_v[0], ray_step_mm, planes[0], w_step_mm)


def _regular_samples(low: float, high: float, step: float) -> np.ndarray:
    """Points ``low, low + step, …`` up to the first one ≥ ``high`` (at least two)."""
    count = max(2, int(np.ceil((high - low) / step - 1e-9)) + 1)
    return low + step * np.arange(count, dtype=np.float64)
