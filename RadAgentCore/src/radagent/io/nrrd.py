"""NRRD volumes ↔ (array ``[k, j, i]``, :class:`Grid` in RAS), read and written as 3D Slicer does.

Reading follows Slicer's ``vtkTeemNRRDReader``: 'space directions' and 'space origin' are taken in the
file's 'space' and turned into RAS — right-anterior-superior as is, left-anterior-superior with x
negated, left-posterior-superior with x and y negated; any other space (scanner-xyz,
3D-right-handed, …, or none) is used as it stands. Without 'space directions' the 'spacings' give an
axis-aligned grid at the origin. Writing uses 'space: left-posterior-superior', as Slicer writes, with
gzip encoding, to a temporary file in the same folder that then replaces the target (so a reader never
sees half a file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from radagent.errors import InputError
from radagent.geometry import Grid, lps_to_ras_matrix
from radagent.io.atomic import atomic_path

__all__ = ["geometry_from_header", "read_nrrd", "read_volume", "write_nrrd", "write_volume"]

# Sign flips that take each named NRRD space to RAS (vtkTeemNRRDReader::ExecuteInformation).
_TO_RAS = {
    "right-anterior-superior": np.array([1.0, 1.0, 1.0]),
    "RAS": np.array([1.0, 1.0, 1.0]),
    "left-anterior-superior": np.array([-1.0, 1.0, 1.0]),
    "LAS": np.array([-1.0, 1.0, 1.0]),
    "left-posterior-superior": np.array([-1.0, -1.0, 1.0]),
    "LPS": np.array([-1.0, -1.0, 1.0]),
}
_TIME_SPACES = (
    "right-anterior-superior-time",
    "left-anterior-superior-time",
    "left-posterior-superior-time",
    "scanner-xyz-time",
    "3D-right-handed-time",
    "3D-left-handed-time",
    "RAST",
    "LAST",
    "LPST",
)
DOMAIN_KINDS = ("domain", "space", "time")


def read_volume(path: str | Path) -> tuple[np.ndarray, Grid]:
    """A 3D NRRD volume as (array indexed ``[k, j, i]``, its RAS grid)."""
    data, header = read_nrrd(path)
    if data.ndim != 3:
        raise InputError(f"{Path(path).name}: expected a 3D volume, the NRRD has {data.ndim} dimensions")
    return data, geometry_from_header(header, spatial_axes=(0, 1, 2), path=path)


def write_volume(
    path: str | Path,
    array: np.ndarray,
    grid: Grid,
    extra_fields: Mapping[str, str] | None = None,
) -> None:
    """Write a 3D ``[k, j, i]`` array on ``grid`` as a gzip NRRD in LPS (Slicer's convention)."""
    array = np.asarray(array)
    if array.shape != grid.shape:
        raise InputError(f"array shape {array.shape} does not match its grid {grid.shape}")
    header: dict[str, Any] = {"kinds": ["domain", "domain", "domain"], **_lps_geometry(grid)}
    header.update(extra_fields or {})
    write_nrrd(path, array, header)


def write_nrrd(path: str | Path, array: np.ndarray, header: Mapping[str, Any]) -> None:
    """Write ``array`` (C order, fastest NRRD axis last) with ``header``, gzip-encoded and atomically."""
    path = Path(path)
    if path.suffix.lower() == ".nhdr":
        raise InputError(f"{path.name}: write a single .nrrd file (a detached .nhdr header is not supported)")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {path.parent} does not exist")
    fields = {"encoding": "gzip", **header}
    with atomic_path(path) as temporary:  # an attached header: the name does not end in .nhdr
        nrrd.write(str(temporary), np.ascontiguousarray(array), dict(fields), index_order="C")


def geometry_from_header(
    header: Mapping[str, Any], spatial_axes: tuple[int, int, int], path: str | Path
) -> Grid:
    """The RAS grid of the NRRD axes ``spatial_axes`` (file order: fastest first, i, j, k)."""
    name = Path(path).name
    sizes = np.asarray(header["sizes"], dtype=int)
    shape = tuple(int(sizes[axis]) for axis in reversed(spatial_axes))
    space = header.get("space")
    if space in _TIME_SPACES:
        raise InputError(f"{name}: space '{space}' has a time axis; a 3D volume is expected")
    flip = _TO_RAS.get(space, np.ones(3)) if space is not None else np.ones(3)
    matrix = np.eye(4)
    if header.get("space directions") is not None:
        directions = np.asarray(header["space directions"], dtype=np.float64)
        columns = directions[list(spatial_axes), :3]
        matrix[:3, :3] = (columns * flip).T
        origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)[:3]
        matrix[:3, 3] = origin * flip
    else:
        spacings = np.asarray(header.get("spacings", np.ones(len(sizes))), dtype=np.float64)
        steps = np.array([spacings[axis] for axis in spatial_axes])
        matrix[:3, :3] = np.diag(np.where(np.isfinite(steps), steps, 1.0))
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{name}: the NRRD geometry (space directions / origin) has NaN or infinite values")
    try:
        return Grid(shape, matrix)
    except ValueError as error:
        raise InputError(f"{name}: invalid NRRD geometry: {error}") from None


def _lps_geometry(grid: Grid) -> dict[str, Any]:
    """Header fields placing a 3D volume on ``grid``, written in LPS as Slicer does."""
    lps = lps_to_ras_matrix() @ grid.ijk_to_ras  # RAS→LPS is the same diagonal flip
    return {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,  # one row per axis i, j, k
        "space origin": lps[:3, 3],
    }


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    return path


def read_nrrd(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(data in C order — NRRD axes reversed, so a volume is ``[k, j, i]`` — and header) of a NRRD file."""
    path = _existing(path)
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, UnicodeDecodeError, ValueError, EOFError) as error:
        raise InputError(f"{path.name} is not a readable NRRD file: {error}") from None
    return data, dict(header)
