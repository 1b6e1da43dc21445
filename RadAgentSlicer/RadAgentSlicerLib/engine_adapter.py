"""What the SlicerRT dose engine computes, kept apart from SlicerRT's classes so it is tested headless:
one beam's dose on the plan's reference CT from the plan's nodes (target segment, isocentre, Rx)."""

from __future__ import annotations

from typing import Any

import numpy as np

from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.plan import PlanSettings, plan_case
from RadAgentSlicerLib.logic import PlanningLogic

__all__ = ["beam_dose_gy", "open_field_dose_gy"]


def open_field_dose_gy(
    logic: PlanningLogic,
    ct: Any,
    segmentation: Any,
    target_segment: str,
    gantry_deg: float,
    isocenter_ras: tuple[float, float, float],
    prescription_gy: float,
    beam_count: int,
    dose_grid_mm: float = 5.0,
    bixel_mm: float = 5.0,
) -> np.ndarray:
    """The dose ``[k, j, i]`` in Gy of one open (uniform-fluence) beam, scaled so that ``beam_count``
    such beams give the target a mean dose of the prescription."""
    if beam_count < 1:
        raise InputError("the plan has no beams")
    case = logic.caseFromNodes(ct, segmentation, [target_segment], [], prescription_gy)
    settings = PlanSettings(
        angles_deg=(float(gantry_deg) % 360.0,),
        engine=DoseEngineSettings(bixel_mm=bixel_mm, dose_grid_mm=dose_grid_mm),
        fluence="uniform",
        isocenter_ras=tuple(float(v) for v in isocenter_ras),
    )
    return (plan_case(case, settings).dose_ct_gy / beam_count).astype(np.float32)


def beam_dose_gy(plan: Any, beam: Any, dose_grid_mm: float, bixel_mm: float) -> np.ndarray:
    """One SlicerRT beam's dose from its plan's nodes (reference CT, segmentation, target, isocentre, Rx)."""
    ct, segmentation = plan.GetReferenceVolumeNode(), plan.GetSegmentationNode()
    if ct is None or segmentation is None or not plan.GetTargetSegmentID():
        raise InputError("the plan needs a reference CT, a segmentation and a target segment")
    target = segmentation.GetSegmentation().GetSegment(plan.GetTargetSegmentID()).GetName()
    isocenter = [0.0, 0.0, 0.0]
    plan.GetIsocenterPosition(isocenter)
    return open_field_dose_gy(
        PlanningLogic(plan.GetScene()),
        ct,
        segmentation,
        target,
        beam.GetGantryAngle(),
        tuple(isocenter),
        plan.GetRxDose(),
        plan.GetNumberOfBeams(),
        dose_grid_mm,
        bixel_mm,
    )
