"""A :class:`Case` saved losslessly in one ``.npz`` file: CT, grid, structures with roles, protocol.

The Slicer module exports a case from its scene into such an archive for its worker process; a request
names it as its patient (``{"archive": "case.npz"}``), so any front end can plan it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from radagent.errors import InputError
from radagent.evaluate.scorecard import card_by_name
from radagent.geometry import Grid
from radagent.io.atomic import atomic_path
from radagent.patient import Case, Protocol, Structure

__all__ = ["ARCHIVE_FORMAT", "read_case_archive", "write_case_archive"]

ARCHIVE_FORMAT = 2  # 2: structures carry their dose level; 1 is still read


def write_case_archive(case: Case, path: str | Path) -> None:
    """Save ``case`` to ``path`` through a temporary sibling, so the file is complete or absent."""
    path = Path(path)
    meta = {
        "format": ARCHIVE_FORMAT,
        "name": case.name,
        "structures": [[s.name, str(s.role), s.dose_gy] for s in case.structures],
        "prescription_gy": case.prescription_gy,
        "fractions": int(case.protocol.fractions),
        "scorecard": case.protocol.scorecard.name if case.protocol.scorecard is not None else None,
        "patient_position": case.patient_position,
        "description": case.description,
    }
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(
            handle,
            ct_hu=case.ct_hu,
            ijk_to_ras=case.grid.ijk_to_ras,
            masks=np.stack([s.mask for s in case.structures]),
            meta=np.array(json.dumps(meta)),
        )


def read_case_archive(path: str | Path) -> Case:
    """The Case saved by :func:`write_case_archive`; a missing or foreign file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"case archive {path} does not exist")
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            ct_hu, matrix, masks = data["ct_hu"], data["ijk_to_ras"], data["masks"]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path} is not a radagent case archive ({error})") from None
    if meta.get("format") not in (1, ARCHIVE_FORMAT):
        raise InputError(f"{path} is a case archive of format {meta.get('format')}, not {ARCHIVE_FORMAT}")
    card = card_by_name(meta["scorecard"]) if meta["scorecard"] else None
    return Case(
        name=meta["name"],
        ct_hu=ct_hu,
        grid=Grid(ct_hu.shape, matrix),
        structures=tuple(
            Structure(entry[0], entry[1], mask, *entry[2:])  # format 1: [name, role]
            for entry, mask in zip(meta["structures"], masks, strict=True)
        ),
        protocol=Protocol(meta["prescription_gy"], meta["fractions"], card),
        patient_position=meta["patient_position"],
        description=meta["description"],
    )
