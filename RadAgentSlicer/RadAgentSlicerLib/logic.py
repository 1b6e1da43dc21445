"""Headless planning on an MRML scene: the contract the Widget, the Python console and batch mode share.

``PlanningLogic(scene).plan(ct, segmentation, targets=[...], oars=[...], prescriptionGy=..., ...)`` exports
the segments onto the CT grid, plans with the core (:mod:`radagent`), and writes the results back as
nodes. It imports neither ``qt`` nor ``ctk`` and takes the scene explicitly. The Widget uses the same
three steps separately — :meth:`PlanningLogic.caseFromNodes` on the main thread, the computation in a
worker process, :meth:`PlanningLogic.importResults` on the main thread again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radagent.agents import get_agent
from radagent.agents.pipeline import case_problems, role_problems
from radagent.beams import BeamGeometry
from radagent.errors import InputError
from radagent.evaluate.metrics import dvh_table
from radagent.evaluate.scorecard import ScoreCard, card_by_name
from radagent.io.inputs import case_with_roles, is_body_name
from radagent.patient import Case, Protocol
from RadAgentSlicerLib import nodes
from RadAgentSlicerLib.worker import PlanOutput, PlanRequest, compute

__all__ = ["PlanningLogic", "PlanningResult"]

ProgressCallback = Callable[[float, str], bool | None]


@dataclass
class PlanningResult:
    """The nodes a plan added to the scene, and its numbers (``metrics`` = the CLI's metrics.json)."""

    doseVolumeNode: Any
    dvhTableNode: Any
    dvhChartNode: Any
    dvh: dict[str, np.ndarray]  # the DVH table's columns (``dose_gy``, then volume % per structure)
    beamNodes: list[Any]
    studyItemID: int
    metrics: dict[str, Any]
    description: dict[str, Any]  # the CLI's plan.json: angles, isocentre, TPPs, agents' histories
    rtPlanNode: Any = None  # SlicerRT plan with one beam node per beam, when SlicerRT is installed
    case: Case | None = field(default=None, repr=False)


class PlanningLogic:
    """Plans on ``scene``; every method takes nodes and plain values and needs no GUI."""

    def __init__(self, scene: Any) -> None:
        if scene is None:
            raise InputError("PlanningLogic needs an MRML scene")
        self.scene = scene

    # -- inputs ---------------------------------------------------------------------------------------

    def caseFromNodes(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        targets: Sequence[str],
        oars: Sequence[str] = (),
        prescriptionGy: float | None = None,
        fractions: int = 1,
        body: str | None = None,
        scorecard: str | None = None,
    ) -> Case:
        """The core's Case from the nodes: segments exported onto the CT grid, roles by segment name.

        A chosen score card's structure names match segments case-insensitively (a segment ``bladder``
        is scored as the card's ``Bladder``). Raises InputError, before touching the scene, for a
        missing node, a non-scalar CT, no target, a bad prescription, or an empty or outside segment.
        """
        if ctVolumeNode is None or segmentationNode is None:
            raise InputError("choose a CT volume and a segmentation")
        if not targets:
            raise InputError("choose at least one target segment")
        if prescriptionGy is None or not np.isfinite(prescriptionGy) or prescriptionGy <= 0:
            raise InputError(f"the prescription must be a positive dose in Gy, got {prescriptionGy}")
        ct_hu = nodes.volume_array(ctVolumeNode).astype(np.float32)
        grid = nodes.grid_of_volume(ctVolumeNode)
        card = card_by_name(scorecard) if scorecard else None
        wanted = [*targets, *oars, *([body] if body else [])]
        if not body:  # a segment named like a body (Body, External, Skin, ...) is the body; else the CT's
            names = nodes.segment_names(segmentationNode)
            wanted += [n for n in names if is_body_name(n) and n not in wanted]
        masks = nodes.segment_masks_on_volume(self.scene, segmentationNode, wanted, ctVolumeNode)
        renamed = _card_names(card, masks.keys())
        case = case_with_roles(
            ct_hu,
            grid,
            [(renamed.get(n, n), m) for n, m in masks.items()],
            targets=[renamed.get(n, n) for n in targets],
            oars=[renamed.get(n, n) for n in oars],
            body=renamed.get(body, body) if body else None,
            protocol=Protocol(float(prescriptionGy), int(fractions), card),
            name=ctVolumeNode.GetName(),
            description=f"CT '{ctVolumeNode.GetName()}', segmentation '{segmentationNode.GetName()}'",
        )
        return case

    @staticmethod
    def request(
        agent: str | None = "equispaced",
        beams: int = 7,
        angles: Sequence[float] | None = None,
        tppAgent: str | None = None,
        tppAgentOptions: dict[str, Any] | None = None,
        doseGridMm: float | None = None,
        bixelMm: float | None = None,
        agentGridMm: float | None = None,
        seed: int = 0,
        **agentOptions: Any,
    ) -> PlanRequest:
        """The core request for these planning choices. ``agent`` may be an angle or a TPP agent of the
        registry; a TPP agent given as ``agent`` tunes the TPPs of the equispaced (or ``angles``) beams."""
        if agent is not None and get_agent(agent).kind == "tpp":
            if tppAgent is not None:
                raise InputError(f"agent '{agent}' and tppAgent '{tppAgent}' both tune the TPPs")
            agent, tppAgent, tppAgentOptions, agentOptions = None, agent, agentOptions, {}
        if tppAgent is not None and get_agent(tppAgent).kind != "tpp":
            raise InputError(f"tppAgent '{tppAgent}' chooses beam angles, not TPPs")
        if angles is not None and agent == "equispaced":
            agent = None  # explicit angles replace the default template
        sizes = {"dose_grid_mm": doseGridMm, "bixel_mm": bixelMm, "agent_grid_mm": agentGridMm}
        return PlanRequest(
            agent=agent,
            tpp_agent=tppAgent,
            agent_options=dict(agentOptions),
            tpp_agent_options=dict(tppAgentOptions or {}),
            beams=int(beams) if angles is None else max(1, len(angles)),
            angles_deg=tuple(angles) if angles is not None else None,
            seed=seed,
            **{name: value for name, value in sizes.items() if value is not None},  # else the core's
        )

    @staticmethod
    def roleProblems(request: PlanRequest, oars: Sequence[str], scorecard: str | None) -> list[str]:
        """What the chosen roles lack for the request's agents, from names alone (no export): the
        panel's live check while the user assigns segments."""
        card = card_by_name(scorecard) if scorecard else None
        renamed = _card_names(card, oars)
        names = [renamed.get(n, n) for n in oars]
        return [p for run in request.runs() if run is not None for p in role_problems(run, names, card)]

    @staticmethod
    def agentProblems(case: Case, request: PlanRequest) -> list[str]:
        """What the case lacks for the request's agents (a role, a score card); empty when it can run.
        The panel shows these before anything runs."""
        return [p for run in request.runs() if run is not None for p in case_problems(run, case)]

    # -- planning -------------------------------------------------------------------------------------

    def plan(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        targets: Sequence[str],
        oars: Sequence[str] = (),
        prescriptionGy: float | None = None,
        fractions: int = 1,
        agent: str | None = "equispaced",
        beams: int = 7,
        progress: ProgressCallback | None = None,
        *,
        body: str | None = None,
        scorecard: str | None = None,
        angles: Sequence[float] | None = None,
        tppAgent: str | None = None,
        tppAgentOptions: dict[str, Any] | None = None,
        doseGridMm: float | None = None,
        bixelMm: float | None = None,
        agentGridMm: float | None = None,
        seed: int = 0,
        name: str | None = None,
        **agentOptions: Any,
    ) -> PlanningResult:
        """Plan in this process and add the dose, DVH table and chart, and beams to the scene.

        ``progress(fraction, message)`` returning False cancels (raising ``radagent.progress.Cancelled``)
        before any node is created. Every input problem is an InputError raised before any node exists.
        """
        request = self.request(
            agent,
            beams,
            angles,
            tppAgent,
            tppAgentOptions,
            doseGridMm,
            bixelMm,
            agentGridMm,
            seed,
            **agentOptions,
        )
        case = self.caseFromNodes(
            ctVolumeNode, segmentationNode, targets, oars, prescriptionGy, fractions, body, scorecard
        )
        output = compute(case, request, progress)  # refuses, before running, what an agent lacks
        return self.importResults(ctVolumeNode, segmentationNode, case, output, name=name)

    def importResults(
        self,
        ctVolumeNode: Any,
        segmentationNode: Any,
        case: Case,
        output: PlanOutput,
        name: str | None = None,
    ) -> PlanningResult:
        """Add a computed plan's nodes to the scene: dose (SlicerRT-compatible) and DVH under a new study
        item, a DVH chart, one model per beam, and SlicerRT plan/beam nodes when SlicerRT is present."""
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
        from RadAgentSlicerLib import slicerrt

        if slicerrt.available():
            rt_plan = slicerrt.add_rt_plan(
                self.scene, ctVolumeNode, segmentationNode, case, beams, half_field, study, f"{label} RT plan"
            )
        return PlanningResult(
            dose, table, chart, dvh, models, study, output.metrics, output.description, rt_plan, case
        )


def _card_names(card: ScoreCard | None, names: Any) -> dict[str, str]:
    """Segment name → the card's spelling, for segments that match a card structure case-insensitively."""
    if card is None:
        return {}
    by_lower = {n.lower(): n for n in card.structures()}
    return {n: by_lower[n.lower()] for n in names if n.lower() in by_lower and by_lower[n.lower()] != n}


def _plan_label(description: dict[str, Any]) -> str:
    """``RadAgent equispaced+dqn-tpp`` or ``RadAgent 7 beams``: names the plan's nodes by what made it."""
    agents = [a["agent"] for a in description.get("agents", [])]
    return (
        f"RadAgent {'+'.join(agents)}"
        if agents
        else f"RadAgent {len(description['gantry_angles_deg'])} beams"
    )


def _beam_geometries(case: Case, description: dict[str, Any]) -> list[BeamGeometry]:
    iso = tuple(description["isocenter_ras_mm"])
    return [BeamGeometry(float(a), iso, case.patient_position) for a in description["gantry_angles_deg"]]


def _half_field_mm(case: Case, margin_mm: float = 5.0) -> float:
    """Half the side of a square field covering the targets from any gantry angle (drawing only)."""
    k, j, i = np.nonzero(case.target_mask())
    step = max(1, len(i) // 5000)
    points = case.grid.ijk_to_ras_points(np.stack([i[::step], j[::step], k[::step]], axis=1))
    radius = np.max(np.linalg.norm(points - np.asarray(case.isocenter_ras), axis=1))
    return float(radius + margin_mm)
