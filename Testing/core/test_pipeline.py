"""The agents' pipeline shared by the CLI and the Slicer module: options, role checks, planning."""

from __future__ import annotations

import dataclasses

import pytest

from radagent.agents import get_agent
from radagent.agents.pipeline import (
    AgentRun,
    agent_options,
    case_problems,
    parse_option_values,
    plan_with_agents,
    role_problems,
)
from radagent.cases import load_case
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.evaluate.scorecard import card_by_name
from radagent.plan import PlanSettings

COARSE = DoseEngineSettings(bixel_mm=5.0, dose_grid_mm=5.0)


def test_option_text_is_converted_to_the_options_types():
    values = parse_option_values(get_agent("tuner"), " max_moves=3, start=random ,")
    assert values == {"max_moves": 3, "start": "random"}
    options = agent_options(get_agent("tuner"), **values)
    assert (options.max_moves, options.start) == (3, "random")
    assert parse_option_values(get_agent("dqn-tpp"), "checkpoint=runs/t1")["checkpoint"] == "runs/t1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth=3", "agent 'greedy' has no option 'depth' \\(its options: seed, engine, beams"),
        ("beams", "agent option 'beams' is not NAME=VALUE"),
        ("beams=seven", "agent option beams='seven' is not a int"),
    ],
)
def test_bad_option_text_names_the_problem(text, message):
    with pytest.raises(InputError, match=message):
        parse_option_values(get_agent("greedy"), text)


def test_agent_options_refuse_unknown_fields():
    with pytest.raises(InputError, match="agent 'random' has no option 'checkpoint'"):
        agent_options(get_agent("random"), checkpoint="x")


def test_role_problems_say_what_a_trained_agent_lacks():
    prostate = card_by_name("prostate")
    assert role_problems(AgentRun("dqn-tpp"), ["Bladder", "Rectum"], prostate) == []
    assert role_problems(AgentRun("equispaced"), [], None) == [
        "equispaced needs at least one organ at risk; none is chosen"
    ]
    assert role_problems(AgentRun("tuner"), ["Rectum"], None) == [
        "tuner tunes TPPs on a score card; choose one"
    ]
    liver = role_problems(AgentRun("dqn-tpp"), ["Bladder", "Rectum"], card_by_name("liver"))
    assert liver == ["dqn-tpp was trained with score card 'prostate'; this case has 'liver'"]
    (gantry,) = role_problems(AgentRun("dqn-gantry"), ["Rectum"], None)
    assert (
        gantry
        == "dqn-gantry was trained on 2 scored organs at risk (Bladder, Rectum); this case has 1 (Rectum)"
    )
    (beams,) = role_problems(AgentRun("dqn-gantry", {"beams": 5}), ["Bladder", "Rectum"], prostate)
    assert beams == "dqn-gantry was trained to choose 7 beams, not 5"


def test_case_problems_read_the_case_roles_and_card():
    case = load_case("prostate", 0)
    assert case_problems(AgentRun("dqn-tpp"), case) == []  # the card scores Bladder and Rectum of the four
    no_card = dataclasses.replace(case, protocol=dataclasses.replace(case.protocol, scorecard=None))
    assert case_problems(AgentRun("dqn-tpp"), no_card)[0].startswith("dqn-tpp tunes TPPs on a score card")


def test_plan_with_agents_checks_before_running_anything():
    case = load_case("prostate", 0)
    no_card = dataclasses.replace(case, protocol=dataclasses.replace(case.protocol, scorecard=None))
    calls = []
    with pytest.raises(InputError, match="tuner tunes TPPs on a score card"):
        plan_with_agents(
            no_card, PlanSettings(engine=COARSE), AgentRun("equispaced"), AgentRun("tuner"), calls.append
        )
    assert calls == []
    with pytest.raises(InputError, match="agent 'tuner' chooses tpp, not angles"):
        plan_with_agents(case, PlanSettings(engine=COARSE), AgentRun("tuner"))


def test_plan_with_agents_passes_beams_and_tpps_on_and_reports_live_numbers():
    case = load_case("prostate", 0)
    messages = []
    planned = plan_with_agents(
        case,
        PlanSettings(engine=COARSE),
        AgentRun("random", {"beams": 4, "seed": 3}),
        AgentRun("tuner", {"max_moves": 1}),
        lambda fraction, message: messages.append((fraction, message)),
    )
    angle, tpp = planned.agents
    assert planned.plan.settings.angles_deg == angle.angles_deg and len(angle.angles_deg) == 4
    assert tpp.angles_deg == angle.angles_deg  # the TPP agent tuned the angle agent's beams
    assert planned.plan.tpps == tpp.tpps
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(", R " in m and "score" in m for _, m in messages)
