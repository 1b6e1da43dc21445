"""RadAgentSlicer: AI-agent photon IMRT planning on the loaded CT and segmentation (3D Slicer module).

Module / Widget / Logic / Test, as in Slicer's scripted-module template. The Widget only wires the panel
to the Logic, which is :class:`RadAgentSlicerLib.logic.PlanningLogic` on the application's scene: it
parses the panel's choices into the core's plan request, and its ``startPlan`` runs the plan in a separate
process (:mod:`RadAgentSlicerLib.process`) so the GUI never freezes; only the main thread touches MRML.
``radagent`` is imported after the dependencies are ensured, never at module import.
"""

import contextlib
import logging
import os
import shutil
import sys
from typing import Annotated

import qt
import slicer
import vtk
from RadAgentSlicerLib import dependencies
from RadAgentSlicerLib.logic import PlanningLogic
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

ROLE_NONE, ROLE_TARGET, ROLE_OAR, ROLE_BODY = "-", "Target", "OAR", "Body"
MINIMUM_PYTHON = (3, 11)  # the core's requires-python; Slicer 5.8 and older bundle Python 3.9
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
            "<br><b>Research software, not for clinical use.</b> Plans come from an uncommissioned "
            "pencil-beam engine and agents trained on synthetic phantoms; they are not deliverable. "
            "Needs Slicer 5.10 or newer (Python 3.11 or newer)."
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
    agent: str = ""  # none: the equispaced beams of the core's request
    tppAgent: str = ""
    agentOptions: str = ""
    tppAgentOptions: str = ""
    beams: Annotated[int, WithinRange(1, 36)] = 7
    angles: str = ""
    doseGridMm: Annotated[float, WithinRange(1.0, 20.0)] = 3.0
    bixelMm: Annotated[float, WithinRange(1.0, 20.0)] = 5.0
    # An LLM agent's endpoint (empty: RADAGENT_LLM_URL / _MODEL). The API key and the remote opt-in are
    # deliberately not here: a saved scene must never carry a secret or opt its next user in.
    llmUrl: str = ""
    llmModel: str = ""
    llmApi: Annotated[str, Choice(["openai", "ollama"])] = "openai"
    llmIterations: Annotated[int, WithinRange(1, 100)] = 10
    llmImages: bool = True
    doseVolume: vtkMRMLScalarVolumeNode


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()]


def _targetAndDose(text):
    """``"PTV56:56"`` → ("PTV56", "56"); ``"PTV"`` → ("PTV", "")."""
    name, sep, dose = text.rpartition(":")
    return (name, dose) if sep else (text, "")


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
        self._job = None  # the running PlanningJob
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
        self.ui.llmAllowRemoteCheckBox.connect("toggled(bool)", self._checkCanApply)
        self.ui.llmCheckButton.connect("clicked(bool)", self.onCheckLLM)
        self.ui.llmUrlLineEdit.placeholderText = os.environ.get(
            "RADAGENT_LLM_URL", "http://127.0.0.1:8080/v1"
        )
        self.ui.llmModelLineEdit.placeholderText = os.environ.get("RADAGENT_LLM_MODEL", "")
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
            self.ui.statusLabel.text = _("radagent is not installed yet; it is installed when you plan.")
            return
        from radagent.evaluate.scorecard import card_names

        for name in card_names():
            self.ui.scorecardComboBox.addItem(name)
        for combo, kind in ((self.ui.agentComboBox, "angles"), (self.ui.tppAgentComboBox, "tpp")):
            for name, description in self.logic.agentChoices(kind):
                combo.addItem(name)
                combo.setItemData(combo.count - 1, description, qt.Qt.ToolTipRole)

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
            levels = dict(_targetAndDose(text) for text in _names(node.targets))
            roles = {n: ROLE_TARGET for n in levels}
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
                table.setItem(row, 2, qt.QTableWidgetItem(levels.get(name, "")))  # editable: cellChanged
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
            name = table.item(r, 0).text()
            dose = table.item(r, 2).text().strip().replace(",", ".") if table.item(r, 2) is not None else ""
            if role == ROLE_TARGET and dose:
                name = f"{name}:{dose}"  # the core's NAME:GY (radagent.request.parse_targets)
            if role in roles:
                roles[role].append(name)
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
        if self._needsLLM():
            self.ui.llmCollapsibleButton.collapsed = False

    def _needsLLM(self):
        """True when a chosen agent asks a chat model (its registry entry says so)."""
        node = self._parameterNode
        if node is None or dependencies.missing_modules():
            return False
        try:
            return any(self.logic.agentNeedsLLM(name) for name in (node.agent, node.tppAgent) if name)
        except Exception:  # an agent this core does not know (a scene from another version): no LLM
            return False

    def _request(self):
        """The core request for the panel's planning choices (validated: a bad choice raises)."""
        node = self._parameterNode
        from radagent.agents import get_agent
        from radagent.agents.pipeline import parse_option_values
        from radagent.beams import parse_angles

        def options(agent, text):
            """The agent's options: the LLM panel's settings for an LLM agent, then the typed options
            (which win where both give a value)."""
            if not agent:
                return {}
            llm = {}
            if self.logic.agentNeedsLLM(agent):
                llm = self.logic.llmOptions(
                    node.llmUrl,
                    node.llmModel,
                    node.llmApi,
                    node.llmIterations,
                    node.llmImages,
                    allowRemote=self.ui.llmAllowRemoteCheckBox.checked,
                )
            return {**llm, **parse_option_values(get_agent(agent), text)}

        angles = parse_angles(node.angles) if node.angles.strip() else None
        return self.logic.request(
            _names(node.targets),
            _names(node.oars),
            node.prescriptionGy,
            node.fractions,
            node.agent or None,
            node.beams if angles is None else None,  # explicit angles set the beams
            body=node.body or None,
            scorecard=node.scorecard or None,
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
            try:  # missing Python modules are no problem here: Plan offers to install them
                problems += self._request().problems(modules=False)
            except Exception as error:  # an InputError from the options or angles: show it, don't raise
                problems.append(str(error))
        self.ui.llmCollapsibleButton.enabled = self._needsLLM() and self._job is None
        self.ui.problemsLabel.text = "\n".join(problems)
        self.ui.applyButton.enabled = not problems and self._job is None
        self.ui.applyButton.toolTip = problems[0] if problems else _("Plan with the chosen agents")

    # -- running --------------------------------------------------------------------------------------

    def _ensureDependencies(self):
        """Install radagent, then what the chosen agents need (their registry entries say), into Slicer's
        Python, each with the user's consent."""
        if sys.version_info < MINIMUM_PYTHON:
            slicer.util.errorDisplay(
                _(
                    "RadAgent needs Python {need} or newer; this Slicer has Python {have}. "
                    "Use Slicer 5.10 or newer."
                ).format(need=".".join(map(str, MINIMUM_PYTHON)), have=sys.version.split()[0])
            )
            return False
        core = dependencies.REQUIRED_MODULES
        if dependencies.missing_modules() and not self._install([dependencies.core_requirement()], core):
            return False
        from radagent.agents import get_agent

        node = self._parameterNode
        chosen = [get_agent(name) for name in (node.agent, node.tppAgent) if name]
        needed = tuple(sorted({module for spec in chosen for module in spec.needs.missing_modules()}))
        return not needed or self._install(list(needed), needed)

    def _install(self, packages, modules):
        """pip-install ``packages`` after asking (torch through PyTorchUtils when available: it picks the
        build for this machine's GPU); True when ``modules`` import afterwards."""
        if not slicer.util.confirmOkCancelDisplay(
            _("RadAgent needs these Python packages in Slicer: {packages}. Install them now?").format(
                packages=", ".join(packages)
            ),
            windowTitle=_("Install dependencies"),
        ):
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing the dependencies failed."), waitCursor=True):
            for package in packages:
                if package == "torch":
                    try:
                        import PyTorchUtils

                        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
                        continue
                    except ImportError:
                        pass
                slicer.util.pip_install([package])  # a list: paths may have spaces
            self._fillChoices()
            self._showChoices()
        return not dependencies.missing_modules(modules)

    def onApplyButton(self):
        """Start the plan in a worker process (the Logic exports the inputs here); poll it from a timer."""
        if not self._ensureDependencies():
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot plan with these inputs."), waitCursor=True):
            self._job = self.logic.startPlan(
                node.ctVolume,
                node.segmentation,
                self._request(),
                workFolder=slicer.app.temporaryPath,
                python=shutil.which("PythonSlicer"),
                llmApiKey=self.ui.llmApiKeyLineEdit.text or None,  # to the worker's environment only
            )
            self._setRunning(True)
            self.ui.statusLabel.text = _("Planning started.")
            self._timer.start()

    def onCheckLLM(self):
        """Ask the endpoint what it can do (models, structured replies, images) and show the report."""
        if not self._ensureDependencies():
            return
        node = self._parameterNode
        self.ui.llmStatusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("The LLM endpoint check failed."), waitCursor=True):
            lines = self.logic.checkLLMEndpoint(
                node.llmUrl.strip(),
                node.llmModel.strip(),
                node.llmApi,
                allowRemote=self.ui.llmAllowRemoteCheckBox.checked,
                apiKey=self.ui.llmApiKeyLineEdit.text or None,
            )
            self.ui.llmStatusLabel.text = "\n".join(lines)

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
        job = self._job
        try:
            if job.succeeded:
                with slicer.util.tryWithErrorDisplay(_("Importing the plan failed."), waitCursor=True):
                    self._showResults(job.importResults())
            elif not job.cancelled and not self.ui.statusLabel.text.startswith(_("Failed")):
                self.ui.statusLabel.text = _("Planning stopped (exit status {code}).").format(
                    code=job.returncode
                )
        finally:
            job.close()
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
        self._job = None
        self._setRunning(False)

    def _setRunning(self, running):
        self.ui.cancelButton.enabled = running
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.planningCollapsibleButton.enabled = not running
        self.ui.llmCollapsibleButton.enabled = not running and self._needsLLM()
        if not running:
            self.ui.progressBar.value = 0
        self._checkCanApply()

    # -- results --------------------------------------------------------------------------------------

    def _showResults(self, result):
        """Metrics table, DVH chart in the plot view, dose over the CT in the slice views."""
        from radagent.evaluate.metrics import plan_summary

        self.ui.statusLabel.text = _("Done: {summary}. Research use only, not for clinical use.").format(
            summary=plan_summary(result.metrics["plan"])
        )
        warnings = result.description.get("warnings", [])
        for warning in warnings:
            logging.warning("RadAgent: %s", warning)
        self.ui.problemsLabel.text = "\n".join(warnings)
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


class RadAgentSlicerLogic(ScriptedLoadableModuleLogic, PlanningLogic):
    """The module's one Logic: its parameter node, and the headless planning of
    :class:`RadAgentSlicerLib.logic.PlanningLogic` on the application's scene (``PlanningLogic``'s
    default, also when ``ScriptedLoadableModuleLogic.__init__`` passes on to it through ``super()``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        PlanningLogic.__init__(self)

    def getParameterNode(self):
        return RadAgentSlicerParameterNode(super().getParameterNode())


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
        result = RadAgentSlicerLogic().plan(
            ct, segmentation, ["PTV"], oars, case.prescription_gy, 39, beams=5, scorecard="prostate"
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
        case, ct, segmentation = self._prostateNodes()
        logic = RadAgentSlicerLogic()
        request = logic.request(
            ["PTV"], ["Bladder", "Rectum"], case.prescription_gy, agent="equispaced", beams=5
        )
        job = logic.startPlan(
            ct,
            segmentation,
            request,
            workFolder=slicer.app.temporaryPath,
            python=shutil.which("PythonSlicer"),
        )
        self.assertEqual(job.wait(timeout=600), 0, [e.message for e in job.poll()])
        result = job.importResults()
        self.assertEqual(slicer.util.arrayFromVolume(result.doseVolumeNode).shape, case.grid.shape)
        self.assertFalse(os.path.exists(job.folder))
        self.delayDisplay("Test passed")
