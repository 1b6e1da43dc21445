"""Agent registry and baselines (radagent.agents): lookup, result contract, exhaustive bound, seeds."""

import json
from dataclasses import replace

import pytest

from radagent.agents import (
    AGENTS,
    AgentResult,
    AngleAgentOptions,
    ExhaustiveOptions,
    TunerOptions,
    get_agent,
    list_agents,
)
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.optimize import TPPs
from radagent.progress import Cancelled

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=8.0)  # fast; the contracts do not depend on it
SMALL = AngleAgentOptions(engine=COARSE, beams=3, candidate_step_deg=60.0)  # 3 of 6 candidates
ANGLE_AGENTS = ("random", "equispaced", "greedy", "exhaustive")


def small_options(name: str):
    """Each angle agent on the same 6 candidates and K = 3; the tuner for a few moves on 5 beams."""
    if name == "exhaustive":
        return ExhaustiveOptions(engine=COARSE, beams=3, candidate_step_deg=60.0)
    if name == "tuner":
        return TunerOptions(engine=COARSE, angles_deg=(0.0, 72.0, 144.0, 216.0, 288.0), max_moves=3)
    return SMALL


@pytest.fixture(scope="module")
def results() -> dict[str, AgentResult]:
    return {name: get_agent(name).run("prostate", small_options(name)) for name in (*ANGLE_AGENTS, "tuner")}


def test_registry_lists_and_finds_agents_by_name_and_kind():
    assert {"random", "equispaced", "greedy", "exhaustive", "tuner"} <= set(AGENTS)
    assert [s.name for s in list_agents("tpp")] == ["tuner", "dqn-tpp", "prior-tuner", "llm-tpp", "m2m"]
    assert {s.name for s in list_agents("angles")} == {*ANGLE_AGENTS, "dqn-gantry", "llm-gantry"}
    assert get_agent("greedy").kind == "angles" and get_agent("greedy").options_type is AngleAgentOptions
    with pytest.raises(InputError, match=r"unknown agent 'dqn'.*random, equispaced"):
        get_agent("dqn")
    with pytest.raises(InputError, match="takes TunerOptions"):
        get_agent("tuner").run("prostate", SMALL)


@pytest.mark.parametrize("name", ANGLE_AGENTS)
def test_angle_agents_return_k_distinct_candidates_and_consistent_numbers(results, name):
    result = results[name]
    assert result.agent == name and result.kind == "angles" and result.tpps is None
    assert len(set(result.angles_deg)) == 3 and set(result.angles_deg) <= {
        0.0,
        60.0,
        120.0,
        180.0,
        240.0,
        300.0,
    }
    assert result.steps == 3 and len(result.history) == 4 and result.history[0]["action"] is None
    # sequential: the step rewards add up to the final plan's R
    assert sum(h["reward"] for h in result.history) == pytest.approx(result.reward, abs=1e-9)
    assert result.history[-1]["angles_deg"] == list(result.angles_deg)
    assert result.score_max == 9.0 and 0.0 <= result.score <= 9.0
    assert result.optimizer_calls >= 3 and result.wall_s > 0
    json.dumps(result.to_dict(), allow_nan=False)


def test_exhaustive_is_a_bound_for_every_angle_agent_on_its_candidate_set(results):
    best = results["exhaustive"]
    assert best.optimizer_calls == 4 + 10 + 20  # the prefix tree of C(6, 3): C(4, 1) + C(5, 2) + C(6, 3)
    assert "optimum over all 20 sets" in best.note
    for name in ("random", "equispaced", "greedy"):
        assert best.reward >= results[name].reward - 1e-6, name
    assert results["equispaced"].angles_deg == (0.0, 120.0, 240.0)
    assert results["equispaced"].optimizer_calls == 3 and results["greedy"].optimizer_calls == 6 + 5 + 4


def test_tuner_stays_in_bounds_and_never_lowers_the_score(results):
    result = results["tuner"]
    assert result.kind == "tpp" and result.angles_deg == (0.0, 72.0, 144.0, 216.0, 288.0)
    values = result.tpps.as_array()
    low, high = TPPs.bounds(len(result.tpps.oar_names))
    assert ((values >= low) & (values <= high)).all()
    scores = [h["score"] for h in result.history]
    assert scores == sorted(scores) and result.score >= scores[0]
    assert 0 <= result.steps <= 3 and result.history[-1]["tpps"] == result.tpps.to_dict()
    assert result.optimizer_calls > result.steps
    assert json.loads(json.dumps(result.to_dict()))["tpps"] == result.tpps.to_dict()


def test_random_agent_is_deterministic_for_a_seed(results):
    again = get_agent("random").run("prostate", SMALL)
    assert again.angles_deg == results["random"].angles_deg and again.reward == results["random"].reward
    others = {get_agent("random").run("prostate", replace(SMALL, seed=s)).angles_deg for s in (1, 2)}
    assert len(others | {again.angles_deg}) > 1


def test_a_false_progress_return_cancels():
    messages = []

    def stop_at_second(fraction: float, message: str) -> bool:
        messages.append((fraction, message))
        return len(messages) < 2

    with pytest.raises(Cancelled):
        get_agent("greedy").run("prostate", SMALL, progress=stop_at_second)
    assert len(messages) == 2 and messages[0][1].startswith("greedy")


def test_lookahead_leaves_the_environment_as_it_was():
    """Greedy, exhaustive and tuner rely on it: trying a step on a copy must not change the original."""
    from radagent.agents.common import lookahead
    from radagent.envs import GantryEnv
    from radagent.envs.gantry import GantryConfig

    env = GantryEnv("prostate", config=GantryConfig(engine=COARSE, beams=3, candidate_step_deg=60.0))
    env.reset(seed=0)
    env.step(0)
    before = env.action_masks().copy()
    trial = lookahead(env, 2)
    assert not trial.env.action_masks()[2]  # the copy chose candidate 2
    assert (env.action_masks() == before).all() and env.action_masks()[2]
    _, reward, _, _, info = env.step(2)
    assert reward == pytest.approx(trial.reward) and info["angles_deg"] == trial.info["angles_deg"]
