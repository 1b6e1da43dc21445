"""A plan's outputs as every front end writes them: dose.nrrd, dvh.csv, metrics.json, plan.json, report.png.

Outputs are staged in a temporary folder beside the destination and moved in only when all of them are
written (:func:`staged_folder`), so a failed or cancelled run leaves nothing behind and other files in
the destination are never touched.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radagent.errors import InputError

if TYPE_CHECKING:
    from radagent.patient import Case

__all__ = ["staged_folder", "write_dvh_csv", "write_json", "write_plan_outputs"]


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Indented JSON; NaN or infinity is an error rather than invalid JSON."""
    Path(path).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_dvh_csv(path: str | Path, table: Mapping[str, np.ndarray]) -> None:
    """DVH columns (``dose_gy``, then each structure's volume %) as CSV with 6 significant digits."""
    columns = list(table)
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in zip(*(table[c] for c in columns), strict=True):
            writer.writerow([f"{v:.6g}" for v in row])


def write_plan_outputs(
    folder: str | Path,
    case: Case,
    dose_ct_gy: np.ndarray,
    dvh: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any],
    description: Mapping[str, Any],
    *,
    report: bool = True,
) -> None:
    """Write a plan into ``folder``: ``dose.nrrd`` (Gy, float32, the CT's geometry), ``dvh.csv`` (the
    ``dvh`` columns), ``metrics.json``, ``plan.json`` and, with ``report``, ``report.png``."""
    from radagent.io.nrrd import write_volume

    folder = Path(folder)
    write_volume(folder / "dose.nrrd", np.asarray(dose_ct_gy, dtype=np.float32), case.grid)
    write_dvh_csv(folder / "dvh.csv", dvh)
    write_json(folder / "plan.json", description)
    write_json(folder / "metrics.json", metrics)
    if report:
        from radagent.report import summary_lines, write_report

        write_report(folder / "report.png", case, dose_ct_gy, dvh, summary_lines(metrics))


@contextlib.contextmanager
def staged_folder(out: str | Path, label: str = "output folder") -> Iterator[Path]:
    """A temporary folder whose files are moved into ``out`` (created with its parents) only when the
    block succeeds; files of ``out`` that the block did not write are kept. The temporary folder is
    removed in every case. Errors name ``out`` as ``label`` (the CLI: ``--out``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{label} {out} exists and is not a folder")
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{label} {out} lies under {existing}, which is not a folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=existing))
    try:
        yield staging
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
