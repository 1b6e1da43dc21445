"""Print dicompyler-core's cumulative DVHs of an RTSTRUCT and an RTDOSE as JSON (for dicom_tools.py).

Runs under ``.venv-dicompyler`` (pydicom 2), never in the core environment. ``get_dvh`` is called with
the options closest to counting dose-grid voxel centres inside the contours: no in-plane interpolation
(``interpolation_resolution=None``: the dose pixel centres of the RTDOSE are tested against each contour
polygon), no interpolation between contour planes, no cropping to the structure extents, and
``calculate_full_volume=False`` (contour planes outside the dose grid add no volume). Each contour plane
takes the dose plane within 0.5 mm of it (else one linearly interpolated in z) and counts for the
smallest spacing between the ROI's contour planes; doses are binned in 0.01 Gy (1 cGy) steps.
Limits of dicompyler-core: the RTDOSE must be axis-aligned (one of the eight head/feet-first
orientations, else NotImplementedError); DoseUnits is ignored (pixel × DoseGridScaling is taken as Gy);
an ROI contoured on one plane only has zero thickness, hence zero volume and an empty DVH.

Usage: python dicompyler_dvh.py RTSTRUCT RTDOSE [--roi NAME]...
"""

from __future__ import annotations

import argparse
import json
import sys

from dicompylercore import dicomparser, dvhcalc


def main(argv: list[str]) -> int:
    """Compute the DVHs and print ``{"dose_units", "rois": {name: dvh}}`` on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rtstruct")
    parser.add_argument("rtdose")
    parser.add_argument("--roi", action="append", help="an ROI name (repeat; all ROIs when absent)")
    args = parser.parse_args(argv)
    structure = dicomparser.DicomParser(args.rtstruct)
    dose = dicomparser.DicomParser(args.rtdose)
    numbers: dict[str, int] = {}
    for number, roi in sorted(structure.GetStructures().items()):
        if roi["name"] in numbers:
            raise SystemExit(f"{args.rtstruct}: two ROIs are named {roi['name']!r}")
        numbers[roi["name"]] = number
    wanted = args.roi if args.roi is not None else list(numbers)
    missing = [name for name in wanted if name not in numbers]
    if missing:
        raise SystemExit(f"{args.rtstruct}: no ROI named {missing} (it has {sorted(numbers)})")
    rois = {}
    for name in wanted:
        dvh = dvhcalc.get_dvh(
            structure.ds,
            dose.ds,
            numbers[name],
            calculate_full_volume=False,
            use_structure_extents=False,
            interpolation_resolution=None,
            interpolation_segments_between_planes=0,
        )
        rois[name] = {
            "roi_number": int(numbers[name]),
            "volume_cc": float(dvh.volume),
            "dose_gy": [round(float(d), 6) for d in dvh.bins[:-1]],
            "cumulative_cc": [float(v) for v in dvh.counts],
            "notes": dvh.notes,
        }
    report = {"dose_units": str(getattr(dose.ds, "DoseUnits", "")), "rois": rois}
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
