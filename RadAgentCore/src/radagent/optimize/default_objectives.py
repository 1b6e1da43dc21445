"""The default objective set (METHOD §3): what a planner starts from when the user gives no planning
parameters. Our choice, documented here once with its weights; plan.json lists the terms it used.

Per target dose level L (highest first; a lower level's region is its target minus the higher levels'):
- coverage: squared underdose below L on the whole target;
- hot-spot control: squared overdose above ``hot_spot_level``·L on the level's region.
Per organ at risk, on the organ minus the targets (the targets' terms own overlapping voxels, so an OAR
inside a PTV never pulls the PTV's coverage down):
- a mean-dose pull, weight · (mean dose / p)², which lowers the whole distribution and never switches
  off (QUANTEC's parallel-organ endpoints are mean doses);
- an upper dose–volume term: at most ``oar_dvh_volume`` of it above ``oar_dvh_level``·p (matRad's
  max-DVH form), against the high-dose tail next to the target.
Normal tissue (body minus targets and OARs) in shells by distance from the targets' surface, each held
under a dose that falls off as L·[end + (start − end)·exp(−distance/length)] at its inner edge, L the
level of the nearest target (p with one level): the
shape of the normal-tissue objectives of commercial optimizers (Eclipse's NTO; RayStation's dose
fall-off), which keeps the dose where it is prescribed.

Terms are scaled to the prescription so that one set of weights serves any dose; the weights were
chosen on the built-in prostate phantom and checked on TG-119's C-shape (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import ndimage

from radagent.optimize.objectives import MaxDvh, MeanDose, Objective, SquaredOverdose, SquaredUnderdose
from radagent.patient import Case, Role, Structure

__all__ = ["DEFAULT_OBJECTIVE_WEIGHTS", "DefaultObjectiveWeights", "ObjectiveSet", "default_objectives"]

HELPER_PREFIX = "opt:"  # optimization-only structures (never reported)


@dataclass(frozen=True)
class DefaultObjectiveWeights:
    """Levels (fractions of the prescription p or of a target's level) and weights of the default set."""

    coverage: float = 10_000.0  # weight of mean((L − d)₊²)/p² on each target
    hot_spot: float = 5_000.0  # weight of mean((d − hot_spot_level·L)₊²)/p² on each level's region
    hot_spot_level: float = 1.02
    oar_mean: float = 30.0  # weight of (mean dose/p)² of each OAR outside the targets
    oar_dvh: float = 30.0  # weight of the max-DVH term: ≤ oar_dvh_volume above oar_dvh_level·p
    oar_dvh_level: float = 0.9
    oar_dvh_volume: float = 0.05
    normal_tissue: float = 100.0  # weight of each shell's mean((d − limit)₊²)/p²
    falloff_start: float = 1.0  # the shells' limits, fractions of p: start at the target surface …
    falloff_end: float = 0.25  # … falling towards this, with this length:
    falloff_length_mm: float = 12.0
    shell_edges_mm: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)


DEFAULT_OBJECTIVE_WEIGHTS = DefaultObjectiveWeights()


@dataclass(frozen=True)
class ObjectiveSet:
    """Objective terms and the optimization-only structures (on the CT grid) some of them act on."""

    objectives: tuple[Objective, ...]
    helpers: tuple[Structure, ...] = ()

    def case_for(self, case: Case) -> Case:
        """``case`` with the helper structures added, for the optimizer to find them by name."""
        return replace(case, structures=(*case.structures, *self.helpers)) if self.helpers else case

    def describe(self) -> list[dict[str, Any]]:
        """Each term as plain values (for plan.json): type, structure and its parameters."""
        return [{"type": type(o).__name__, **vars(o)} for o in self.objectives]


def falloff_gy(distance_mm: float, level_gy: float, weights: DefaultObjectiveWeights) -> float:
    """The normal-tissue dose limit at ``distance_mm`` from the surface of a target of dose ``level_gy``."""
    w = weights
    fraction = w.falloff_end + (w.falloff_start - w.falloff_end) * np.exp(-distance_mm / w.falloff_length_mm)
    return float(level_gy * fraction)


def default_objectives(
    case: Case, weights: DefaultObjectiveWeights = DEFAULT_OBJECTIVE_WEIGHTS
) -> ObjectiveSet:
    """The default objective set for ``case`` (see the module notes)."""
    p = case.prescription_gy
    w = weights
    targets = case.target_mask()
    terms: list[Objective] = []
    helpers: list[Structure] = []

    def helper(name: str, mask: np.ndarray) -> str | None:
        if not mask.any():
            return None
        helpers.append(Structure(HELPER_PREFIX + name, Role.OAR, mask))
        return helpers[-1].name

    covered = np.zeros_like(targets)  # the targets of higher (or equal, earlier) levels
    level_map = np.zeros(case.grid.shape)  # each target voxel's level: the highest covering it
    for target in sorted(case.targets, key=lambda t: -case.target_level_gy(t.name)):
        level = case.target_level_gy(target.name)
        terms.append(SquaredUnderdose(target.name, level, w.coverage / p**2))
        region = (
            target.name
            if not covered.any()
            else helper(f"{target.name} - other targets", target.mask & ~covered)
        )
        if region is not None:
            terms.append(SquaredOverdose(region, w.hot_spot_level * level, w.hot_spot / p**2))
        level_map[target.mask & ~covered] = level
        covered |= target.mask
    organs = np.zeros_like(targets)
    for oar in case.oars:
        organs |= oar.mask
        outside = helper(f"{oar.name} - targets", oar.mask & ~targets)
        if outside is None:
            continue
        terms.append(MeanDose(outside, 0.0, w.oar_mean / p**2))
        terms.append(MaxDvh(outside, w.oar_dvh_level * p, w.oar_dvh_volume, w.oar_dvh / p**2))
    normal = case.body.mask & ~targets & ~organs
    distance, nearest = ndimage.distance_transform_edt(
        ~targets, sampling=case.grid.spacing_mm[::-1], return_indices=True
    )
    # rounded to µm, so that voxels lying exactly on a shell edge (5 voxels of 3 mm from a 15 mm edge) fall
    # on the same side whichever reader made the grid (readers differ in the last bit of the spacing)
    distance = np.round(distance, 3)
    nearest_level = level_map[tuple(nearest)]  # the fall-off starts at the dose of the nearest target
    edges = (*w.shell_edges_mm, np.inf)
    for level in sorted(set(nearest_level[normal].tolist()), reverse=True):
        near = normal & (nearest_level == level)
        suffix = "" if len(case.targets) == 1 else f" near {level:g} Gy"
        for inner, outer in pairwise(edges):
            shell = helper(
                f"normal tissue {inner:g}-{outer:g} mm{suffix}",
                near & (distance > inner) & (distance <= outer),
            )
            if shell is not None:
                terms.append(SquaredOverdose(shell, falloff_gy(inner, level, w), w.normal_tissue / p**2))
    return ObjectiveSet(tuple(terms), tuple(helpers))
