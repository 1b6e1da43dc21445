"""The plan request (radagent.request): the one way into planning, its checks, and its JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from radagent.agents import AgentNeeds, AgentSpec, AngleAgentOptions
from radagent.agents import registry as agent_registry
from radagent.agents.baselines import run_equispaced
from radagent.cli import CLI_WORDS
from radagent.errors import InputError
from radagent.request import PatientInput, PlanRequest, load_patient, read_request, run_plan, write_request

COARSE = {"bixel_mm": 10.0, "dose_grid_mm": 8.0, "agent_grid_mm": 10.0}


def _without_timings(value):
    """A JSON value without its wall-clock fields, which differ from run to run."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("timing_s", "wall_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_request_round_trips_through_json_and_plans_to_the_same_numbers(tmp_path):
    request = PlanRequest(
        patient=PatientInput(case="prostate", variant=2),
        agents=({"name": "equispaced", "options": {"candidate_step_deg": 20}},),
        beams=5,
        tpps={"lambda_Rectum": 4},
        seed=3,
        **COARSE,
    ).validated()
    write_request(request, tmp_path / "request.json")
    payload = json.loads((tmp_path / "request.json").read_text())
    assert payload["format"] == 1 and payload["patient"] == {"case": "prostate", "variant": 2}
    assert payload["agents"] == [{"name": "equispaced", "options": {"candidate_step_deg": 20}}]
    again = read_request(tmp_path / "request.json")
    assert again == request
    assert [p.name for p in tmp_path.iterdir()] == ["request.json"]  # written through a temporary name
    first, second = run_plan(request), run_plan(again)
    assert first.plan.settings.angles_deg == (0.0, 80.0, 140.0, 220.0, 280.0)  # the agent's 20° grid
    assert first.plan.tpps.to_dict()["lambda_Rectum"] == 4.0
    assert _without_timings(first.metrics()) == _without_timings(second.metrics())
    assert _without_timings(first.description()) == _without_timings(second.description())


def test_relative_patient_paths_are_read_relative_to_the_request_file(tmp_path):
    (tmp_path / "sub").mkdir()
    request = PlanRequest(patient=PatientInput(ct="ct.nrrd", structures="s.seg.nrrd"), targets=("PTV",))
    write_request(dataclasses.replace(request, prescription_gy=60.0), tmp_path / "sub" / "r.json")
    read = read_request(tmp_path / "sub" / "r.json")
    assert read.patient.ct == str(tmp_path / "sub" / "ct.nrrd")
    assert read.patient.structures == str(tmp_path / "sub" / "s.seg.nrrd")


def test_the_request_owns_the_defaults():
    request = PlanRequest(patient=PatientInput(case="water")).validated()
    settings = request.plan_settings()
    assert len(settings.angles_deg) == 7 and settings.fluence == "optimized"
    assert (settings.engine.bixel_mm, settings.engine.dose_grid_mm) == (5.0, 3.0)
    assert request.runs() == (None, None)
    angle, _ = dataclasses.replace(request, agents=("greedy",)).runs()
    assert angle.options["engine"].bixel_mm == angle.options["engine"].dose_grid_mm == 5.0
    assert "beams" not in angle.options  # the agent's own count unless the request sets one
    case = load_patient(request)
    assert case.prescription_gy == 2.0  # the built-in case's own protocol
    changed = load_patient(dataclasses.replace(request, prescription_gy=40.0, fractions=2))
    assert (changed.prescription_gy, changed.protocol.fractions) == (40.0, 2)


@pytest.mark.parametrize(
    ("values", "default_message", "cli_message"),
    [
        (
            {"agents": ("equispaced", "greedy")},
            "agent equispaced and agent greedy both choose the angles",
            "--agent equispaced and --agent greedy both choose the angles",
        ),
        (
            {"agents": ("tuner", "dqn-tpp")},
            "agent tuner and agent dqn-tpp both tune the TPPs",
            "--agent tuner and --agent dqn-tpp both tune the TPPs",
        ),
        (
            {"agents": ("equispaced",), "angles_deg": (0, 90)},
            "the angle list conflicts with agent equispaced, which chooses the beams",
            "--angles conflicts with --agent equispaced",
        ),
        (
            {"agents": ("tuner",), "tpps": {"t_PTV": 1.1}},
            "the TPP list conflicts with agent tuner",
            "--tpp conflicts with --agent tuner",
        ),
        (
            {"agents": ("tuner",), "fluence": "uniform"},
            "fluence uniform conflicts with agent tuner",
            "--fluence uniform conflicts with --agent tuner",
        ),
        (
            {"tpps": {"t_PTV": 1.1}, "fluence": "uniform"},
            "the TPP list applies to optimized fluence",
            "--tpp applies to optimized fluence, not --fluence uniform",
        ),
        (
            {"targets": ("PTV",)},
            "a built-in case knows its structures; do not name a target structure",
            "do not name a target structure with --target",
        ),
    ],
)
def test_conflicting_choices_are_refused_in_the_front_ends_words(values, default_message, cli_message):
    request = PlanRequest(patient=PatientInput(case="water"), **values)
    with pytest.raises(InputError, match=default_message):
        request.validated()
    with pytest.raises(InputError, match=cli_message):
        request.validated(CLI_WORDS)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"patient": {"case": "water", "matrad": "x.mat"}}, "give exactly one patient input"),
        ({"patient": {"ct": "ct.nrrd"}}, "a CT and its structures go together"),
        ({"patient": {"ct": "ct.nrrd", "structures": "s.nrrd"}}, "choose at least one target structure"),
        (
            {"patient": {"ct": "ct.nrrd", "structures": "s.nrrd"}, "targets": ["PTV"]},
            "give the prescription in Gy",
        ),
        ({"prescription_gy": -2}, "the prescription must be a positive dose"),
        ({"dose_grid_mm": 0}, "dose_grid_mm must be a positive size"),
        ({"angles_deg": [0, 400]}, "out of range"),
        ({"scorecard": "pelvis"}, "unknown score card 'pelvis'"),
        ({"agents": ["no-such-agent"]}, "unknown agent 'no-such-agent'"),
        ({"agents": [{"name": "tuner", "options": {"max_moves": "many"}}]}, "max_moves='many' is not a int"),
        ({"agents": [{"name": "tuner", "options": {"max_moves": 2.5}}]}, "max_moves=2.5 is not a int"),
        ({"agents": [{"name": "greedy", "options": {"depth": 3}}]}, "agent 'greedy' has no option 'depth'"),
        ({"agents": [{"name": "greedy", "options": {"engine": {}}}]}, "its grid is the request's"),
        ({"beams": 2.5}, "beams must be an integer"),
        ({"beams": 5, "angles_deg": [0, 90]}, "give the angle list or a beam count, not both"),
        ({"agents": "greedy"}, "agents must be a list, got 'greedy'"),
        ({"targets": "PTV"}, "targets must be a list, got 'PTV'"),
        ({"tpps": [1.0]}, "tpps must map TPP names to values"),
        ({"seed": "x"}, "seed must be a number"),
        ({"colour": "red"}, "unknown plan request field"),
        ({"format": 2}, "format 2 is not 1"),
    ],
)
def test_bad_request_json_names_the_problem(values, message):
    payload = {"format": 1, "patient": {"case": "water"}, **values}
    with pytest.raises(InputError, match=message):
        PlanRequest.from_dict(payload)


def test_json_options_take_the_options_types():
    request = PlanRequest.from_dict(
        {
            "format": 1,
            "patient": {"case": "prostate"},
            "agents": [{"name": "tuner", "options": {"max_moves": 3.0}}],
        }
    )
    _, tpp = request.runs()
    assert tpp.options["max_moves"] == 3 and isinstance(tpp.options["max_moves"], int)


def test_problems_come_from_the_registry_entries_before_anything_runs(monkeypatch):
    prostate_roles = {"targets": ("PTV",), "oars": ("bladder", "rectum"), "prescription_gy": 79.2}
    request = PlanRequest(agents=("dqn-gantry", "dqn-tpp"), scorecard="prostate", **prostate_roles)
    assert request.problems() == []  # role names match the card case-insensitively
    no_card = dataclasses.replace(request, scorecard=None)
    assert "dqn-tpp tunes TPPs on a score card; choose one" in no_card.problems()
    built_in = PlanRequest(patient=PatientInput(case="liver"), agents=("dqn-tpp",))
    assert built_in.problems() == ["dqn-tpp was trained with score card 'prostate'; this case has 'liver'"]
    needy = AgentSpec(
        "needy",
        "angles",
        AngleAgentOptions,
        run_equispaced,
        "an agent whose module is missing",
        AgentNeeds(modules=("radagent_no_such_module",), install="radagent[needy]"),
    )
    monkeypatch.setattr(agent_registry, "AGENTS", {**agent_registry.AGENTS, "needy": needy})
    (problem,) = PlanRequest(patient=PatientInput(case="prostate"), agents=("needy",)).problems()
    assert problem == (
        "needy needs radagent_no_such_module, which this Python cannot import: pip install 'radagent[needy]'"
    )
    with pytest.raises(InputError, match="needy needs radagent_no_such_module"):
        run_plan(PlanRequest(patient=PatientInput(case="prostate"), agents=("needy",), **COARSE))


def test_a_panel_may_leave_missing_modules_to_its_installer(monkeypatch):
    needy = AgentSpec(
        "needy",
        "angles",
        AngleAgentOptions,
        run_equispaced,
        "an agent whose module is missing",
        AgentNeeds(modules=("radagent_no_such_module",)),
    )
    monkeypatch.setattr(agent_registry, "AGENTS", {**agent_registry.AGENTS, "needy": needy})
    request = PlanRequest(targets=("PTV",), oars=("Rectum",), agents=("needy",))
    assert request.problems(modules=False) == []
    assert request.problems() == ["needy needs radagent_no_such_module, which this Python cannot import"]


def test_problems_of_a_case_archive_read_the_archived_roles(tmp_path):
    from radagent.cases import load_case
    from radagent.io.archive import write_case_archive

    write_case_archive(load_case("liver", 0), tmp_path / "case.npz")
    request = PlanRequest(patient=PatientInput(archive=str(tmp_path / "case.npz")), agents=("dqn-tpp",))
    assert request.problems() == ["dqn-tpp was trained with score card 'prostate'; this case has 'liver'"]
    assert dataclasses.replace(request, agents=("tuner",)).problems() == []


def test_the_cli_plans_a_saved_request_and_refuses_other_options_with_it(tmp_path, capsys):
    from radagent.cli import main

    coarse = ["--bixel-mm", "10", "--dose-grid-mm", "8", "--beams", "3", "--quiet"]
    saved = tmp_path / "saved" / "request.json"
    status = main(
        ["plan", "--case", "water", *coarse, "--save-request", str(saved), "--out", str(tmp_path / "a")]
    )
    assert status == 2 and "--save-request" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before planning: nothing written
    saved.parent.mkdir()
    assert (
        main(["plan", "--case", "water", *coarse, "--save-request", str(saved), "--out", str(tmp_path / "a")])
        == 0
    )
    assert read_request(saved) == PlanRequest(
        patient=PatientInput(case="water"), beams=3, bixel_mm=10.0, dose_grid_mm=8.0
    )
    assert main(["plan", "--request", str(saved), "--quiet", "--out", str(tmp_path / "b")]) == 0
    first, second = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("a", "b"))
    assert _without_timings(first) == _without_timings(second)
    status = main(["plan", "--request", str(saved), "--beams", "5", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert status == 2 and "--request holds the whole request; --beams cannot be given with it" in err
    assert not (tmp_path / "c").exists()
