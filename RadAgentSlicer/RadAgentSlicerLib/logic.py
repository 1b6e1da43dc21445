"""Headless planning on an MRML scene: the contract the Widget, the Python console and batch mode share.

``PlanningLogic(scene).plan(ct, segmentation, targets=[...], oars=[...], prescriptionGy=..., ...)`` parses
its arguments into the core's plan request (:class:`radagent.request.PlanRequest`), exports the segments
onto the CT grid, plans with the core in this process and writes the results back as nodes.
:meth:`PlanningLogic.startPlan` does the same in a worker process and returns a :class:`PlanningJob` to
poll, cancel and import — the one background path of the Widget and the module's self-test.

This module imports neither ``qt`` nor ``ctk``, takes the scene explicitly, and imports ``radagent``
only inside its methods, so the module's Logic class can derive from it before the core is installed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PlanNodes", "PlanningJob", "PlanningLogic"]

ProgressCallback = Callable[[float, str], bool | None]
# How the core's messages name the request's fields in this module's terms (see radagent.request).
SLICER_WORDS = {"targets": "target segment", "oars": "organ-at-risk segment", "body": "body segment"}


@dataclass
class PlanNodes:
    """A finished plan as scene nodes (dose, DVH table and chart, beams) and its numbers (``metrics`` =
    the CLI's metrics.json)."""

    doseVolumeNode: Any
    dvhTableNode: Any
    dvhChartNode: Any
    dvh: dict[str, Any]  # the DVH table's columns (``dose_gy``, then volume % per structure)
    beamNodes: list[Any]
    studyItemID: int
    metrics: dict[str, Any]
    description: dict[str, Any]  # the CLI's plan.json: angles, isocentre, TPPs, agents' histories
    rtPlanNode: Any = None  # SlicerRT plan with one beam node per beam, when SlicerRT is installed
    case: Any = field(default=None, repr=False)  # the radagent Case that was planned


class PlanningLogic:
    """Plans on ``scene``; every method takes nodes and plain values and needs no GUI."""

    def __init__(self, scene: Any = None) -> None:
        """Plan on ``scene``; by default the application's scene (``slicer.mrmlScene``, in Slicer)."""
        if scene is None:
            import slicer

            scene = getattr(slicer, "mrmlScene", None)
        if scene is None:
            from radagent.errors import InputError

            raise InputError("PlanningLogic needs an MRML scene")
        self.scene = scene

    # -- what to plan ---------------------------------------------------------------------------------

    @staticmethod
    def request(
        targets: Sequence[str] = (),
        oars: Sequence[str] = (),
        prescriptionGy: float | None = None,
        fractions: int | None = None,
        agent: str | None = None,
        beams: int | None = None,
        *,
        body: str | None = None,
        scorecard: str | None = None,
        angles: Sequence[float] | None = None,
        tppAgent: str | None = None,
        tppAgentOptions: dict[str, Any] | None = None,
        doseGridMm: float | None = None,
        bixelMm: float | None = None,
        agentGridMm: float | None = None,
        seed: int | None = None,
        objectiveSet: str | None = None,
        normalizeTo: str | None = None,
        **agentOptions: Any,
    ) -> Any:
        """The core's validated plan request for these choices (its defaults wherever a value is None).
        A target may carry its own dose as ``"PTV56:56"`` (a simultaneous integrated boost). ``agent`` may
        be an angle or a TPP agent of the registry, with ``agentOptions``; ``tppAgent`` must be a TPP agent
        and tunes the TPPs of ``agent``'s (or the request's) beams."""
        from radagent.agents import get_agent
        from radagent.errors import InputError
        from radagent.request import PlanRequest, parse_targets

        if tppAgent is not None and get_agent(tppAgent).kind != "tpp":
            raise InputError(f"tppAgent '{tppAgent}' chooses beam angles, not TPPs")
        if agent is None and agentOptions:
            raise InputError(f"options {', '.join(agentOptions)} were given, but no agent to take them")
        agents = [{"name": agent, "options": agentOptions}] if agent is not None else []
        agents += [{"name": tppAgent, "options": tppAgentOptions or {}}] if tppAgent is not None else []
        given = {"dose_grid_mm": doseGridMm, "bixel_mm": bixelMm, "agent_grid_mm": agentGridMm, "seed": seed}
        names, levels = parse_targets(targets)
        return PlanRequest(
            targets=names,
            target_levels_gy=levels,
            objective_set=objectiveSet or None,
            normalization_target=normalizeTo or None,
            oars=tuple(oars),
            body=body or None,
            prescription_gy=prescriptionGy,
            fractions=fractions,
            scorecard=scorecard or None,
            angles_deg=tuple(angles) if angles is not None else None,
            beams=beams,
            agents=tuple(agents),
            **{name: value for name, value in given.items() if value is not None},  # else the core's
        ).validated(SLICER_WORDS)

    @staticmethod
    def agentNeedsLLM(agent: str | None) -> bool:
        """True when ``agent`` (a registry name, or None) asks a chat model: the panel then shows the LLM
        settings, which the request carries as the agent's ``llm_*`` options (the API key excepted)."""
        from radagent.agents import get_agent

        return bool(agent) and get_agent(agent).needs.llm_endpoint

    @staticmethod
    def llmOptions(
        url: str = "",
        model: str = "",
        api: str = "openai",
        iterations: int | None = None,
        images: bool | None = None,
        allowRemote: bool = False,
    ) -> dict[str, Any]:
        """An LLM agent's options for the panel's LLM settings (empty URL or model: RADAGENT_LLM_URL /
        _MODEL). The API key is not an option: it goes to :meth:`startPlan`, which keeps it off disk."""
        options = {
            "llm_url": url.strip() or None,
            "llm_model": model.strip() or None,
            "llm_api": api,
            "iterations": iterations,
            "images": images,
            "llm_allow_remote": bool(allowRemote),
        }
        return {name: value for name, value in options.items() if value is not None}

    @staticmethod
    def checkLLMEndpoint(
        url: str, model: str, api: str = "openai", allowRemote: bool = False, apiKey: str | None = None
    ) -> list[str]:
        """What the endpoint can do (models, structured replies, images), as report lines: the CLI's
        ``radagent llm check``. Raises InputError when it cannot answer a chat request."""
        from radagent.llm.local import check_endpoint

        return check_endpoint(url or None, model or None, api, allowRemote, api_key=apiKey or None)

    @staticmethod
    def agentChoices(kind: str) -> list[tuple[str, str]]:
        """(name, one-line description) of every registered agent of ``kind`` (``angles`` or ``tpp``):
        what the panel offers, straight from the core's registry."""
        from radagent.agents import list_agents

        return [(spec.name, spec.description) for spec in list_agents(kind)]

    def caseFromNodes(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        targets: Sequence[str],
        oars: Sequence[str] = (),
        prescriptionGy: float | None = None,
        fractions: int | None = None,
        body: str | None = None,
        scorecard: str | None = None,
    ) -> Any:
        """The core's Case from the nodes, roles by segment name (see :meth:`caseForRequest`)."""
        request = self.request(targets, oars, prescriptionGy, fractions, body=body, scorecard=scorecard)
        return self.caseForRequest(ctVolumeNode, segmentationNode, request)

    def caseForRequest(self, ctVolumeNode: Any, segmentationNode: Any, request: Any) -> Any:
        """The Case a request plans on the nodes: its segments exported onto the CT grid, then the request's
        roles and protocol applied by the core (a segment matching a score-card structure case-insensitively
        takes the card's spelling). Raises InputError, before touching the scene, for a missing node, a
        non-scalar CT, no target, a bad prescription, or an empty or outside segment."""
        import numpy as np

        from radagent.errors import InputError
        from radagent.io.inputs import is_body_name
        from radagent.request import case_from_masks
        from RadAgentSlicerLib import nodes

        if ctVolumeNode is None or segmentationNode is None:
            raise InputError("choose a CT volume and a segmentation")
        ct_hu = nodes.volume_array(ctVolumeNode).astype(np.float32)
        grid = nodes.grid_of_volume(ctVolumeNode)
        wanted = [*request.targets, *request.oars, *([request.body] if request.body else [])]
        if not request.body:  # a segment named like a body (Body, External, Skin, ...) is the body
            names = nodes.segment_names(segmentationNode)
            wanted += [n for n in names if is_body_name(n) and n not in wanted]
        masks = nodes.segment_masks_on_volume(self.scene, segmentationNode, wanted, ctVolumeNode)
        return case_from_masks(
            request,
            ct_hu,
            grid,
            list(masks.items()),
            name=ctVolumeNode.GetName(),
            description=f"CT '{ctVolumeNode.GetName()}', segmentation '{segmentationNode.GetName()}'",
            words=SLICER_WORDS,
        )

    # -- planning -------------------------------------------------------------------------------------

    def plan(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        targets: Sequence[str],
        oars: Sequence[str] = (),
        prescriptionGy: float | None = None,
        fractions: int | None = None,
        agent: str | None = None,
        beams: int | None = None,
        progress: ProgressCallback | None = None,
        *,
        name: str | None = None,
        **choices: Any,
    ) -> PlanNodes:
        """Plan in this process and add the dose, DVH table and chart, and beams to the scene. ``choices``
        are :meth:`request`'s keyword arguments (body, scorecard, angles, tppAgent, agent options, …).

        ``progress(fraction, message)`` returning False cancels (raising ``radagent.progress.Cancelled``)
        before any node is created. Every input problem is an InputError raised before any node exists.
        """
        from RadAgentSlicerLib.worker import compute

        request = self.request(targets, oars, prescriptionGy, fractions, agent, beams, **choices)
        case = self.caseForRequest(ctVolumeNode, segmentationNode, request)
        output = compute(request, case, progress)  # refuses, before running, what an agent lacks
        return self.importResults(ctVolumeNode, segmentationNode, case, output, name=name)

    def startPlan(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        request: Any,
        *,
        workFolder: str | Path | None = None,
        python: str | None = None,
        llmApiKey: str | None = None,
    ) -> PlanningJob:
        """Export the case on this (the main) thread, check it, and plan ``request`` in a worker process
        (``python``: default this interpreter; in Slicer, PythonSlicer). ``llmApiKey`` reaches the worker
        in its environment only, never the job folder. Returns the running job; nothing is added to the
        scene until :meth:`PlanningJob.importResults`."""
        from dataclasses import replace

        from radagent.errors import InputError
        from radagent.io.archive import write_case_archive
        from radagent.llm.client import API_KEY_VARIABLE
        from radagent.request import PatientInput, write_request
        from RadAgentSlicerLib.process import BackgroundPlanning
        from RadAgentSlicerLib.worker import CASE_FILE, REQUEST_FILE

        case = self.caseForRequest(ctVolumeNode, segmentationNode, request)
        problems = request.problems(case)
        if problems:
            raise InputError("; ".join(problems))
        folder = Path(tempfile.mkdtemp(prefix="RadAgent-", dir=workFolder))
        try:
            write_case_archive(case, folder / CASE_FILE)
            roles_in_archive = {"targets": (), "oars": (), "body": None, "target_levels_gy": {}}
            archived = replace(request, patient=PatientInput(archive=CASE_FILE), **roles_in_archive)
            write_request(archived, folder / REQUEST_FILE)
            secrets = {API_KEY_VARIABLE: llmApiKey} if llmApiKey else None
            process = BackgroundPlanning(folder, python=python, env=secrets)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return PlanningJob(self, ctVolumeNode, segmentationNode, case, folder, process)

    def importResults(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        case: Any,
        output: Any,
        name: str | None = None,
    ) -> PlanNodes:
        """Add a computed plan's nodes to the scene: dose (SlicerRT-compatible) and DVH under a new study
        item, a DVH chart, one model per beam, and SlicerRT plan/beam nodes when SlicerRT is present."""
        from radagent.errors import InputError
        from radagent.evaluate.metrics import dvh_table
        from RadAgentSlicerLib import nodes, slicerrt

        if output.dose_ct_gy.shape != case.grid.shape:
            raise InputError(f"dose shape {output.dose_ct_gy.shape} does not match the CT {case.grid.shape}")
        label = name or _plan_label(output.description)
        study = nodes.plan_study_item(self.scene, ctVolumeNode, label)
        dose = nodes.add_dose_volume(
            self.scene, output.dose_ct_gy, ctVolumeNode, study, f"{label} dose", case.prescription_gy
        )
        dvh = dvh_table(case, output.dose_ct_gy)
        table = nodes.add_dvh_table(self.scene, dvh, study, f"{label} DVH")
        chart = nodes.add_dvh_chart(self.scene, table, f"{label} DVH")
        beams = _beam_geometries(case, output.description)
        half_field = _half_field_mm(case)
        models = nodes.add_beam_models(self.scene, beams, half_field, study, f"{label} beam")
        rt_plan = None
        if slicerrt.available():
            rt_plan = slicerrt.add_rt_plan(
                self.scene, ctVolumeNode, segmentationNode, case, beams, half_field, study, f"{label} RT plan"
            )
        return PlanNodes(
            dose, table, chart, dvh, models, study, output.metrics, output.description, rt_plan, case
        )


class PlanningJob:
    """A plan running in a worker process: :meth:`poll` its events from the thread that owns the scene,
    :meth:`cancel` it, and :meth:`importResults` when it has succeeded. Its job folder is removed when it
    is imported, cancelled or closed."""

    def __init__(
        self, logic: PlanningLogic, ct: Any, segmentation: Any, case: Any, folder: Path, process: Any
    ) -> None:
        self.logic, self.ct, self.segmentation, self.case = logic, ct, segmentation, case
        self.folder = folder
        self.process = process

    def poll(self) -> list[Any]:
        """The worker's events since the last call (progress, error, done, log lines); never blocks."""
        return self.process.poll()

    @property
    def running(self) -> bool:
        """True until the worker has exited and its output has been read."""
        return self.process.running

    @property
    def succeeded(self) -> bool:
        """True when the worker finished with a complete output and was not cancelled."""
        return self.process.succeeded

    @property
    def cancelled(self) -> bool:
        """True after :meth:`cancel`."""
        return self.process.cancelled

    @property
    def returncode(self) -> int | None:
        """The worker's exit status once it has ended."""
        return self.process.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the worker ends (batch scripts, tests); returns its exit status."""
        return self.process.wait(timeout)

    def cancel(self) -> None:
        """Kill the worker and its children and remove the job folder; the scene stays as it was."""
        self.process.cancel()
        self.close()

    def importResults(self, name: str | None = None) -> PlanNodes:
        """Add the finished plan's nodes to the scene (main thread only), then remove the job folder."""
        from radagent.errors import InputError
        from RadAgentSlicerLib.worker import read_output

        if not self.succeeded:
            raise InputError(f"the plan did not finish (exit status {self.returncode}); nothing to import")
        try:
            output = read_output(self.folder)
            return self.logic.importResults(self.ct, self.segmentation, self.case, output, name=name)
        finally:
            self.close()

    def close(self) -> None:
        """Remove the job folder (idempotent)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _plan_label(description: dict[str, Any]) -> str:
    """``RadAgent equispaced+dqn-tpp`` or ``RadAgent 7 beams``: names the plan's nodes by what made it."""
    agents = [a["agent"] for a in description.get("agents", [])]
    return (
        f"RadAgent {'+'.join(agents)}"
        if agents
        else f"RadAgent {len(description['gantry_angles_deg'])} beams"
    )


def _beam_geometries(case: Any, description: dict[str, Any]) -> list[Any]:
    from radagent.beams import BeamGeometry

    iso = tuple(description["isocenter_ras_mm"])
    return [BeamGeometry(float(a), iso, case.patient_position) for a in description["gantry_angles_deg"]]


def _half_field_mm(case: Any, margin_mm: float = 5.0) -> float:
    """Half the side of a square field covering the targets from any gantry angle (drawing only)."""
    import numpy as np

    k, j, i = np.nonzero(case.target_mask())
    step = max(1, len(i) // 5000)
    points = case.grid.ijk_to_ras_points(np.stack([i[::step], j[::step], k[::step]], axis=1))
    radius = np.max(np.linalg.norm(points - np.asarray(case.isocenter_ras), axis=1))
    return float(radius + margin_mm)
