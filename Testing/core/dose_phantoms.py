"""Phantoms and dose sampling shared by the dose-engine tests (imported as a module, not a plugin)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from radagent.dose import DoseInfluence
from radagent.geometry import Grid
from radagent.patient import Case, Protocol, Role, Structure


def box_case(
    half_size_mm: Sequence[float] = (120.0, 125.0, 120.0),
    spacing_mm: float = 4.0,
    inserts: Sequence[tuple[Sequence[float], Sequence[float], float]] = (),
    direction: np.ndarray | None = None,
    target_centre_ras: Sequence[float] = (0.0, 0.0, 0.0),
    air_margin_mm: float = 20.0,
) -> Case:
    """A water box centred at the RAS origin in air, with box inserts ``(centre, half size, HU)``.

    The CT lattice may be oblique (``direction``, columns = i, j, k axes in RAS); the body is the box,
    the target a 20 mm cube at ``target_centre_ras``.
    """
    half = np.asarray(half_size_mm, dtype=np.float64)
    rotation = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    covered_half = half if direction is None else np.full(3, np.linalg.norm(half))
    counts = np.ceil(2.0 * (covered_half + air_margin_mm) / spacing_mm).astype(int)
    origin = -rotation @ ((counts - 1) / 2.0 * spacing_mm)
    grid = Grid.from_spacing(tuple(counts[::-1]), (spacing_mm,) * 3, tuple(origin), rotation)
    ras = voxel_centres_ras(grid)
    inside = np.all(np.abs(ras) <= half, axis=-1)
    hu = np.where(inside, 0.0, -1000.0).astype(np.float32)
    for centre, insert_half, insert_hu in inserts:
        hu[inside & np.all(np.abs(ras - np.asarray(centre)) <= np.asarray(insert_half), axis=-1)] = insert_hu
    target = np.all(np.abs(ras - np.asarray(target_centre_ras)) <= 10.0, axis=-1)
    structures = (Structure("Body", Role.BODY, inside), Structure("PTV", Role.TARGET, target))
    return Case("box", hu, grid, structures, Protocol(2.0))


def voxel_centres_ras(grid: Grid) -> np.ndarray:
    """RAS centres of all voxels as an array of shape ``grid.shape + (3,)``."""
    k, j, i = np.indices(grid.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    return grid.ijk_to_ras_points(ijk).reshape((*grid.shape, 3))


def dose_at(influence: DoseInfluence, dose_gy: np.ndarray, points_ras: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a flat dose on the influence's dose grid at RAS points (N, 3)."""
    ijk = influence.dose_grid.ras_to_ijk_points(np.asarray(points_ras, dtype=np.float64))
    volume = np.asarray(dose_gy).reshape(influence.dose_grid.shape)
    return ndimage.map_coordinates(volume, ijk[:, ::-1].T, order=1, mode="nearest")


def line(start_ras: Sequence[float], direction: Sequence[float], distances_mm: np.ndarray) -> np.ndarray:
    """Points ``start + t·direction`` (RAS mm) for each distance ``t``."""
    return np.asarray(start_ras, dtype=np.float64) + np.outer(distances_mm, direction)
