"""Planning-parameter environment (envs/tpp.py): gymnasium contract, clipping masks, reward, seeds, log."""

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from radagent.beams import equispaced_angles
from radagent.dose import DoseEngineSettings
from radagent.envs import TPPConfig, TPPEnv
from radagent.errors import InputError
from radagent.evaluate import smooth_score, total_score

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=8.0)  # fast; the contracts do not depend on it


def small(**changes) -> TPPConfig:
    """Five beams on a coarse grid."""
    return TPPConfig(**{"engine": COARSE, "angles_deg": equispaced_angles(5), **changes})


@pytest.fixture(scope="module")
def env():
    environment = TPPEnv(case="prostate", config=small())
    yield environment
    environment.close()


def test_check_env_passes():
    check_env(
        TPPEnv(case="prostate", config=small(include_tpps=True, start="random")), skip_render_check=True
    )


def test_spaces_and_dvh_observation(env):
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 18 and obs.shape == (300,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert obs[0] == pytest.approx(0.95, abs=2e-3)  # target DVH at p: D95 = p, normalized on the CT grid
    assert np.all(np.diff(obs[:100]) <= 0) and np.all(np.diff(obs[100:200]) <= 0)
    assert info["tpps"] == {n: v for n, v in zip(env.tpps.names, (1, 1, 1, 1, 1, 1, 0.1, 1, 1), strict=True)}
    with_tpps = TPPEnv(case="prostate", config=small(include_tpps=True))
    tpp_obs, _ = with_tpps.reset(seed=0)
    assert tpp_obs.shape == (309,) and with_tpps.observation_space.contains(tpp_obs)
    np.testing.assert_allclose(tpp_obs[300:], [1, 1, 1, 0, 0, 0, 0.1, 1, 1], atol=1e-6)  # λ as log10 λ


def test_clipped_moves_are_masked_and_an_invalid_action_is_a_penalized_no_op(env):
    obs, info = env.reset(seed=0)
    masks = env.action_masks()
    # from the default start t_PTV = 1 cannot go down, t_OAR = 1 and V_OAR = 1 cannot go up
    assert np.flatnonzero(~masks).tolist() == [1, 2, 4, 14, 16]
    again, reward, terminated, truncated, repeated = env.step(1)
    assert repeated["invalid_action"] and reward == env.config.invalid_action_penalty
    assert repeated["tpps"] == info["tpps"] and not terminated and not truncated
    np.testing.assert_array_equal(again, obs)


def test_reward_is_the_smooth_score_change_plus_four_times_the_score_change(env):
    _, info = env.reset(seed=0)
    for action in (8, 3, 11):  # λ_Bladder up, t_Bladder down, λ_Rectum down
        _, reward, _, _, after = env.step(action)
        assert not after["invalid_action"]
        expected = after["smooth_score"] - info["smooth_score"] + 4.0 * (after["score"] - info["score"])
        assert reward == pytest.approx(expected, abs=1e-12)
        criteria = env._plan.evaluation.criteria
        assert after["score"] == pytest.approx(total_score(criteria))
        assert after["smooth_score"] == pytest.approx(smooth_score(criteria))
        info = after
    assert info["tpps"]["lambda_Bladder"] == pytest.approx(1.65)
    assert info["tpps"]["t_Bladder"] == pytest.approx(0.6) and info["tpps"]["lambda_Rectum"] == 0.6


def test_episode_is_truncated_after_the_step_limit():
    environment = TPPEnv(case="prostate", config=small(max_steps=2))
    environment.reset(seed=0)
    assert not environment.step(6)[3]
    _, _, terminated, truncated, _ = environment.step(6)
    assert truncated and not terminated


def test_same_seed_gives_the_same_random_start_and_episode():
    def episode(seed: int) -> tuple[dict, list[float], np.ndarray]:
        environment = TPPEnv(case="prostate", variants=[0, 1], config=small(start="random"))
        obs, info = environment.reset(seed=seed)
        rewards = []
        for _ in range(2):
            action = int(environment.np_random.choice(np.flatnonzero(environment.action_masks())))
            obs, reward, *_ = environment.step(action)
            rewards.append(reward)
        return info, rewards, obs

    first, second = episode(5), episode(5)
    assert first[0]["tpps"] == second[0]["tpps"] and first[0]["variant"] == second[0]["variant"]
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])
    assert episode(6)[0]["tpps"] != first[0]["tpps"]


def test_a_case_without_organs_at_risk_is_refused():
    with pytest.raises(InputError, match="TPPEnv needs at least one organ at risk"):
        TPPEnv(case="water", config=small())
    with pytest.raises(InputError, match="start"):
        small(start="best")


def test_steps_are_logged_as_json_lines(tmp_path):
    path = tmp_path / "tpp.jsonl"
    environment = TPPEnv(case="prostate", config=small(log_path=path))
    environment.reset(seed=0)
    environment.step(10)
    environment.close()
    reset, step = (json.loads(line) for line in path.read_text().splitlines())
    assert reset["event"] == "reset" and reset["action"] is None
    assert step["action"] == 10 and step["action_name"] == "lambda_Rectum×1.65"
    assert step["tpps"]["lambda_Rectum"] == pytest.approx(1.65)
    assert [c["label"] for c in step["criteria"]][:2] == ["PTV D0.03cc", "Bladder V(1.01p)"]
    assert {"reward", "score", "smooth_score", "invalid_action"} <= set(step)


def test_one_numba_thread_gives_the_same_steps_and_restores_the_setting():
    """threads=1 (for shared machines) changes the speed only: the kernels' sums ignore the thread count."""
    import numba

    before = numba.get_num_threads()
    results = []
    for threads in (None, 1):
        env = TPPEnv(case="prostate", config=small(threads=threads))
        _, info = env.reset(seed=3)
        observation, reward, *_ = env.step(int(np.flatnonzero(env.action_masks())[0]))
        results.append((info["objective"], reward, observation))
        assert numba.get_num_threads() == before
    assert results[0][:2] == results[1][:2]
    np.testing.assert_array_equal(results[0][2], results[1][2])
    with pytest.raises(InputError, match="threads"):
        small(threads=0)
