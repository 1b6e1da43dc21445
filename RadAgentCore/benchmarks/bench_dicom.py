"""DICOM RT import and export time on a clinical-size series: 130 slices of 512 × 512 with 5 structures.

    .venv/bin/python RadAgentCore/benchmarks/bench_dicom.py [--out results/bench_dicom.json]

The series is the built-in prostate phantom resampled to 0.8 mm pixels and 1.2 mm slices (512 × 512 ×
130, 68 MB of int16 CT) with its body, PTV, bladder, rectum and left femoral head, written by
``radagent.io.dicom_write`` (CT, RTSTRUCT, RTPLAN, RTDOSE; the dose a smooth synthetic field, since only
I/O is timed). The import (``case_from_dicom``: read and check every file, sort and decode the slices,
fill the contours) runs ``--repeats`` times in this process; the first run includes loading the numba
kernels from their cache. Goal: import ≤ 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from radagent.cases import load_case
from radagent.geometry import Grid, resample, resample_mask
from radagent.io.atomic import write_text_atomic
from radagent.io.dicom_read import case_from_dicom, ct_volume, rasterize_roi, read_dicom_folder
from radagent.io.dicom_write import write_dicom_plan
from radagent.patient import Case, Structure

STRUCTURES = ("Body", "PTV", "Bladder", "Rectum", "FemoralHead_L")
SHAPE = (130, 512, 512)
SPACING_MM = (0.8, 0.8, 1.2)


def clinical_size_case() -> Case:
    """The prostate phantom on a 512 × 512 × 130 grid with five structures."""
    phantom = load_case("prostate")
    corners = phantom.grid.corners_ras()
    centre = 0.5 * (corners.min(axis=0) + corners.max(axis=0))
    extent = (np.array(SHAPE[::-1]) - 1) * np.array(SPACING_MM)
    origin = centre - 0.5 * extent * np.array([-1.0, -1.0, 1.0])  # LPS-aligned axes, as a scanner writes
    grid = Grid.from_spacing(SHAPE, SPACING_MM, tuple(origin), np.diag([-1.0, -1.0, 1.0]))
    ct_hu = np.round(resample(phantom.ct_hu, phantom.grid, grid, order=1, fill_value=-1000.0))
    structures = tuple(
        Structure(s.name, s.role, resample_mask(s.mask, phantom.grid, grid))
        for s in phantom.structures
        if s.name in STRUCTURES
    )
    return Case("bench-512", ct_hu, grid, structures, phantom.protocol)


def description(case: Case) -> dict:
    """A plan description with seven beams (what the writer needs for the RTPLAN)."""
    beams = [
        {"gantry_deg": a, "beamlet_weight_sum": 1.0, "jaws_mm": [-40.0, 40.0, -40.0, 40.0]}
        for a in np.linspace(0, 360, 7, endpoint=False)
    ]
    return {"isocenter_ras_mm": list(case.isocenter_ras), "beams": beams, "bixel_mm": 5.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="import runs (3)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()

    start = time.perf_counter()
    case = clinical_size_case()
    build_s = time.perf_counter() - start
    k, j, i = np.indices(case.grid.shape, sparse=True)
    dose_gy = 60.0 * np.exp(-(((i - 256) / 90.0) ** 2 + ((j - 256) / 90.0) ** 2 + ((k - 65) / 40.0) ** 2))
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as folder:
        start = time.perf_counter()
        written = write_dicom_plan(folder, case, dose_gy, description(case))
        export_s = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in written) / 1e6
        imports, stages = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            imported = case_from_dicom(folder)
            imports.append(time.perf_counter() - start)
            # The same work in stages, for the table (files; CT volume; contour filling).
            start = time.perf_counter()
            content = read_dicom_folder(folder)
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            _, grid = ct_volume(content.ct_slices)
            volume_s = time.perf_counter() - start
            start = time.perf_counter()
            for roi in content.rois:
                rasterize_roi(roi, grid)
            stages.append(
                {
                    "read_files_s": read_s,
                    "ct_volume_s": volume_s,
                    "fill_contours_s": time.perf_counter() - start,
                }
            )
    dice = {
        s.name: round(
            2
            * np.count_nonzero(s.mask & imported.structure(s.name).mask)
            / (s.voxel_count + imported.structure(s.name).voxel_count),
            4,
        )
        for s in case.structures
    }
    result = {
        "shape": list(SHAPE),
        "spacing_mm": list(SPACING_MM),
        "structures": list(STRUCTURES),
        "files": len(written),
        "megabytes": round(megabytes, 1),
        "build_case_s": round(build_s, 2),
        "export_s": round(export_s, 2),
        "import_s": [round(t, 3) for t in imports],
        "import_median_s": round(statistics.median(imports), 3),
        "stages_median_s": {key: round(statistics.median(s[key] for s in stages), 3) for key in stages[0]},
        "dice_after_round_trip": dice,
    }
    print(
        f"series {SHAPE[2]}×{SHAPE[1]}×{SHAPE[0]}, {len(STRUCTURES)} structures: "
        f"{len(written)} files, {megabytes:.1f} MB"
    )
    print(f"export (CT, RTSTRUCT, RTPLAN, RTDOSE)   {export_s:6.2f} s")
    print(f"import, each run                        {', '.join(f'{t:.2f}' for t in imports)} s (goal ≤ 2 s)")
    for key, value in result["stages_median_s"].items():
        print(f"  {key:<37} {value:6.2f} s")
    print(f"Dice after the round trip               {min(dice.values()):.4f} (lowest)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
