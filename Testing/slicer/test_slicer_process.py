"""The Widget's background path without Qt: export on this thread, plan in a worker process, import here."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import OARS, prostate_nodes
from RadAgentSlicerLib.engine_adapter import open_field_dose_gy
from RadAgentSlicerLib.logic import PlanningLogic
from RadAgentSlicerLib.process import BackgroundPlanning
from RadAgentSlicerLib.worker import CASE_FILE, OUTPUT_FILE, REQUEST_FILE, compute, read_output
from slicer.util import arrayFromVolume

from radagent.errors import InputError
from radagent.io.archive import write_case_archive
from radagent.request import PatientInput, PlanRequest, write_request


def _follow(job: BackgroundPlanning, timeout_s: float = 300.0):
    events, start = [], time.perf_counter()
    while job.running:
        events += job.poll()
        assert time.perf_counter() - start < timeout_s, "worker did not finish"
        time.sleep(0.05)
    return events + job.poll()


def test_worker_process_plans_what_the_logic_plans_in_process(scene, prostate, tmp_path):
    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    request = logic.request(
        ["PTV"], OARS, prostate.prescription_gy, 39, "equispaced", 5, doseGridMm=5.0, scorecard="prostate"
    )
    job = logic.startPlan(ct, segmentation, request, workFolder=tmp_path)
    case = job.case  # exported on this thread, as caseFromNodes exports it
    exported = logic.caseFromNodes(
        ct, segmentation, ["PTV"], OARS, prostate.prescription_gy, 39, scorecard="prostate"
    )
    assert [(s.name, s.role) for s in case.structures] == [(s.name, s.role) for s in exported.structures]
    events = _follow(job)
    assert job.succeeded, [e.message for e in events]
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all(0.0 <= e.fraction <= 1.0 for e in progress)
    assert any("R " in e.message for e in progress)  # live reward from the agent
    assert events[-1].kind == "done"
    output = read_output(job.folder)
    expected = compute(request, case)
    np.testing.assert_allclose(output.dose_ct_gy, expected.dose_ct_gy, atol=1e-4)
    before = scene.GetNumberOfNodes()
    result = job.importResults()
    assert scene.GetNumberOfNodes() > before
    np.testing.assert_allclose(arrayFromVolume(result.doseVolumeNode), output.dose_ct_gy)
    assert result.metrics == output.metrics
    assert [a["agent"] for a in result.description["agents"]] == ["equispaced"]
    assert not job.folder.exists() and list(tmp_path.iterdir()) == []  # the job folder is removed


def test_cancel_kills_the_worker_and_leaves_no_output(scene, prostate, tmp_path):
    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    request = logic.request(["PTV"], OARS, prostate.prescription_gy, agent="greedy", beams=7)
    before = scene.GetNumberOfNodes()
    job = logic.startPlan(ct, segmentation, request, workFolder=tmp_path)  # minutes of work
    start = time.perf_counter()
    while not any(e.kind == "progress" for e in job.poll()):
        assert time.perf_counter() - start < 120
        time.sleep(0.05)
    job.cancel()
    assert not job.running
    assert job.cancelled and not job.succeeded
    assert job.returncode != 0
    assert not (job.folder / OUTPUT_FILE).exists()
    assert list(tmp_path.iterdir()) == [] and scene.GetNumberOfNodes() == before
    with pytest.raises(InputError, match="did not finish"):
        job.importResults()


def test_worker_reports_refused_inputs_with_status_2(prostate, tmp_path):
    write_case_archive(prostate, tmp_path / CASE_FILE)
    request = PlanRequest(patient=PatientInput(archive=CASE_FILE), agents=("no-such-agent",))
    write_request(request, tmp_path / REQUEST_FILE)
    job = BackgroundPlanning(tmp_path)
    events = _follow(job)
    assert job.returncode == 2
    errors = [e.message for e in events if e.kind == "error"]
    assert errors and "unknown agent 'no-such-agent'" in errors[0]


def test_request_rejects_conflicting_agents():
    with pytest.raises(InputError, match="both tune the TPPs"):
        PlanningLogic.request(agent="dqn-tpp", tppAgent="tuner")
    with pytest.raises(InputError, match="chooses beam angles, not TPPs"):
        PlanningLogic.request(agent=None, tppAgent="greedy")
    with pytest.raises(InputError, match="dose_grid_mm must be a positive size"):
        PlanningLogic.request(doseGridMm=0.0)
    with pytest.raises(
        InputError, match="options doseGridMM, scoreCard were given, but no agent to take them"
    ):
        PlanningLogic.request(doseGridMM=2.0, scoreCard="prostate")  # misspelt keywords are not dropped
    request = PlanningLogic.request(agent="dqn-tpp", beams=5, max_steps=4)
    assert (request.angle_agent(), request.tpp_agent().name, request.tpp_agent().options) == (
        None,
        "dqn-tpp",
        {"max_steps": 4},
    )


def test_slicerrt_engine_adapter_gives_open_field_dose_summing_to_the_prescription(scene, prostate):
    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    iso = prostate.isocenter_ras
    doses = [
        open_field_dose_gy(
            logic, ct, segmentation, "PTV", angle, iso, prostate.prescription_gy, 4, dose_grid_mm=5.0
        )
        for angle in (0.0, 90.0, 180.0, 270.0)
    ]
    ptv = prostate.structure("PTV").mask
    for dose in doses:
        assert dose.shape == prostate.grid.shape
        assert np.mean(dose[ptv]) == pytest.approx(prostate.prescription_gy / 4, rel=1e-3)
    assert np.mean(sum(doses)[ptv]) == pytest.approx(prostate.prescription_gy, rel=1e-3)
    # opposed beams deposit different doses (attenuation along each path)
    assert not np.allclose(doses[0], doses[2])


class _Plan:
    """The parts of a SlicerRT plan node the dose engine reads (SlicerRT is not in slicer-core)."""

    def __init__(self, scene, ct, segmentation, target_id, isocenter, rx_gy, beams, rx_error=None):
        self.scene, self.ct, self.segmentation, self.target_id = scene, ct, segmentation, target_id
        self.isocenter, self.rx_gy, self.beams, self.rx_error = isocenter, rx_gy, beams, rx_error

    def GetScene(self):
        return self.scene

    def GetReferenceVolumeNode(self):
        return self.ct

    def GetSegmentationNode(self):
        return self.segmentation

    def GetTargetSegmentID(self):
        return self.target_id

    def GetIsocenterPosition(self, position):
        position[:] = self.isocenter

    def GetRxDose(self):
        if self.rx_error is not None:
            raise self.rx_error
        return self.rx_gy

    def GetNumberOfBeams(self):
        return self.beams


class _Beam:
    def __init__(self, plan, gantry_deg):
        self.plan, self.gantry_deg = plan, gantry_deg

    def GetParentPlanNode(self):
        return self.plan

    def GetGantryAngle(self):
        return self.gantry_deg


def test_slicerrt_engine_returns_its_errors_to_slicerrt_and_writes_only_on_success(scene, prostate):
    from RadAgentSlicerLib.engine_adapter import calculate_beam_dose
    from RadAgentSlicerLib.slicerrt import DOSE_ENGINE_NAME as ENGINE_NAME

    ct, segmentation = prostate_nodes(scene, prostate)
    ptv_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("PTV")
    iso, rx = list(prostate.isocenter_ras), prostate.prescription_gy
    result = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "beam dose")
    no_target = _Plan(scene, ct, segmentation, "", iso, rx, 4)
    message = calculate_beam_dose(_Beam(no_target, 90.0), result, 5.0, 5.0)
    assert message == f"{ENGINE_NAME}: the plan needs a reference CT, a segmentation and a target segment"
    assert result.GetImageData() is None  # nothing written: SlicerRT adds no dose
    broken = _Plan(scene, ct, segmentation, ptv_id, iso, rx, 4, rx_error=RuntimeError("no Rx node"))
    assert calculate_beam_dose(_Beam(broken, 90.0), result, 5.0, 5.0) == (
        f"{ENGINE_NAME} failed: RuntimeError: no Rx node"
    )
    assert (
        calculate_beam_dose(_Beam(None, 90.0), result, 5.0, 5.0)
        == f"{ENGINE_NAME}: the beam belongs to no plan"
    )
    assert result.GetImageData() is None
    plan = _Plan(scene, ct, segmentation, ptv_id, iso, rx, 4)
    assert calculate_beam_dose(_Beam(plan, 90.0), result, None, None) == ""  # unset parameters: 5 mm
    dose = arrayFromVolume(result)
    assert dose.shape == prostate.grid.shape
    assert np.mean(dose[prostate.structure("PTV").mask]) == pytest.approx(rx / 4, rel=1e-3)


def test_an_error_while_writing_the_dose_reaches_slicerrt_too(scene, prostate):
    from RadAgentSlicerLib.engine_adapter import calculate_beam_dose
    from RadAgentSlicerLib.slicerrt import DOSE_ENGINE_NAME

    ct, segmentation = prostate_nodes(scene, prostate)
    ptv_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("PTV")
    plan = _Plan(scene, ct, segmentation, ptv_id, list(prostate.isocenter_ras), prostate.prescription_gy, 4)
    message = calculate_beam_dose(_Beam(plan, 0.0), object(), 10.0, 10.0)  # no volume node to write into
    assert message.startswith(f"{DOSE_ENGINE_NAME} failed: ")


def test_background_plan_with_dose_levels_and_a_normalization_target(scene, prostate, tmp_path):
    """The panel's NAME:GY targets and a normalization target survive the archived request of the job."""
    from radagent.evaluate.dvh import hottest_minimum_gy

    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    request = logic.request(
        ["PTV:70"], ["Rectum"], 70.0, 39, beams=3, doseGridMm=8.0, bixelMm=10.0, normalizeTo="PTV"
    )
    job = logic.startPlan(ct, segmentation, request, workFolder=tmp_path)
    events = _follow(job)
    assert job.succeeded, [e.message for e in events]
    result = job.importResults()
    assert result.metrics["plan"]["target_levels"][0]["dose_level_gy"] == 70.0
    dose = arrayFromVolume(result.doseVolumeNode)
    assert hottest_minimum_gy(dose[prostate.structure("PTV").mask], 0.95) == pytest.approx(70.0, rel=1e-3)


def test_a_target_outside_the_body_is_refused_before_any_node(scene, prostate):
    from conftest import add_segmentation

    ct, _ = prostate_nodes(scene, prostate)
    air = np.zeros(prostate.grid.shape, bool)
    air[-4:, :4, :4] = True
    segmentation = add_segmentation(scene, "S", {"Body": prostate.body.mask, "PTV": air}, prostate.grid)
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="target 'PTV' lies entirely outside the body 'Body'"):
        PlanningLogic(scene).plan(ct, segmentation, ["PTV"], [], 70.0, beams=3)
    assert scene.GetNumberOfNodes() == before


def test_an_llm_agent_plans_in_the_worker_with_its_key_only_in_the_environment(
    scene, prostate, tmp_path, monkeypatch
):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from llm_server import scripted_server

    from radagent.llm.client import API_KEY_VARIABLE

    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    assert logic.agentNeedsLLM("llm-gantry")
    assert not logic.agentNeedsLLM("equispaced") and not logic.agentNeedsLLM(None)
    coarse = {"doseGridMm": 8.0, "bixelMm": 10.0, "agentGridMm": 10.0, "candidate_step_deg": 30.0}
    remote = logic.llmOptions("http://10.255.255.1:9/v1", "m")
    request = logic.request(["PTV"], OARS, prostate.prescription_gy, 39, "llm-gantry", 5, **coarse, **remote)
    assert any("is not a loopback address" in p for p in request.problems())
    opted_in = logic.llmOptions("http://10.255.255.1:9/v1", "m", allowRemote=True)
    rx = prostate.prescription_gy
    request = logic.request(["PTV"], OARS, rx, 39, "llm-gantry", 5, **coarse, **opted_in)
    assert request.problems() == []  # checked, never contacted
    reply = {"text": json.dumps({"gantry_angles": [0, 60, 150, 210, 300], "rationale": "spare the rectum"})}
    with scripted_server([reply]) as server:
        options = logic.llmOptions(f"{server.url}/v1", "scripted", iterations=1, images=False)
        request = logic.request(
            ["PTV"], OARS, prostate.prescription_gy, 39, "llm-gantry", 5, **coarse, **options
        )
        job = logic.startPlan(ct, segmentation, request, workFolder=tmp_path, llmApiKey="sk-secret-123")
        events = _follow(job)
    assert job.succeeded, [e.message for e in events]
    files = [p for p in job.folder.rglob("*") if p.is_file()]  # request, case archive and the output
    assert {p.name for p in files} >= {"request.json", "output.json", "output.npz"}
    written = b"".join(p.read_bytes() for p in files)
    assert b"sk-secret-123" not in written  # the key travelled in the worker's environment only
    assert server.headers and all(h["Authorization"] == "Bearer sk-secret-123" for h in server.headers)
    assert any("spare the rectum" in e.message for e in events if e.kind == "progress")
    result = job.importResults()
    (agent,) = result.description["agents"]
    assert agent["agent"] == "llm-gantry" and agent["llm"]["calls"] == 1
    assert "sk-secret" not in json.dumps(result.description)


def test_the_panel_offers_the_llm_tpp_agents_and_shows_their_rationale(scene, prostate, tmp_path):
    """m2m and llm-tpp come from the registry into the TPP agent list; a TPP agent's LLM settings go
    with it, and its rationale reaches the progress (status line) messages."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from llm_server import scripted_server

    logic = PlanningLogic(scene)
    names = [name for name, _ in logic.agentChoices("tpp")]
    assert {"m2m", "llm-tpp", "prior-tuner"} <= set(names) and logic.agentNeedsLLM("m2m")
    ct, segmentation = prostate_nodes(scene, prostate)
    coarse = {"doseGridMm": 8.0, "bixelMm": 10.0, "agentGridMm": 10.0}
    reply = {"text": json.dumps({"tpp": {"t_OAR1": 0.6}, "rationale": "lower the rectum threshold"})}
    with scripted_server([reply]) as server:
        options = logic.llmOptions(f"{server.url}/v1", "scripted", iterations=1)
        request = logic.request(
            ["PTV"],
            OARS,
            prostate.prescription_gy,
            39,
            "equispaced",
            5,
            **coarse,
            scorecard="prostate",
            tppAgent="m2m",
            tppAgentOptions=options,
        )
        job = logic.startPlan(ct, segmentation, request, workFolder=tmp_path)
        events = _follow(job)
    assert job.succeeded, [e.message for e in events]
    assert any("lower the rectum threshold" in e.message for e in events if e.kind == "progress")
    tpp = job.importResults().description["agents"][1]
    assert tpp["agent"] == "m2m" and tpp["knowledge"]["oars"][0]["card_entry"] == "OAR1"
