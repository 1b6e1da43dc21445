"""Fluence optimization (METHOD §3): dose objectives, treatment planning parameters and the solver."""

from radagent.dose.influence import StructureInfluence
from radagent.optimize.objectives import (
    Geud,
    HottestOverdose,
    MaxDose,
    MaxDvh,
    MeanDose,
    MinDose,
    MinDvh,
    Objective,
    SquaredOverdose,
    SquaredUnderdose,
    TppDoseVolume,
)
from radagent.optimize.solver import OptimizationResult, OptimizerSettings, optimize_fluence, uniform_fluence
from radagent.optimize.tpp import COVERAGE_WEIGHT, TPPs, scored_oar_names, tpp_oar_names, tpp_objectives

__all__ = [
    "COVERAGE_WEIGHT",
    "Geud",
    "HottestOverdose",
    "MaxDose",
    "MaxDvh",
    "MeanDose",
    "MinDose",
    "MinDvh",
    "Objective",
    "OptimizationResult",
    "OptimizerSettings",
    "SquaredOverdose",
    "SquaredUnderdose",
    "StructureInfluence",
    "TPPs",
    "TppDoseVolume",
    "optimize_fluence",
    "scored_oar_names",
    "tpp_oar_names",
    "tpp_objectives",
    "uniform_fluence",
]
