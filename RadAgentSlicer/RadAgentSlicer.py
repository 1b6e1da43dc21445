"""RadAgentSlicer: AI-agent photon IMRT planning on the loaded CT and segmentation (3D Slicer module).

Module / Widget / Logic / Test, as in Slicer's scripted-module template. The Widget only wires the panel
to :class:`RadAgentSlicerLib.logic.PlanningLogic`, which does the work headless; planning runs in a
separate process (:mod:`RadAgentSlicerLib.process`) so the GUI never freezes, and only the main thread
touches MRML. ``radagent`` is imported after the dependencies are ensured, never at module import.
"""

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from RadAgentSlicerLib import dependencies
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

ROLE_NONE, ROLE_TARGET, ROLE_OAR, ROLE_BODY = "-", "Target", "OAR", "Body"
NO_AGENT = "(none)"
POLL_INTERVAL_MS = 200


class RadAgentSlicer(ScriptedLoadableModule):
    """Module metadata; registers the RadAgent dose engine with SlicerRT once Slicer has started."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RadAgent Planning")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []  # SlicerRT is optional: its integration switches on when present
        self.parent.contributors = ["RadAgent developers"]
        self.parent.helpText = _(
            "Photon IMRT planning by AI agents (beam angles and planning parameters) on the selected CT "
            "and segmentation. Writes a SlicerRT-compatible dose volume, a DVH table and chart, and the "
            'beams. See the <a href="https://github.com/radagent/radagent#radagentslicer">README</a>.'
        )
        self.parent.acknowledgementText = _("Dose engine, optimizer and agents: the radagent package.")
        slicer.app.connect("startupCompleted()", _registerDoseEngine)


def _registerDoseEngine():
    """Offer the core's engine to SlicerRT's External Beam Planning when both are installed."""
    if dependencies.missing_modules():
        return  # installed later from the panel; registered on the next start
    try:
        from RadAgentSlicerLib import slicerrt

        if slicerrt.register_dose_engine():
            logging.info("RadAgent dose engine registered with External Beam Planning")
    except Exception:  # SlicerRT's Python layer differs between versions: never break startup
        logging.exception("RadAgent: could not register the dose engine with SlicerRT")


@parameterNodeWrapper
class RadAgentSlicerParameterNode:
    """The panel's settings, saved with the scene."""

    ctVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    targets: str = ""  # segment names, comma-separated (the roles table edits them)
    oars: str = ""
    body: str = ""
    prescriptionGy: Annotated[float, WithinRange(0.1, 200.0)] = 60.0
    fractions: Annotated[int, WithinRange(1, 100)] = 30
    scorecard: str = ""
    agent: str = "equispaced"
    tppAgent: str = ""
    agentOptions: str = ""
    tppAgentOptions: str = ""
    beams: Annotated[int, WithinRange(1, 36)] = 7
    angles: str = ""
    doseGridMm: Annotated[float, WithinRange(1.0, 20.0)] = 3.0
    bixelMm: Annotated[float, WithinRange(1.0, 20.0)] = 5.0
    doseVolume: vtkMRMLScalarVolumeNode


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()]


@contextlib.contextmanager
def _signalsBlocked(*widgets):
    """Block the widgets' signals for a block of programmatic changes."""
    for widget in widgets:
        widget.blockSignals(True)
    try:
        yield
    finally:
        for widget in widgets:
            widget.blockSignals(False)


class RadAgentSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs and roles, planning choices, run with progress and Cancel, results."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobFolder = None
        self._pending = None  # (ct, segmentation, case) of the running job
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

    # -- setup and parameter node ---------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RadAgentSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RadAgentSlicerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateRolesTable)
        self.ui.rolesTable.connect("cellChanged(int,int)", self.onRolesChanged)
        self.ui.scorecardComboBox.connect("currentTextChanged(QString)", self.onChoiceChanged)
        self.ui.agentComboBox.connect("currentTextChanged(QString)", self.onChoiceChanged)
        self.ui.tppAgentComboBox.connect("currentTextChanged(QString)", self.onChoiceChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.showDoseButton.connect("clicked(bool)", self.onShowDose)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.value = 0
        self._fillChoices()
        self.initializeParameterNode()

    def _fillChoices(self):
        """Agents from the core's registry (agents added later appear here), score cards by name."""
        with _signalsBlocked(self.ui.scorecardComboBox, self.ui.agentComboBox, self.ui.tppAgentComboBox):
            self._addChoices()

    def _addChoices(self):
        self.ui.scorecardComboBox.clear()
        self.ui.agentComboBox.clear()
        self.ui.tppAgentComboBox.clear()
        self.ui.scorecardComboBox.addItem(NO_AGENT)
        self.ui.agentComboBox.addItem(NO_AGENT)
        self.ui.tppAgentComboBox.addItem(NO_AGENT)
        if dependencies.missing_modules():
            self.ui.agentComboBox.addItem("equispaced")
            self.ui.statusLabel.text = _("radagent is not installed yet; it is installed when you plan.")
            return
        from radagent.agents import list_agents
        from radagent.evaluate.scorecard import card_names

        for name in card_names():
            self.ui.scorecardComboBox.addItem(name)
        for spec in list_agents("angles"):
            self.ui.agentComboBox.addItem(spec.name)
            self.ui.agentComboBox.setItemData(
                self.ui.agentComboBox.count - 1, spec.description, qt.Qt.ToolTipRole
            )
        for spec in list_agents("tpp"):
            self.ui.tppAgentComboBox.addItem(spec.name)
            self.ui.tppAgentComboBox.setItemData(
                self.ui.tppAgentComboBox.count - 1, spec.description, qt.Qt.ToolTipRole
            )

    def cleanup(self):
        if self._job is not None:
            self._job.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.ctVolume:
            self._parameterNode.ctVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.segmentation:
            self._parameterNode.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._showChoices()
            self.updateRolesTable()
            self._checkCanApply()

    def _showChoices(self):
        """Put the saved agent and score-card choices into their combo boxes."""
        node = self._parameterNode
        choices = (
            (self.ui.scorecardComboBox, node.scorecard),
            (self.ui.agentComboBox, node.agent),
            (self.ui.tppAgentComboBox, node.tppAgent),
        )
        with _signalsBlocked(*(combo for combo, _value in choices)):  # else each one rewrites the others
            for combo, value in choices:
                index = combo.findText(value or NO_AGENT)
                combo.currentIndex = index if index >= 0 else 0

    # -- roles ----------------------------------------------------------------------------------------

    def updateRolesTable(self, *_args):
        """One row per segment, with a role chosen from the parameter node's names."""
        table = self.ui.rolesTable
        segmentation = self.ui.segmentationSelector.currentNode()
        table.blockSignals(True)
        table.setRowCount(0)
        if segmentation is not None and self._parameterNode is not None:
            node = self._parameterNode
            roles = {n: ROLE_TARGET for n in _names(node.targets)}
            roles.update({n: ROLE_OAR for n in _names(node.oars)})
            if node.body:
                roles[node.body] = ROLE_BODY
            segments = segmentation.GetSegmentation()
            for row in range(segments.GetNumberOfSegments()):
                name = segments.GetNthSegment(row).GetName()
                table.insertRow(row)
                item = qt.QTableWidgetItem(name)
                item.setFlags(qt.Qt.ItemIsEnabled)
                table.setItem(row, 0, item)
                combo = qt.QComboBox()
                combo.addItems([ROLE_NONE, ROLE_TARGET, ROLE_OAR, ROLE_BODY])
                combo.currentText = roles.get(name, ROLE_NONE)
                combo.connect("currentIndexChanged(int)", lambda _index, r=row: self.onRolesChanged(r, 1))
                table.setCellWidget(row, 1, combo)
        table.blockSignals(False)
        if segmentation is not None and self._parameterNode is not None:
            self.onRolesChanged()  # drop roles of segments this segmentation does not have
        self._checkCanApply()

    def onRolesChanged(self, row=None, column=None):
        """Write the table's roles into the parameter node."""
        if self._parameterNode is None:
            return
        roles = {ROLE_TARGET: [], ROLE_OAR: [], ROLE_BODY: []}
        table = self.ui.rolesTable
        for r in range(table.rowCount):
            role = table.cellWidget(r, 1).currentText
            if role in roles:
                roles[role].append(table.item(r, 0).text())
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.targets = ", ".join(roles[ROLE_TARGET])
            self._parameterNode.oars = ", ".join(roles[ROLE_OAR])
            self._parameterNode.body = roles[ROLE_BODY][0] if roles[ROLE_BODY] else ""

    def onChoiceChanged(self, _text=None):
        """Write the combo boxes' choices into the parameter node."""
        if self._parameterNode is None:
            return

        def chosen(combo):
            return "" if combo.currentText in ("", NO_AGENT) else combo.currentText

        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.scorecard = chosen(self.ui.scorecardComboBox)
            self._parameterNode.agent = chosen(self.ui.agentComboBox)
            self._parameterNode.tppAgent = chosen(self.ui.tppAgentComboBox)

    def _request(self):
        """The core request for the panel's planning choices."""
        node = self._parameterNode
        from radagent.agents import get_agent
        from radagent.agents.pipeline import parse_option_values
        from radagent.beams import parse_angles

        def options(agent, text):
            return parse_option_values(get_agent(agent), text) if agent else {}

        angles = parse_angles(node.angles) if node.angles.strip() else None
        return self.logic.planning(slicer.mrmlScene).request(
            agent=node.agent or None,
            beams=node.beams,
            angles=angles,
            tppAgent=node.tppAgent or None,
            tppAgentOptions=options(node.tppAgent, node.tppAgentOptions),
            doseGridMm=node.doseGridMm,
            bixelMm=node.bixelMm,
            **options(node.agent, node.agentOptions),
        )

    def _checkCanApply(self, caller=None, event=None):
        """Enable Plan when inputs are complete; show what the chosen agents lack before anything runs."""
        node = self._parameterNode
        problems = []
        if node is None or not node.ctVolume or not node.segmentation:
            problems.append(_("Choose a CT volume and a segmentation."))
        elif not _names(node.targets):
            problems.append(_("Give at least one segment the role Target."))
        elif not dependencies.missing_modules():
            try:
                request = self._request()
                problems += self.logic.planning(slicer.mrmlScene).roleProblems(
                    request, _names(node.oars), node.scorecard or None
                )
            except Exception as error:  # an InputError from the options or angles: show it, don't raise
                problems.append(str(error))
        self.ui.problemsLabel.text = "\n".join(problems)
        self.ui.applyButton.enabled = not problems and self._job is None
        self.ui.applyButton.toolTip = problems[0] if problems else _("Plan with the chosen agents")

    # -- running --------------------------------------------------------------------------------------

    def _ensureDependencies(self):
        """Install radagent (and torch for the DQN agents) into Slicer's Python, with consent."""
        node = self._parameterNode
        missing = dependencies.missing_modules()
        needTorch = dependencies.torch_needed([node.agent, node.tppAgent])
        if not missing and not needTorch:
            return True
        packages = ([dependencies.core_requirement()] if missing else []) + (["torch"] if needTorch else [])
        if not slicer.util.confirmOkCancelDisplay(
            _("RadAgent needs these Python packages in Slicer: {packages}. Install them now?").format(
                packages=", ".join(packages)
            ),
            windowTitle=_("Install dependencies"),
        ):
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing the dependencies failed."), waitCursor=True):
            if missing:
                slicer.util.pip_install([dependencies.core_requirement()])  # a list: paths may have spaces
            if needTorch:
                try:
                    import PyTorchUtils

                    PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
                except ImportError:
                    slicer.util.pip_install("torch")
            self._fillChoices()
            self._showChoices()
        return not dependencies.missing_modules()

    def onApplyButton(self):
        """Export the inputs here, plan in a worker process, import the results when it is done."""
        if not self._ensureDependencies():
            return
        from RadAgentSlicerLib.process import BackgroundPlanning
        from RadAgentSlicerLib.worker import write_case, write_request

        node = self._parameterNode
        planning = self.logic.planning(slicer.mrmlScene)
        with slicer.util.tryWithErrorDisplay(_("Cannot plan with these inputs."), waitCursor=True):
            request = self._request()
            case = planning.caseFromNodes(
                node.ctVolume,
                node.segmentation,
                _names(node.targets),
                _names(node.oars),
                node.prescriptionGy,
                node.fractions,
                body=node.body or None,
                scorecard=node.scorecard or None,
            )
            problems = planning.agentProblems(case, request)
            if problems:
                raise ValueError("; ".join(problems))
            self._jobFolder = tempfile.mkdtemp(prefix="RadAgent-", dir=slicer.app.temporaryPath)
            write_case(case, self._jobFolder)
            write_request(request, self._jobFolder)
            self._pending = (node.ctVolume, node.segmentation, case)
            self._job = BackgroundPlanning(self._jobFolder, python=shutil.which("PythonSlicer"))
            self._setRunning(True)
            self.ui.statusLabel.text = _("Planning started.")
            self._timer.start()

    def onPoll(self):
        """Main thread: show the worker's progress; import its results when it has finished."""
        if self._job is None:
            self._timer.stop()
            return
        for event in self._job.poll():
            if event.kind == "progress":
                self.ui.progressBar.value = int(1000 * event.fraction)
                self.ui.statusLabel.text = event.message
            elif event.kind == "error":
                self.ui.statusLabel.text = _("Failed: {message}").format(message=event.message)
            elif event.kind == "log":
                logging.info("RadAgent worker: %s", event.message)
        if self._job.running:
            return
        self._timer.stop()
        job, (ct, segmentation, case) = self._job, self._pending
        try:
            if job.succeeded:
                from RadAgentSlicerLib.worker import read_output

                with slicer.util.tryWithErrorDisplay(_("Importing the plan failed."), waitCursor=True):
                    result = self.logic.planning(slicer.mrmlScene).importResults(
                        ct, segmentation, case, read_output(self._jobFolder)
                    )
                    self._showResults(result)
            elif not job.cancelled and not self.ui.statusLabel.text.startswith(_("Failed")):
                self.ui.statusLabel.text = _("Planning stopped (exit status {code}).").format(
                    code=job.returncode
                )
        finally:
            self._finishJob()

    def onCancelButton(self):
        """Kill the worker; nothing was imported, so the scene is as before planning."""
        if self._job is None:
            return
        self._job.cancel()
        self._timer.stop()
        self._finishJob()
        self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")

    def _finishJob(self):
        self._job, self._pending = None, None
        if self._jobFolder:
            shutil.rmtree(self._jobFolder, ignore_errors=True)
        self._jobFolder = None
        self._setRunning(False)

    def _setRunning(self, running):
        self.ui.cancelButton.enabled = running
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.planningCollapsibleButton.enabled = not running
        if not running:
            self.ui.progressBar.value = 0
        self._checkCanApply()

    # -- results --------------------------------------------------------------------------------------

    def _showResults(self, result):
        """Metrics table, DVH chart in the plot view, dose over the CT in the slice views."""
        plan = result.metrics["plan"]
        score = f"{plan['score']:.2f} / {plan['score_max']:g}" if plan.get("score") is not None else "-"
        self.ui.statusLabel.text = _("Done: score {score}, reward {reward:.3f}.").format(
            score=score, reward=plan["reward"]
        )
        self._parameterNode.doseVolume = result.doseVolumeNode
        table = self.ui.metricsTable
        columns = ["D95 (Gy)", "D2 (Gy)", "Mean (Gy)", "Max (Gy)", "Volume (cc)"]
        keys = ["d95_gy", "d2_gy", "mean_gy", "max_gy", "volume_cc"]
        structures = result.metrics["structures"]
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.setRowCount(len(structures))
        table.setVerticalHeaderLabels(list(structures))
        for row, values in enumerate(structures.values()):
            for column, key in enumerate(keys):
                value = values.get(key)
                text = f"{value:.2f}" if isinstance(value, (int, float)) else "-"
                table.setItem(row, column, qt.QTableWidgetItem(text))
        slicer.modules.plots.logic().ShowChartInLayout(result.dvhChartNode)
        self.onShowDose()

    def onShowDose(self):
        node = self._parameterNode
        if node and node.doseVolume and node.ctVolume:
            slicer.util.setSliceViewerLayers(
                background=node.ctVolume, foreground=node.doseVolume, foregroundOpacity=0.4
            )


class RadAgentSlicerLogic(ScriptedLoadableModuleLogic):
    """The module's logic: its parameter node, and the headless PlanningLogic for a scene."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return RadAgentSlicerParameterNode(super().getParameterNode())

    def planning(self, scene=None):
        """A :class:`RadAgentSlicerLib.logic.PlanningLogic` on ``scene`` (default: the application's)."""
        from RadAgentSlicerLib.logic import PlanningLogic

        return PlanningLogic(scene or slicer.mrmlScene)


class RadAgentSlicerTest(ScriptedLoadableModuleTest):
    """The headless workflow inside Slicer: the bundled prostate case as nodes, planned in-process and in
    the worker process, with the SlicerRT attributes and a scene round trip."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PlanInProcess()
        self.setUp()
        self.test_PlanInWorkerProcess()

    def _prostateNodes(self):
        import numpy as np

        from radagent.cases import load_case

        case = load_case("prostate", 0)
        matrix = vtk.vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                matrix.SetElement(r, c, case.grid.ijk_to_ras[r, c])
        ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
        slicer.util.updateVolumeFromArray(ct, case.ct_hu.astype(np.int16))
        ct.SetIJKToRASMatrix(matrix)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Structures")
        for structure in case.structures:
            labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", structure.name)
            slicer.util.updateVolumeFromArray(labelmap, structure.mask.astype(np.uint8))
            labelmap.SetIJKToRASMatrix(matrix)
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
            slicer.mrmlScene.RemoveNode(labelmap)
        return case, ct, segmentation

    def test_PlanInProcess(self):
        self.delayDisplay("Planning the prostate case in this process")
        from RadAgentSlicerLib import nodes

        case, ct, segmentation = self._prostateNodes()
        oars = ["Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R"]
        result = (
            RadAgentSlicerLogic()
            .planning()
            .plan(
                ct,
                segmentation,
                ["PTV"],
                oars,
                case.prescription_gy,
                39,
                agent=None,
                beams=5,
                scorecard="prostate",
            )
        )
        dose = result.doseVolumeNode
        self.assertEqual(dose.GetAttribute(nodes.DOSE_VOLUME_ATTRIBUTE), "1")
        self.assertEqual(slicer.util.arrayFromVolume(dose).shape, case.grid.shape)
        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(dose))
        self.assertEqual(hierarchy.GetItemAttribute(study, nodes.DOSE_UNIT_NAME_ATTRIBUTE), "Gy")
        self.assertAlmostEqual(result.metrics["structures"]["PTV"]["d95_gy"], case.prescription_gy, delta=0.2)
        self.assertEqual(len(result.beamNodes), 5)
        path = os.path.join(slicer.app.temporaryPath, "RadAgentSlicerTest.mrb")
        self.assertTrue(slicer.util.saveScene(path))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(path)
        reloaded = slicer.mrmlScene.GetFirstNodeByName(dose.GetName())
        self.assertIsNotNone(reloaded)
        self.assertEqual(reloaded.GetAttribute(nodes.DOSE_VOLUME_ATTRIBUTE), "1")
        self.delayDisplay("Test passed")

    def test_PlanInWorkerProcess(self):
        self.delayDisplay("Planning the prostate case in a worker process")
        from RadAgentSlicerLib.process import BackgroundPlanning
        from RadAgentSlicerLib.worker import read_output, write_case, write_request

        case, ct, segmentation = self._prostateNodes()
        planning = RadAgentSlicerLogic().planning()
        exported = planning.caseFromNodes(
            ct, segmentation, ["PTV"], ["Bladder", "Rectum"], case.prescription_gy
        )
        folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        write_case(exported, folder)
        write_request(planning.request(agent="equispaced", beams=5), folder)
        job = BackgroundPlanning(folder, python=shutil.which("PythonSlicer"))
        self.assertEqual(job.wait(timeout=600), 0, [e.message for e in job.poll()])
        result = planning.importResults(ct, segmentation, exported, read_output(folder))
        self.assertEqual(slicer.util.arrayFromVolume(result.doseVolumeNode).shape, case.grid.shape)
        shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Test passed")
