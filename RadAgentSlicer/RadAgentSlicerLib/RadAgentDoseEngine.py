"""SlicerRT External Beam Planning dose engine backed by the core's numba photon engine.

Loaded by :func:`RadAgentSlicerLib.slicerrt.register_dose_engine` through SlicerRT's
``qSlicerScriptedDoseEngine`` (the class name must equal this file's name). Everything it computes is in
:mod:`RadAgentSlicerLib.engine_adapter` (tested headless): an open field per beam — uniform fluence over
the target's projection, jaws and MLC not read — normalized so that the plan's beams, summed by SlicerRT
at equal weights, give the target a mean of the prescription. It is not the optimized RadAgent plan;
errors reach SlicerRT as its error string, so no empty dose is recorded as a success.
"""

from DoseEngines import AbstractScriptedDoseEngine

ENGINE_TAB = "RadAgent"


class RadAgentDoseEngine(AbstractScriptedDoseEngine):
    """The RadAgent open-field engine: pencil-beam dose with heterogeneity correction on a chosen grid."""

    def __init__(self, scriptedEngine):
        from RadAgentSlicerLib.slicerrt import DOSE_ENGINE_NAME

        scriptedEngine.name = DOSE_ENGINE_NAME
        AbstractScriptedDoseEngine.__init__(self, scriptedEngine)

    def defineBeamParameters(self):
        from RadAgentSlicerLib.engine_adapter import DEFAULT_GRID_MM, ENGINE_DESCRIPTION

        for name, label, meaning in (
            ("DoseGridMm", "Dose grid (mm):", "Dose grid spacing"),
            ("BixelMm", "Beamlet size (mm):", "Beamlet width at the isocentre"),
        ):
            self.scriptedEngine.addBeamParameterSpinBox(
                ENGINE_TAB,
                name,
                label,
                f"{meaning}. {ENGINE_DESCRIPTION}",
                1.0,
                20.0,
                DEFAULT_GRID_MM,
                0.5,
                1,
            )

    def calculateDoseUsingEngine(self, beamNode, resultDoseVolumeNode):
        from RadAgentSlicerLib.engine_adapter import calculate_beam_dose

        return calculate_beam_dose(
            beamNode,
            resultDoseVolumeNode,
            self.scriptedEngine.doubleParameter(beamNode, "DoseGridMm"),
            self.scriptedEngine.doubleParameter(beamNode, "BixelMm"),
        )
