"""SlicerRT External Beam Planning dose engine backed by the core's numba photon engine.

Loaded by :func:`RadAgentSlicerLib.slicerrt.register_dose_engine` through SlicerRT's
``qSlicerScriptedDoseEngine`` (the class name must equal this file's name). One beam's dose is the core's
open-field dose (uniform fluence over the target's projection) normalized so that the plan's beams,
summed by SlicerRT at equal weights, give the target a mean of the prescription. Intensity modulation
comes from the RadAgent module's planning, not from this forward engine.
"""

from DoseEngines import AbstractScriptedDoseEngine

ENGINE_TAB = "RadAgent"


class RadAgentDoseEngine(AbstractScriptedDoseEngine):
    """The RadAgent engine: pencil-beam dose with heterogeneity correction on a configurable grid."""

    def __init__(self, scriptedEngine):
        scriptedEngine.name = "RadAgent"
        AbstractScriptedDoseEngine.__init__(self, scriptedEngine)

    def defineBeamParameters(self):
        self.scriptedEngine.addBeamParameterSpinBox(
            ENGINE_TAB,
            "DoseGridMm",
            "Dose grid (mm):",
            "Dose grid spacing of the engine",
            1.0,
            20.0,
            5.0,
            0.5,
            1,
        )
        self.scriptedEngine.addBeamParameterSpinBox(
            ENGINE_TAB,
            "BixelMm",
            "Beamlet size (mm):",
            "Beamlet width at the isocentre",
            1.0,
            20.0,
            5.0,
            0.5,
            1,
        )

    def calculateDoseUsingEngine(self, beamNode, resultDoseVolumeNode):
        from slicer.util import updateVolumeFromArray

        from RadAgentSlicerLib.engine_adapter import beam_dose_gy

        plan = beamNode.GetParentPlanNode()
        dose_grid = self.scriptedEngine.doubleParameter(beamNode, "DoseGridMm") or 5.0
        bixel = self.scriptedEngine.doubleParameter(beamNode, "BixelMm") or 5.0
        dose_gy = beam_dose_gy(plan, beamNode, dose_grid, bixel)
        updateVolumeFromArray(resultDoseVolumeNode, dose_gy)
        resultDoseVolumeNode.CopyOrientation(plan.GetReferenceVolumeNode())
        return ""
