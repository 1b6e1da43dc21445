"""Beam-angle environment (envs/gantry.py): gymnasium contract, masking, R bookkeeping, seeds, log."""

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from radagent.cases import load_case
from radagent.dose import DoseEngineSettings
from radagent.envs import GantryConfig, GantryEnv
from radagent.envs.common import evaluate_on_ct
from radagent.errors import InputError
from radagent.evaluate import plan_reward
from radagent.optimize import optimize_fluence

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=8.0)  # fast; the contracts do not depend on it


def small(**changes) -> GantryConfig:
    """Three beams among twelve candidates on a coarse grid."""
    fields = {"engine": COARSE, "beams": 3, "candidate_step_deg": 30.0, "observation_shape": (8, 12, 12)}
    return GantryConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def env():
    environment = GantryEnv(case="prostate", config=small())
    yield environment
    environment.close()


def test_check_env_passes_in_both_modes():
    for mode in ("sequential", "refinement"):
        environment = GantryEnv(case="prostate", config=small(mode=mode, refinement_iterations=3))
        check_env(environment, skip_render_check=True)


def test_spaces_and_observation(env):
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 12
    # CT, target, Bladder, Rectum, other OARs (femoral heads), dose, beams
    assert obs["volume"].shape == (7, 8, 12, 12) and obs["volume"].dtype == np.float32
    assert obs["angles"].shape == (12,) and not obs["angles"].any()
    assert env.observation_space.contains(obs)
    assert obs["volume"][1].max() > 0.5  # the target is visible
    assert info["angles_deg"] == [] and info["plan_reward"] == 0.0


def test_chosen_angles_are_masked_and_an_invalid_action_is_a_penalized_no_op(env):
    env.reset(seed=0)
    obs, _, _, _, info = env.step(4)
    assert not env.action_masks()[4] and env.action_masks().sum() == 11
    assert obs["angles"][4] == 1 and obs["volume"][-1].any() and obs["volume"][-2].max() > 0.9
    again, reward, terminated, truncated, repeated = env.step(4)
    assert repeated["invalid_action"] and not info["invalid_action"]
    assert reward == env.config.invalid_action_penalty and not terminated and not truncated
    assert repeated["angles_deg"] == info["angles_deg"] == [120.0]
    np.testing.assert_array_equal(again["volume"], obs["volume"])


def test_sequential_return_is_the_final_plans_reward_on_the_ct_grid(env):
    env.reset(seed=0)
    rewards, terminated = [], False
    for action in (0, 5, 8):
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    assert terminated and not truncated and not env.action_masks().any()
    assert sum(rewards) == pytest.approx(info["plan_reward"], abs=1e-9)
    assert info["metrics"]["plan"]["reward"] == info["plan_reward"] and info["grid"] == "ct"

    case = env.patient.case
    influence = env.cache.get(case, (0.0, 150.0, 240.0), COARSE)
    result = optimize_fluence(influence.matrix, influence.dose_grid, case)
    plan = evaluate_on_ct(case, result.dose_gy, influence.dose_grid, env.config.reward_weights)
    assert plan_reward(case, plan.dose_ct_gy).reward == pytest.approx(info["plan_reward"], rel=1e-9)
    assert plan.score == pytest.approx(info["score"])


def test_refinement_moves_one_beam_and_rewards_the_change_of_r():
    environment = GantryEnv(case="prostate", config=small(mode="refinement", refinement_iterations=2))
    obs, info = environment.reset(seed=0)
    assert info["angles_deg"] == [0.0, 120.0, 240.0] and obs["angles"].sum() == 3
    assert environment.action_space.n == 3 * 12
    masks = environment.action_masks()
    assert not masks[4] and not masks[12 + 0] and masks[12 + 1]
    _, reward, terminated, truncated, moved = environment.step(12 + 1)  # beam 2: 120° → 30°
    assert moved["angles_deg"] == [0.0, 30.0, 240.0]
    assert reward == pytest.approx(moved["plan_reward"] - info["plan_reward"])
    assert not terminated and not truncated
    *_, truncated, _ = environment.step(2)
    assert truncated


def test_refinement_can_set_a_whole_angle_set_and_rewards_the_change_of_r():
    environment = GantryEnv(case="prostate", config=small(mode="refinement", refinement_action="set"))
    check_env(
        GantryEnv(case="prostate", config=small(mode="refinement", refinement_action="set")),
        skip_render_check=True,
    )
    _, info = environment.reset(seed=0)
    assert environment.action_space.n == 12 and environment.action_masks().all()
    action = np.zeros(12, dtype=np.int8)
    action[[1, 5, 9]] = 1
    _, reward, _, _, moved = environment.step(action)
    assert moved["angles_deg"] == [30.0, 150.0, 270.0] and not moved["invalid_action"]
    assert reward == pytest.approx(moved["plan_reward"] - info["plan_reward"])
    assert environment.plan_dose_ct_gy.shape == environment.patient.case.grid.shape
    two = np.zeros(12, dtype=np.int8)
    two[[1, 5]] = 1
    _, reward, _, _, same = environment.step(two)  # not K beams: a penalized no-op
    assert same["invalid_action"] and reward == environment.config.invalid_action_penalty
    assert same["angles_deg"] == [30.0, 150.0, 270.0]
    with pytest.raises(InputError, match="outside"):
        environment.step(np.full(12, 2))


def test_same_seed_gives_the_same_episode():
    def episode(seed: int) -> tuple[int, list[float], np.ndarray]:
        environment = GantryEnv(case="prostate", variants=[0, 1], config=small(beams=2))
        obs, info = environment.reset(seed=seed)
        rewards = []
        for _ in range(2):
            action = int(environment.np_random.choice(np.flatnonzero(environment.action_masks())))
            obs, reward, *_ = environment.step(action)
            rewards.append(reward)
        return info["variant"], rewards, obs["volume"]

    first, second = episode(3), episode(3)
    assert first[:2] == second[:2]
    np.testing.assert_array_equal(first[2], second[2])


def test_a_case_without_organs_at_risk_is_refused():
    with pytest.raises(InputError, match="organ at risk"):
        GantryEnv(case="water", config=small())
    with pytest.raises(InputError, match="variants apply"):
        GantryEnv(case=load_case("prostate"), variants=[1], config=small())
    with pytest.raises(InputError, match="candidate step"):
        small(candidate_step_deg=7.0)


def test_steps_are_logged_as_json_lines(tmp_path):
    path = tmp_path / "gantry.jsonl"
    environment = GantryEnv(case="prostate", config=small(log_path=path, beams=2))
    environment.reset(seed=0)
    environment.step(1)
    environment.step(1)
    environment.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["reset", "step", "step"]
    step, invalid = lines[1], lines[2]
    assert step["angles_deg"] == [30.0] and step["action"] == 1 and not step["invalid_action"]
    assert invalid["invalid_action"] and invalid["reward"] == -1.0
    assert len(step["criteria"]) == 9 and {"label", "value", "subscore"} <= set(step["criteria"][0])
    assert step["reward"] == pytest.approx(step["plan_reward"]) and step["score"] is not None
