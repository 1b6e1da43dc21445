"""The Widget's background path without Qt: export on this thread, plan in a worker process, import here."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import OARS, prostate_nodes
from RadAgentSlicerLib.engine_adapter import open_field_dose_gy
from RadAgentSlicerLib.logic import PlanningLogic
from RadAgentSlicerLib.process import BackgroundPlanning
from RadAgentSlicerLib.worker import (
    OUTPUT_FILE,
    PlanRequest,
    compute,
    read_case,
    read_output,
    write_case,
    write_request,
)
from slicer.util import arrayFromVolume

from radagent.errors import InputError


def _follow(job: BackgroundPlanning, timeout_s: float = 300.0):
    events, start = [], time.perf_counter()
    while job.running:
        events += job.poll()
        assert time.perf_counter() - start < timeout_s, "worker did not finish"
        time.sleep(0.05)
    return events + job.poll()


def test_case_round_trips_through_the_worker_files(prostate, tmp_path):
    write_case(prostate, tmp_path)
    case = read_case(tmp_path)
    assert [(s.name, s.role) for s in case.structures] == [(s.name, s.role) for s in prostate.structures]
    assert all(
        np.array_equal(a.mask, b.mask) for a, b in zip(case.structures, prostate.structures, strict=True)
    )
    np.testing.assert_array_equal(case.ct_hu, prostate.ct_hu)
    np.testing.assert_array_equal(case.grid.ijk_to_ras, prostate.grid.ijk_to_ras)
    assert case.protocol.scorecard.name == "prostate"
    assert (case.prescription_gy, case.protocol.fractions) == (
        prostate.prescription_gy,
        prostate.protocol.fractions,
    )


def test_worker_process_plans_what_the_logic_plans_in_process(scene, prostate, tmp_path):
    ct, segmentation = prostate_nodes(scene, prostate)
    logic = PlanningLogic(scene)
    case = logic.caseFromNodes(
        ct, segmentation, ["PTV"], OARS, prostate.prescription_gy, 39, scorecard="prostate"
    )
    request = logic.request(agent="equispaced", beams=5, doseGridMm=5.0)
    write_case(case, tmp_path)
    write_request(request, tmp_path)
    job = BackgroundPlanning(tmp_path)
    events = _follow(job)
    assert job.succeeded, [e.message for e in events]
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all(0.0 <= e.fraction <= 1.0 for e in progress)
    assert any("R " in e.message for e in progress)  # live reward from the agent
    assert events[-1].kind == "done"
    output = read_output(tmp_path)
    expected = compute(case, request)
    np.testing.assert_allclose(output.dose_ct_gy, expected.dose_ct_gy, atol=1e-4)
    before = scene.GetNumberOfNodes()
    result = logic.importResults(ct, segmentation, case, output)
    assert scene.GetNumberOfNodes() > before
    np.testing.assert_allclose(arrayFromVolume(result.doseVolumeNode), output.dose_ct_gy)
    assert result.metrics == output.metrics
    assert [a["agent"] for a in result.description["agents"]] == ["equispaced"]


def test_cancel_kills_the_worker_and_leaves_no_output(prostate, tmp_path):
    write_case(prostate, tmp_path)
    write_request(PlanRequest(agent="greedy", beams=7), tmp_path)  # minutes of work
    job = BackgroundPlanning(tmp_path)
    start = time.perf_counter()
    while not any(e.kind == "progress" for e in job.poll()):
        assert time.perf_counter() - start < 120
        time.sleep(0.05)
    job.cancel()
    assert not job.running
    assert job.cancelled and not job.succeeded
    assert job.returncode != 0
    assert not (tmp_path / OUTPUT_FILE).exists()


def test_worker_reports_refused_inputs_with_status_2(prostate, tmp_path):
    write_case(prostate, tmp_path)
    write_request(PlanRequest(agent="no-such-agent"), tmp_path)
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
    request = PlanningLogic.request(agent="dqn-tpp", beams=5, max_steps=4)
    assert (request.agent, request.tpp_agent, request.tpp_agent_options) == (
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
