"""Third-party DICOM tools that check RadAgent's DICOM RT import and export (a module, not a plugin).

plastimatch writes reference CT series and RTSTRUCTs from NRRD volumes, dciodvfy (dicom3tools) validates
files against the DICOM information object definitions, and dicompyler-core computes reference DVHs.
dicompyler-core 0.5.6 needs pydicom 2 while the core uses pydicom 3, so it runs in its own virtual
environment (``.venv-dicompyler`` at the repository root, built on first use) as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NoReturn

import numpy as np
import pydicom
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DICOMPYLER_VENV = REPO_ROOT / ".venv-dicompyler"
DICOMPYLER_SCRIPT = Path(__file__).with_name("dicompyler_dvh.py")
# Known to work on Python 3.11 (built and checked with numpy 2.4, matplotlib 3.11, six 1.17).
DICOMPYLER_REQUIREMENTS = (
    "dicompyler-core==0.5.6",
    "pydicom>=2.4,<3",
    "numpy>=1.24",
    "matplotlib>=3.7",
    "six>=1.16",
)
REQUIRE_VARIABLE = "RADAGENT_REQUIRE_DICOM_TOOLS"
INSTALL_HINT = "apt-get install plastimatch dicom3tools"
PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP")

_ISSUE = re.compile(r"(?:^|\s)(Error|Warning) - ")
_STALE_BUILD_S = 3600.0


def _unavailable(reason: str) -> NoReturn:
    """Skip the calling test, or fail it where ``RADAGENT_REQUIRE_DICOM_TOOLS=1`` (as CI sets)."""
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1 requires the DICOM tools)")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of the executable ``name``; skips the test without it (fails it where CI requires the tools)."""
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not installed (install it with: {INSTALL_HINT})")
    return path


def _tail(text: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a tool's output."""
    return "\n".join(text.strip().splitlines()[-lines:])


def plastimatch_series(
    ct_nrrd: Path, masks: dict[str, Path] | Path, out_dir: Path, patient_position: str = "HFS"
) -> Path:
    """Write ``ct_nrrd`` and binary ``masks`` (name → NRRD, or a folder of ``<name>.nrrd``) as DICOM.

    Returns ``out_dir``, holding CT slices ``image0000.dcm``… (in the volume's k order) and ``rtss.dcm``.
    """
    # An int16 CT keeps its HU exactly (slope 1); a float CT is stored with a fractional RescaleSlope.
    # ROIs are numbered 1… in the folder's listing order (not sorted); an all-zero mask gets no ROI.
    position = patient_position.upper()
    if position not in PATIENT_POSITIONS:  # plastimatch writes any string it is given
        raise ValueError(f"patient position {patient_position!r} is not one of {PATIENT_POSITIONS}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty; plastimatch would mix its files with those there")
    executable = require_tool("plastimatch")
    command = [executable, "convert", "--input", str(ct_nrrd), "--output-dicom", str(out_dir)]
    command += ["--patient-pos", position.lower(), "--filenames-without-uids"]
    with tempfile.TemporaryDirectory(prefix="plastimatch-masks-") as scratch:
        if isinstance(masks, dict):
            prefix = Path(scratch)
            for name, mask in masks.items():
                if not name or "/" in name or name.startswith("."):
                    raise ValueError(f"structure name {name!r} cannot be a file name")
                (prefix / f"{name}{Path(mask).suffix}").symlink_to(Path(mask).resolve())
        else:
            prefix = Path(masks)
            if not prefix.is_dir():  # plastimatch silently writes no RTSTRUCT for a missing folder
                raise FileNotFoundError(f"mask folder {prefix} does not exist")
        with_rtstruct = any(prefix.iterdir())
        if with_rtstruct:
            command += ["--input-prefix", str(prefix)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    written = any(out_dir.glob("image*.dcm")) and (out_dir / "rtss.dcm").is_file() == with_rtstruct
    if done.returncode != 0 or not written:
        output = _tail(done.stdout + done.stderr)
        raise RuntimeError(f"plastimatch failed (exit {done.returncode}): {' '.join(command)}\n{output}")
    return out_dir


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """Validate one DICOM file with dciodvfy: its (error lines, warning lines), as printed.

    A file dciodvfy cannot read (an ``Abort -`` line) counts as an error. dciodvfy 1.00 (Debian) aborts
    on 32-bit pixel data (an RTDOSE's usual), so such a file is checked as a copy with 16-bit pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    executable = require_tool("dciodvfy")
    notes: list[str] = []
    done = _run_dciodvfy(executable, path)
    if done.returncode not in (0, 1) and "bitsallocated <= bytesinword" in done.stderr:
        with tempfile.TemporaryDirectory(prefix="dciodvfy-") as scratch:
            copy = Path(scratch) / path.name
            _with_16_bit_pixels(path, copy)
            done = _run_dciodvfy(executable, copy)
        notes.append("Warning - (dicom_tools) 32-bit pixel data: validated a copy with 16-bit pixels")
    if done.returncode not in (0, 1):  # 1 whenever there is an error; a crash otherwise
        raise RuntimeError(f"dciodvfy crashed (exit {done.returncode}) on {path}:\n{_tail(done.stderr)}")
    errors: list[str] = []
    warnings: list[str] = notes
    for line in (done.stdout + done.stderr).splitlines():  # the report goes to stderr
        line = line.strip()
        match = _ISSUE.search(line)
        if line.startswith("Abort - ") or (match and match.group(1) == "Error"):
            errors.append(line)
        elif match:
            warnings.append(line)
    return errors, warnings


def _run_dciodvfy(executable: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)


def _with_16_bit_pixels(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with zero 16-bit pixel data of the same size (all else as is)."""
    dataset = pydicom.dcmread(source)
    count = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("NumberOfFrames", 1) or 1)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelData = bytes(2 * count * int(dataset.get("SamplesPerPixel", 1)))
    dataset["PixelData"].VR = "OW"
    dataset.save_as(target)


def _remove_stale_builds() -> None:
    """Delete temporary venv builds left by interrupted runs (older than an hour)."""
    for folder in REPO_ROOT.glob(f"{DICOMPYLER_VENV.name}.build-*"):
        try:
            if time.time() - folder.stat().st_mtime > _STALE_BUILD_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


_python: Path | None = None


def dicompyler_python() -> Path:
    """The interpreter of ``.venv-dicompyler``, built once (in a temporary sibling renamed into place)."""
    global _python
    if _python is not None:
        return _python
    python = DICOMPYLER_VENV / "bin" / "python"
    if not python.exists():
        _remove_stale_builds()
        build = DICOMPYLER_VENV.with_name(
            f"{DICOMPYLER_VENV.name}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        try:
            for step in (
                [sys.executable, "-m", "venv", str(build)],
                [str(build / "bin" / "python"), "-m", "pip", "install", "-q", *DICOMPYLER_REQUIREMENTS],
                [str(build / "bin" / "python"), "-c", "import dicompylercore.dvhcalc"],
            ):
                done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
                if done.returncode != 0:
                    _unavailable(
                        f"cannot build {DICOMPYLER_VENV.name} ({' '.join(step[-3:])}):\n"
                        f"{_tail(done.stdout + done.stderr)}"
                    )
            try:
                build.rename(DICOMPYLER_VENV)  # the venv appears complete or not at all
            except OSError:
                if not python.exists():  # not another process that finished first
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
    _python = python
    return python


def dicompyler_dvhs(rtstruct: Path, rtdose: Path, roi_names: list[str] | None = None) -> dict[str, dict]:
    """Cumulative DVHs of ``roi_names`` (all ROIs when None) by dicompyler-core, keyed by ROI name.

    Each is ``{"roi_number", "volume_cc", "dose_gy", "cumulative_cc", "notes"}``: ``cumulative_cc[n]``
    is the volume receiving at least ``dose_gy[n]`` (0.01 Gy steps). Options: see ``dicompyler_dvh.py``.
    """
    if roi_names is not None and not roi_names:
        return {}
    command = [str(dicompyler_python()), str(DICOMPYLER_SCRIPT), str(rtstruct), str(rtdose)]
    for name in roi_names or []:
        command += ["--roi", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dicompyler-core failed (exit {done.returncode}):\n{_tail(done.stderr)}")
    report = json.loads(done.stdout)
    if report["dose_units"] != "GY":  # dicompyler-core reads pixel × DoseGridScaling as Gy regardless
        raise ValueError(f"{rtdose}: DoseUnits is {report['dose_units']!r}; dicompyler-core assumes GY")
    dvhs = {}
    for name, roi in report["rois"].items():
        dvhs[name] = {
            **roi,
            "dose_gy": np.asarray(roi["dose_gy"], dtype=np.float64),
            "cumulative_cc": np.asarray(roi["cumulative_cc"], dtype=np.float64),
        }
    return dvhs


def volume_at_dose(dvh: dict, dose_gy: float) -> float:
    """Vx: the percentage of the ROI volume receiving at least ``dose_gy`` (linear between 0.01 Gy bins)."""
    if dvh["volume_cc"] <= 0:
        return 0.0
    doses = np.append(dvh["dose_gy"], dvh["dose_gy"][-1] + 0.01)  # nothing reaches the top bin's end
    cc = np.interp(dose_gy, doses, np.append(dvh["cumulative_cc"], 0.0), left=dvh["volume_cc"])
    return float(100.0 * cc / dvh["volume_cc"])


def dose_at_volume(dvh: dict, percent: float) -> float:
    """Dx: the highest bin dose (Gy, 0.01 Gy steps) that at least ``percent`` % of the ROI receives."""
    needed = percent / 100.0 * dvh["volume_cc"] * (1.0 - 1e-9)
    reached = np.flatnonzero(dvh["cumulative_cc"] >= needed)
    return float(dvh["dose_gy"][reached[-1]]) if reached.size else 0.0
