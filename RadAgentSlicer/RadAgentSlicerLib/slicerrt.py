"""SlicerRT integration, thin and optional: RT plan/beam nodes for a plan, and the External Beam Planning
dose engine. Everything here is skipped when SlicerRT is not installed; the rest of the module works.

SlicerRT's beam frame is IEC 61217 like the core's, so a beam node gets the core's gantry angle as is;
couch and collimator stay at 0 (the core plans coplanar beams without collimator rotation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import slicer

from radagent.beams import SOURCE_AXIS_DISTANCE_MM, BeamGeometry
from radagent.patient import Case

__all__ = ["DOSE_ENGINE_NAME", "add_rt_plan", "available", "register_dose_engine"]

DOSE_ENGINE_NAME = "RadAgent open fields"  # what External Beam Planning lists: not the optimized plan
ENGINE_SOURCE = Path(__file__).with_name("RadAgentDoseEngine.py")


def available() -> bool:
    """True when SlicerRT's plan and beam nodes exist in this Slicer."""
    return hasattr(slicer, "vtkMRMLRTPlanNode") and hasattr(slicer, "vtkMRMLRTBeamNode")


def add_rt_plan(
    scene: Any,
    ct: Any,
    segmentation: Any,
    case: Case,
    beams: Sequence[BeamGeometry],
    half_field_mm: float,
    study: int,
    name: str,
) -> Any:
    """A SlicerRT plan on the CT and segmentation with one beam node per planned beam (isocentre, gantry
    angle, SAD, square jaws covering the targets), so External Beam Planning shows and can recompute it."""
    plan = scene.AddNewNodeByClass("vtkMRMLRTPlanNode", name)
    plan.SetAndObserveReferenceVolumeNode(ct)
    plan.SetAndObserveSegmentationNode(segmentation)
    target_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(case.primary_target.name)
    if target_id:
        plan.SetTargetSegmentID(target_id)
    plan.SetRxDose(case.prescription_gy)
    plan.SetIsocenterSpecification(slicer.vtkMRMLRTPlanNode.ArbitraryPoint)
    plan.SetIsocenterPosition(list(beams[0].isocenter_ras))
    if DOSE_ENGINE_NAME in registered_engines():
        plan.SetDoseEngineName(DOSE_ENGINE_NAME)
    for beam in beams:
        node = scene.AddNewNodeByClass("vtkMRMLRTBeamNode", f"G{beam.gantry_deg:g}")
        node.SetGantryAngle(beam.gantry_deg)
        node.SetCouchAngle(0.0)
        node.SetCollimatorAngle(0.0)
        node.SetSAD(SOURCE_AXIS_DISTANCE_MM)
        node.SetX1Jaw(-half_field_mm)
        node.SetX2Jaw(half_field_mm)
        node.SetY1Jaw(-half_field_mm)
        node.SetY2Jaw(half_field_mm)
        plan.AddBeam(node)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(plan)
    if item:
        hierarchy.SetItemParent(item, study)
    return plan


def registered_engines() -> list[str]:
    """Names of the dose engines External Beam Planning knows (empty without SlicerRT's widgets)."""
    try:
        from qSlicerExternalBeamPlanningModuleWidgetsPythonQt import qSlicerDoseEnginePluginHandler
    except ImportError:
        return []
    handler = qSlicerDoseEnginePluginHandler.instance()
    return [engine.name for engine in handler.registeredDoseEngines()]


def register_dose_engine() -> bool:
    """Register the core's numba engine with External Beam Planning (a scripted dose engine, loaded
    from ``RadAgentDoseEngine.py``). Returns False, doing nothing, when SlicerRT is absent."""
    if not available():
        return False
    if DOSE_ENGINE_NAME in registered_engines():
        return True
    try:
        from qSlicerExternalBeamPlanningModuleWidgetsPythonQt import qSlicerScriptedDoseEngine
    except ImportError:
        return False
    engine = qSlicerScriptedDoseEngine(None)
    engine.setPythonSource(str(ENGINE_SOURCE))
    engine.self().register()
    return True
