"""Photon dose engine: 6 MV finite-size pencil beams → sparse dose-influence matrix D (METHOD §2).

``compute_dose_influence(case, angles)`` builds D for a set of gantry angles; ``DoseInfluenceCache``
keeps per-beam blocks so that angle sets sharing beams are assembled without recomputation.
"""

from radagent.dose.beam_model import DEFAULT_6MV, BeamModel
from radagent.dose.cache import DoseInfluenceCache, case_fingerprint
from radagent.dose.engine import (
    DoseEngineSettings,
    compute_dose_influence,
    dose_grid_for,
    open_field_beamlets,
    target_beamlets,
)
from radagent.dose.influence import BeamInfo, BeamRows, DoseInfluence, StructureInfluence

__all__ = [
    "DEFAULT_6MV",
    "BeamInfo",
    "BeamModel",
    "BeamRows",
    "DoseEngineSettings",
    "DoseInfluence",
    "DoseInfluenceCache",
    "StructureInfluence",
    "case_fingerprint",
    "compute_dose_influence",
    "dose_grid_for",
    "open_field_beamlets",
    "target_beamlets",
]
