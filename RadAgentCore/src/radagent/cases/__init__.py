"""Built-in phantom cases, generated deterministically: ``load_case(name, variant)`` and ``list_cases()``.

Each case is a synthetic CT in Hounsfield units (air −1000, fat −100, soft tissue 40, bone 300–900)
with its structures and protocol. ``variant`` 0 is the typical patient; variant N ≥ 1 draws the
anatomy (organ sizes and positions, bladder filling, rectum diameter, PTV shape, …) from a numpy
generator seeded with N, so the same (name, variant) always gives identical arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from radagent.cases.abdomen import build_abdomen
from radagent.cases.pelvis import build_pelvis
from radagent.cases.phantoms import build_cshape, build_water
from radagent.cases.shapes import Frame
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard, card_by_name
from radagent.patient import Case, Protocol, Role, Structure

__all__ = ["CaseInfo", "list_cases", "load_case"]

Builder = Callable[[int], tuple[Frame, np.ndarray, tuple[Structure, ...]]]


@dataclass(frozen=True)
class CaseInfo:
    """What a built-in case is: protocol, score card and structures (name, role), without building it."""

    name: str
    description: str
    prescription_gy: float
    fractions: int
    scorecard: str
    max_score: float
    structures: tuple[tuple[str, Role], ...]


@dataclass(frozen=True)
class _CaseSpec:
    """How to build a built-in case and the protocol that goes with it."""

    description: str
    prescription_gy: float
    fractions: int
    scorecard: str
    structures: tuple[tuple[str, Role], ...]
    build: Builder

    def card(self) -> ScoreCard:
        """The case's score card."""
        return card_by_name(self.scorecard)


_PELVIS = (
    ("Body", Role.BODY),
    ("PTV", Role.TARGET),
    ("Bladder", Role.OAR),
    ("Rectum", Role.OAR),
    ("FemoralHead_L", Role.OAR),
    ("FemoralHead_R", Role.OAR),
)

_SPECS = MappingProxyType(
    {
        "prostate": _CaseSpec(
            "Male pelvis phantom, prostate PTV (6 mm margin, 5 mm posterior) overlapping rectum and bladder",
            79.2,
            44,
            "prostate",
            _PELVIS,
            lambda variant: build_pelvis(variant, with_bowel=False),
        ),
        "prostate-4oar": _CaseSpec(
            "The prostate phantom with small-bowel loops scored as a fourth organ at risk",
            79.2,
            44,
            "prostate-4oar",
            (*_PELVIS, ("Bowel", Role.OAR)),
            lambda variant: build_pelvis(variant, with_bowel=True),
        ),
        "liver": _CaseSpec(
            "Upper-abdomen phantom, spherical liver PTV near the stomach; liver, stomach and cord at risk",
            50.0,
            25,
            "liver",
            (
                ("Body", Role.BODY),
                ("PTV", Role.TARGET),
                ("Liver", Role.OAR),
                ("Stomach", Role.OAR),
                ("SpinalCord", Role.OAR),
            ),
            build_abdomen,
        ),
        "cshape": _CaseSpec(
            "AAPM TG-119 C-shape: a C-shaped PTV around a cylindrical core in a water box",
            50.0,
            25,
            "cshape",
            (("Body", Role.BODY), ("PTV", Role.TARGET), ("Core", Role.OAR)),
            build_cshape,
        ),
        "water": _CaseSpec(
            "300 mm water cube with a cubic PTV at its centre (dose-engine and optimizer checks)",
            2.0,
            1,
            "water",
            (("Body", Role.BODY), ("PTV", Role.TARGET)),
            build_water,
        ),
    }
)


def list_cases() -> list[CaseInfo]:
    """The built-in cases with their protocols, score cards and structures."""
    return [
        CaseInfo(
            name=name,
            description=spec.description,
            prescription_gy=spec.prescription_gy,
            fractions=spec.fractions,
            scorecard=spec.scorecard,
            max_score=spec.card().max_score,
            structures=spec.structures,
        )
        for name, spec in _SPECS.items()
    ]


def load_case(name: str, variant: int = 0) -> Case:
    """Build built-in case ``name``; ``variant`` 0 is the typical patient, N ≥ 1 a reproducible other."""
    spec = _SPECS.get(name.strip().lower())
    if spec is None:
        raise InputError(f"unknown case '{name}' (built-in cases: {', '.join(_SPECS)})")
    if isinstance(variant, bool) or int(variant) != variant or variant < 0:
        raise InputError(f"case variant must be a non-negative integer, got {variant!r}")
    variant = int(variant)
    frame, ct_hu, structures = spec.build(variant)
    voxel_cc = frame.grid.voxel_volume_cc
    organs = [s for s in structures if s.role is not Role.BODY]
    volumes = ", ".join(f"{s.name} {s.voxel_count * voxel_cc:.0f} cc" for s in organs)
    key = name.strip().lower()
    return Case(
        name=key if variant == 0 else f"{key}-v{variant}",
        ct_hu=ct_hu,
        grid=frame.grid,
        structures=structures,
        protocol=Protocol(spec.prescription_gy, spec.fractions, spec.card()),
        description=f"{spec.description}; variant {variant}: {volumes}",
    )
