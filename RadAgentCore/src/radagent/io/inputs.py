"""Assemble a :class:`Case` from files (CT NRRD + Slicer segmentation or labelmap) or in-memory masks.

:func:`case_with_roles` is the one place where named masks become planning structures: names are
matched (exactly, else case-insensitively), masks are resampled onto the CT grid, and the body is
chosen — the one named, else a structure called body / external / skin / outline, else the structure
that contains all the others, else the external contour found in the CT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.geometry import Grid
from radagent.io.nrrd import read_volume
from radagent.io.segmentation import read_labelmap, read_segmentation
from radagent.patient import Case, Protocol, Role, Structure, body_from_ct, structure_on_grid

__all__ = ["card_spellings", "case_from_files", "case_with_roles", "is_body_name"]

BODY_NAMES = ("body", "external", "skin", "outline")
_BODY_NAME = re.compile(r"(body|external|skin|outline)([ _.\-]?\w*)?", re.IGNORECASE)
# A structure "contains all the others" when at least this fraction of their voxels lies inside it.
CONTAINS_FRACTION = 0.99
CT_BODY_NAME = "Body (from CT)"


def case_from_files(
    ct_path: str | Path,
    structures_path: str | Path,
    *,
    targets: Sequence[str],
    oars: Sequence[str] = (),
    labels: dict[str, int] | None = None,
    body: str | None = None,
    prescription_gy: float,
    fractions: int = 1,
    scorecard: ScoreCard | None = None,
    name: str | None = None,
    patient_position: str = "HFS",
) -> Case:
    """A case from a CT NRRD and a ``.seg.nrrd`` (or a labelmap NRRD with ``labels``: name → value).

    The segmentation may lie on another grid than the CT; its masks are resampled onto the CT grid.
    """
    ct_hu, ct_grid = read_volume(ct_path)
    if not np.all(np.isfinite(ct_hu)):
        raise InputError(f"CT {Path(ct_path).name} contains NaN or infinite values")
    if labels:
        masks, mask_grid = read_labelmap(structures_path, labels)
        masks = _complete_labelmap_body(masks, body, [*targets, *oars])
    else:
        masks, mask_grid = read_segmentation(structures_path)
    return case_with_roles(
        ct_hu,
        ct_grid,
        masks,
        mask_grid,
        targets=targets,
        oars=oars,
        body=body,
        protocol=Protocol(prescription_gy, fractions, scorecard),
        name=name or _case_name(ct_path),
        patient_position=patient_position,
        description=f"CT {Path(ct_path).name}, structures {Path(structures_path).name}",
    )


def case_with_roles(
    ct_hu: np.ndarray,
    ct_grid: Grid,
    masks: Sequence[tuple[str, np.ndarray]],
    mask_grid: Grid | None = None,
    *,
    targets: Sequence[str],
    oars: Sequence[str] = (),
    body: str | None = None,
    protocol: Protocol,
    name: str,
    patient_position: str = "HFS",
    description: str = "",
) -> Case:
    """A case from named masks (on ``mask_grid``, default the CT grid) and the roles given by name.

    Structures named in neither ``targets``, ``oars`` nor ``body`` are left out (the body may be found
    automatically, see the module docstring). Unknown names raise an InputError listing the available ones.
    A structure whose name matches one of the score card's case-insensitively takes the card's spelling
    (a segment ``bladder`` is scored as the prostate card's ``Bladder``).
    """
    if not targets:
        raise InputError("name at least one target structure")
    mask_grid = ct_grid if mask_grid is None else mask_grid
    available = [n for n, _ in masks]
    by_name = dict(masks)
    chosen_targets = [_match(n, available) for n in targets]
    chosen_oars = [_match(n, available) for n in oars]
    named = chosen_targets + chosen_oars
    clash = sorted({n for n in named if named.count(n) > 1})
    if clash:
        raise InputError(f"structures given more than one role: {', '.join(clash)}")
    spelled = card_spellings(protocol.scorecard, available)
    on_ct = [
        structure_on_grid(spelled.get(n, n), Role.TARGET, by_name[n], mask_grid, ct_grid)
        for n in chosen_targets
    ]
    on_ct += [
        structure_on_grid(spelled.get(n, n), Role.OAR, by_name[n], mask_grid, ct_grid) for n in chosen_oars
    ]
    body_structure = _body(ct_hu, ct_grid, masks, mask_grid, body, named, on_ct)
    return Case(
        name=name,
        ct_hu=ct_hu,
        grid=ct_grid,
        structures=(body_structure, *on_ct),
        protocol=protocol,
        patient_position=patient_position,
        description=description,
    )


def card_spellings(card: ScoreCard | None, names: Sequence[str]) -> dict[str, str]:
    """Name → the card's spelling, for names matching a card structure only case-insensitively (unless the
    card's spelling is itself one of ``names``)."""
    if card is None:
        return {}
    by_folded = {n.casefold(): n for n in card.structures()}
    return {
        n: by_folded[n.casefold()]
        for n in names
        if n.casefold() in by_folded and by_folded[n.casefold()] != n and by_folded[n.casefold()] not in names
    }


def _match(name: str, available: Sequence[str]) -> str:
    """The available structure called ``name``: exact match first, then a unique case-insensitive one."""
    if name in available:
        return name
    folded = [a for a in available if a.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    listed = ", ".join(available) if available else "none"
    raise InputError(f"no structure named '{name}' in the segmentation (available: {listed})")


def _body(
    ct_hu: np.ndarray,
    ct_grid: Grid,
    masks: Sequence[tuple[str, np.ndarray]],
    mask_grid: Grid,
    body: str | None,
    named: Sequence[str],
    on_ct: Sequence[Structure],
) -> Structure:
    """The body structure: named, else by a body-like name, else the container of all others, else CT."""
    available = [n for n, _ in masks]
    by_name = dict(masks)
    if body is not None:
        chosen = _match(body, available)
        if chosen in named:
            raise InputError(f"structure '{chosen}' cannot be both the body and a target or organ at risk")
        return structure_on_grid(chosen, Role.BODY, by_name[chosen], mask_grid, ct_grid)
    unassigned = [n for n in available if n not in named]
    chosen = _body_by_name(unassigned)
    if chosen is not None:
        return structure_on_grid(chosen, Role.BODY, by_name[chosen], mask_grid, ct_grid)
    others = np.logical_or.reduce([s.mask for s in on_ct])
    for candidate in unassigned:
        try:
            structure = structure_on_grid(candidate, Role.BODY, by_name[candidate], mask_grid, ct_grid)
        except InputError:  # empty, or outside the CT: not the body
            continue
        inside = np.count_nonzero(structure.mask & others) / max(np.count_nonzero(others), 1)
        if inside >= CONTAINS_FRACTION:
            return structure
    return Structure(CT_BODY_NAME, Role.BODY, body_from_ct(ct_hu))


def is_body_name(name: str) -> bool:
    """True for a name that marks the body: body, external, skin or outline, optionally suffixed
    (``Body``, ``External_1``, ``skin-contour``)."""
    return _BODY_NAME.fullmatch(name.strip()) is not None


def _body_by_name(names: Sequence[str]) -> str | None:
    """The one structure named like a body (exactly body/external/skin/outline first), or None."""
    body_like = [n for n in names if is_body_name(n)]
    exact = [n for n in body_like if n.strip().lower() in BODY_NAMES]
    if len(exact) == 1 or len(body_like) == 1:
        return (exact or body_like)[0]
    if body_like:
        raise InputError(f"several body-like structures ({', '.join(body_like)}); name the body explicitly")
    return None


def _complete_labelmap_body(
    masks: list[tuple[str, np.ndarray]], body: str | None, named: Sequence[str]
) -> list[tuple[str, np.ndarray]]:
    """A labelmap's labels exclude each other, so its body label lacks the organs inside it: add them."""
    available = [n for n, _ in masks]
    body_name = (
        _match(body, available)
        if body is not None
        else _body_by_name([n for n in available if n not in named])
    )
    if body_name is None:
        return masks
    inside = np.logical_or.reduce([mask for _, mask in masks])
    return [(n, inside if n == body_name else mask) for n, mask in masks]


def _case_name(ct_path: str | Path) -> str:
    """A case name from the CT file name, without .nrrd / .nhdr (e.g. ``patient1``)."""
    name = Path(ct_path).name
    for suffix in (".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
