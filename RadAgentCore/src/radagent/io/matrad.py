"""Reader for matRad / CORT phantoms (``.mat``: a ``ct`` struct and a ``cst`` cell array) → :class:`Case`.

The matRad format, as matRad itself reads and writes it (e0404/matRad: ``matRad_getWorldAxes.m``,
``matRad_cubeIndex2worldCoords.m``, ``matRad_world2cubeIndex.m``, ``matRad_importDicomCt.m``; the
same in pyRadPlan 0.5.0 ``ct/_ct.py`` and ``io/matlab/_importer.py``):

* ``ct.cubeHU{1}`` (HU) or ``ct.cube{1}`` (relative electron density) is indexed (row, column, slice)
  = (y, x, z), and ``ct.cubeDim`` = [ny, nx, nz].
* ``cst{n,4}{1}`` holds 1-based MATLAB linear indices into that cube, column-major (y runs fastest).
* ``ct.x(c)``, ``ct.y(r)``, ``ct.z(s)`` are the world coordinates (mm) of column c, row r, slice s.
  Without them matRad takes ``dicomInfo.ImagePositionPatient`` as the first voxel, or else centres
  the cube: first voxel at −(dims/2)·resolution.
* The world frame is DICOM LPS: the DICOM importer mirrors rows/columns so that they run along +x
  and +y of LPS and sorts slices by increasing z. Phantoms without ``dicomInfo`` carry no orientation;
  we read them the same way (LPS, head-first supine), the standard assumption.

Our convention (see :mod:`radagent.geometry`): ``array[k, j, i] = cube[j, i, k]`` (k = slice, j = row,
i = column) and RAS = diag(−1, −1, 1) · LPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import io as scipy_io

from radagent.beams import PATIENT_POSITIONS
from radagent.density import DensityCalibration
from radagent.errors import InputError
from radagent.geometry import Grid, lps_to_ras_matrix
from radagent.io.inputs import BODY_NAMES, case_with_roles
from radagent.patient import Case, Protocol

__all__ = ["MatradStructure", "read_matrad", "read_matrad_structures"]

# matRad objective classes whose dose parameter is the dose the target should get.
_PRESCRIBING_OBJECTIVES = ("squareddeviation", "square deviation", "squaredunderdosing", "square underdosing")


@dataclass(frozen=True)
class MatradStructure:
    """One cst row: name, matRad type (TARGET / OAR / IGNORED), mask on our [k, j, i] CT array."""

    name: str
    matrad_type: str
    mask: np.ndarray
    reference_dose_gy: float | None


def read_matrad(
    path: str | Path,
    *,
    targets: Sequence[str] | None = None,
    oars: Sequence[str] | None = None,
    body: str | None = None,
    prescription_gy: float | None = None,
    fractions: int = 1,
) -> Case:
    """Read a matRad ``.mat`` phantom (CORT: TG119, PROSTATE, LIVER, …) into a :class:`Case`.

    Roles default to the cst types (TARGET, OAR; IGNORED is left out), the body is found as
    :func:`radagent.io.inputs.case_with_roles` finds it (BODY / External / Skin, …); ``targets``,
    ``oars`` and ``body`` name them instead. The prescription is the highest dose of the targets'
    squared-deviation (or -underdosing) objectives unless ``prescription_gy`` is given.
    """
    path = Path(path)
    ct, cst = _load(path)
    ct_hu, grid, position = _read_ct(ct, path, DensityCalibration())
    structures = _read_cst(cst, grid.shape, path)
    named = {*(targets or ()), *(oars or ()), *([body] if body else [])}
    unnamed = [s for s in structures if s.name not in named and s.name.strip().lower() not in BODY_NAMES]
    if targets is None:
        targets = [s.name for s in unnamed if s.matrad_type == "TARGET"]
    if oars is None:
        oars = [s.name for s in unnamed if s.matrad_type == "OAR" and s.name not in targets]
    if not targets:
        raise InputError(f"{path.name}: no structure of cst type TARGET; name the targets with targets=")
    case = case_with_roles(
        ct_hu,
        grid,
        [(s.name, s.mask) for s in structures],
        targets=targets,
        oars=oars,
        body=body,
        protocol=Protocol(_prescription(structures, targets, prescription_gy, path), fractions),
        name=path.stem,
        patient_position=position,
        description=f"matRad phantom {path.name}",
    )
    return case if prescription_gy is not None else _with_reference_levels(case, structures)


def _with_reference_levels(case: Case, structures: Sequence[MatradStructure]) -> Case:
    """Targets whose cst objectives ask for different doses get them as their dose levels (a CORT
    head-and-neck phantom's PTVs); one dose for all leaves the case as it is."""
    reference = {s.name: s.reference_dose_gy for s in structures if s.reference_dose_gy is not None}
    levels = {t.name: reference[t.name] for t in case.targets if t.name in reference}
    if len(set(levels.values())) < 2:
        return case
    leveled = (replace(s, dose_gy=levels[s.name]) if s.name in levels else s for s in case.structures)
    return replace(case, structures=tuple(leveled))


def read_matrad_structures(path: str | Path) -> tuple[Grid, list[MatradStructure]]:
    """The CT grid and every cst structure of a matRad file, before any role assignment."""
    path = Path(path)
    ct, cst = _load(path)
    _, grid, _ = _read_ct(ct, path, DensityCalibration())
    return grid, _read_cst(cst, grid.shape, path)


def _load(path: Path) -> tuple[Any, np.ndarray]:
    if not path.is_file():
        raise InputError(f"matRad file not found: {path}")
    try:
        content = scipy_io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise InputError(
            f"{path.name} is a MATLAB v7.3 (HDF5) file, which is not supported; "
            "re-save it in MATLAB with save(file, 'ct', 'cst', '-v7')"
        ) from None
    except Exception as error:
        raise InputError(f"{path.name} is not a readable MATLAB .mat file ({error})") from None
    missing = [key for key in ("ct", "cst") if key not in content]
    if missing:
        raise InputError(f"{path.name} has no {' or '.join(missing)} variable; it is not a matRad phantom")
    return content["ct"], np.asarray(content["cst"], dtype=object)


def _field(struct: Any, name: str, default: Any = None) -> Any:
    return getattr(struct, name, default)


def _cube(ct: Any, name: str, path: Path) -> np.ndarray:
    """The first scenario of ``ct.<name>`` as a float (y, x, z) array."""
    cube = _field(ct, name)
    if cube is None:
        raise InputError(f"{path.name}: the ct struct has neither cubeHU nor cube")
    if isinstance(cube, np.ndarray) and cube.dtype == object:
        cube = cube.flat[0]  # a cell of CT scenarios; the first is the planning CT
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim == 2:
        cube = cube[:, :, np.newaxis]  # MATLAB drops a trailing singleton slice dimension
    if cube.ndim != 3:
        raise InputError(f"{path.name}: ct.{name} must be a 3D array, got shape {cube.shape}")
    return cube


def _read_ct(ct: Any, path: Path, calibration: DensityCalibration) -> tuple[np.ndarray, Grid, str]:
    """HU array in [k, j, i], the RAS grid and the patient position.

    Files with only ``ct.cube`` (electron densities) get the HU that ``calibration`` maps back to them.
    """
    name = "cubeHU" if _field(ct, "cubeHU") is not None else "cube"
    cube = _cube(ct, name, path)
    ny, nx, nz = cube.shape
    dims = _field(ct, "cubeDim")
    if dims is not None:
        dims = (*(int(n) for n in np.atleast_1d(dims)), 1)[:3]
        if dims != cube.shape:
            raise InputError(f"{path.name}: ct.cubeDim {dims} does not match the cube's shape {cube.shape}")
    resolution = _field(ct, "resolution")
    try:
        spacing = np.array([float(_field(resolution, axis)) for axis in "xyz"])
    except (TypeError, ValueError):
        raise InputError(f"{path.name}: ct.resolution must have numeric x, y and z (mm)") from None
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path.name}: ct.resolution must be positive, got {spacing}")
    first_lps, step_lps = _world_axes(ct, (nx, ny, nz), spacing, path)
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag(step_lps)  # columns: LPS steps of i (column, x), j (row, y), k (slice, z)
    matrix[:3, 3] = first_lps
    grid = Grid((nz, ny, nx), lps_to_ras_matrix() @ matrix)
    hu = cube if name == "cubeHU" else _hu_from_density(cube, calibration)
    return np.transpose(hu, (2, 0, 1)), grid, _patient_position(ct)


def _world_axes(
    ct: Any, counts: tuple[int, int, int], spacing: np.ndarray, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """LPS position of the first voxel and the signed LPS step per index along x, y, z (mm)."""
    vectors = [_field(ct, axis) for axis in "xyz"]
    if all(v is not None and np.size(v) > 0 for v in vectors):
        first, step = np.zeros(3), spacing.copy()
        for axis, (vector, count) in enumerate(zip(vectors, counts, strict=True)):
            values = np.atleast_1d(np.asarray(vector, dtype=np.float64))
            if values.size != count:
                raise InputError(
                    f"{path.name}: ct.{'xyz'[axis]} has {values.size} coordinates for {count} voxels"
                )
            first[axis] = values[0]
            if count > 1:
                step[axis] = (values[-1] - values[0]) / (count - 1)
                if not np.allclose(np.diff(values), step[axis], atol=1e-3 * spacing[axis] + 1e-4):
                    raise InputError(f"{path.name}: ct.{'xyz'[axis]} is not evenly spaced")
        return first, step
    dicom = _field(ct, "dicomInfo")
    position = _field(dicom, "ImagePositionPatient")
    if position is not None and np.size(position) == 3:
        return np.asarray(position, dtype=np.float64).ravel(), spacing
    return -np.asarray(counts, dtype=np.float64) / 2.0 * spacing, spacing


def _patient_position(ct: Any) -> str:
    position = _field(_field(ct, "dicomInfo"), "PatientPosition")
    if isinstance(position, str) and position.strip().upper() in PATIENT_POSITIONS:
        return position.strip().upper()
    return "HFS"


def _hu_from_density(density: np.ndarray, calibration: DensityCalibration) -> np.ndarray:
    """HU that the case's calibration maps back to the stored electron densities (its inverse)."""
    table = np.asarray(calibration.points, dtype=np.float64)
    red, first = np.unique(table[:, 1], return_index=True)  # the inverse needs a strictly rising RED
    return np.interp(density, red, table[first, 0])


def _read_cst(cst: np.ndarray, shape: tuple[int, int, int], path: Path) -> list[MatradStructure]:
    if cst.ndim == 1:
        cst = cst[np.newaxis, :]  # one structure: squeezed to a single row
    if cst.ndim != 2 or cst.shape[1] < 4:
        raise InputError(f"{path.name}: cst must be an N×6 cell array, got shape {cst.shape}")
    nz, ny, nx = shape
    structures = []
    for row in cst:
        name = str(row[1]).strip()
        matrad_type = str(row[2]).strip().upper()
        indices = row[3]
        if isinstance(indices, np.ndarray) and indices.dtype == object:
            indices = indices.flat[0] if indices.size else np.array([])
        indices = np.atleast_1d(np.asarray(indices, dtype=np.float64)).ravel()
        if indices.size == 0:
            continue  # matRad keeps empty placeholder structures; they cannot be planned on
        if np.any(indices != np.round(indices)) or indices.min() < 1 or indices.max() > nx * ny * nz:
            raise InputError(
                f"{path.name}: structure '{name}' has voxel indices outside 1…{nx * ny * nz} "
                "(1-based linear indices into the CT cube)"
            )
        row_y, column_x, slice_z = np.unravel_index(indices.astype(np.int64) - 1, (ny, nx, nz), order="F")
        mask = np.zeros(shape, dtype=bool)
        mask[slice_z, row_y, column_x] = True
        objectives = row[5] if len(row) > 5 else None
        structures.append(MatradStructure(name, matrad_type, mask, _reference_dose_gy(objectives)))
    return structures


def _reference_dose_gy(objectives: Any) -> float | None:
    """The highest dose of a squared-deviation/underdosing objective (matRad ≥ 2.10 and older layouts)."""
    if objectives is None:
        return None
    items = list(np.atleast_1d(objectives).ravel()) if isinstance(objectives, np.ndarray) else [objectives]
    doses = []
    for item in items:
        kind = _field(item, "className", _field(item, "type", ""))
        kind = str(kind).rsplit("matRad_", 1)[-1].lower()
        if kind not in _PRESCRIBING_OBJECTIVES:
            continue
        dose = _field(item, "parameters", _field(item, "dose"))
        if isinstance(dose, np.ndarray) and dose.size:
            dose = dose.flat[0]
        try:
            doses.append(float(dose))
        except (TypeError, ValueError):
            continue
    valid = [d for d in doses if np.isfinite(d) and d > 0]
    return max(valid) if valid else None


def _prescription(
    structures: list[MatradStructure], targets: Sequence[str], prescription_gy: float | None, path: Path
) -> float:
    if prescription_gy is not None:
        return float(prescription_gy)
    folded = {name.casefold() for name in targets}
    doses = [s.reference_dose_gy for s in structures if s.name.casefold() in folded]
    doses = [d for d in doses if d is not None]
    if not doses:
        raise InputError(
            f"{path.name}: the targets carry no dose objective to take the prescription from; "
            "give prescription_gy"
        )
    return max(doses)
