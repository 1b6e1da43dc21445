"""A plan's text outputs as every front end writes them: ``dvh.csv`` and JSON (metrics, plan)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_dvh_csv", "write_json"]


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
