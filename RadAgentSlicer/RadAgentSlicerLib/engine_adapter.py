"""What the SlicerRT dose engine computes, kept apart from SlicerRT's classes so it is tested headless:
one beam's dose on the plan's reference CT from the plan's nodes (target segment, isocentre, Rx).

The engine computes an **open field** (uniform fluence over the target's beam's-eye-view projection plus
one beamlet) with the core's pencil-beam engine; the beam's jaws and MLC are not read. It is a forward
dose for SlicerRT's plans, not the optimized RadAgent plan (that comes from the RadAgent module).
:func:`calculate_beam_dose` keeps SlicerRT's contract: it returns ``""`` on success and the error message
otherwise, which SlicerRT shows. An error before the dose is written leaves the result volume empty.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.plan import PlanSettings, plan_case
from RadAgentSlicerLib.logic import PlanningLogic
from RadAgentSlicerLib.slicerrt import DOSE_ENGINE_NAME

__all__ = ["ENGINE_DESCRIPTION", "beam_dose_gy", "calculate_beam_dose", "open_field_dose_gy"]

ENGINE_DESCRIPTION = (
    "Open-field dose (uniform fluence over the target's projection) from the RadAgent pencil-beam engine; "
    "jaws and MLC are not read. Not the optimized RadAgent plan."
)
DEFAULT_GRID_MM = 5.0  # the engine's dose grid and beamlet size when the beam's parameters are unset


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


def calculate_beam_dose(
    beam: Any, result_volume: Any, dose_grid_mm: float | None, bixel_mm: float | None
) -> str:
    """SlicerRT's ``calculateDoseUsingEngine``: the beam's open-field dose into ``result_volume`` on the
    plan's reference CT. Returns "" on success, else the message SlicerRT shows (nothing is written)."""
    from slicer.util import updateVolumeFromArray

    try:
        plan = beam.GetParentPlanNode()
        if plan is None:
            raise InputError("the beam belongs to no plan")
        dose_gy = beam_dose_gy(plan, beam, dose_grid_mm or DEFAULT_GRID_MM, bixel_mm or DEFAULT_GRID_MM)
        updateVolumeFromArray(result_volume, dose_gy)
        result_volume.CopyOrientation(plan.GetReferenceVolumeNode())
    except InputError as error:
        return f"{DOSE_ENGINE_NAME}: {error}"
    except Exception as error:  # SlicerRT would record anything but a string as success: report it
        logging.exception("RadAgent dose engine failed")
        return f"{DOSE_ENGINE_NAME} failed: {type(error).__name__}: {error}"
    return ""


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
