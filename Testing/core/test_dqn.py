"""DQN (radagent.agents.dqn): masked bootstrap, replay ring, checkpoints, spec mismatch, training, resume."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from radagent.agents.checkpoint import env_spec  # noqa: E402
from radagent.agents.dqn import (  # noqa: E402 - after the torch skip
    DQN_CONFIGS,
    Checkpoint,
    DQNConfig,
    ReplayBuffer,
    VectorQNetwork,
    VolumeQNetwork,
    architecture_for,
    greedy_action,
    load_checkpoint,
    save_checkpoint,
    td_target,
    train_dqn,
)
from radagent.dose import DoseEngineSettings  # noqa: E402
from radagent.envs import GantryConfig, GantryEnv, TPPConfig, TPPEnv  # noqa: E402
from radagent.errors import InputError  # noqa: E402

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=8.0)
TINY = DQNConfig(
    total_steps=24, learning_starts=8, batch_size=8, buffer_size=64, target_update_every=5,
    checkpoint_every=10, hidden=(32, 32),
)  # fmt: skip


class FixedQ(torch.nn.Module):
    """A 'network' returning given Q-values whatever the observation."""

    def __init__(self, q):
        super().__init__()
        self.q = torch.tensor(q, dtype=torch.float32)

    def forward(self, obs):
        return self.q


def batch(rewards, terminated, masks):
    return {
        "next_obs": {"vector": torch.zeros(len(rewards), 1)},
        "rewards": torch.tensor(rewards, dtype=torch.float32),
        "terminated": torch.tensor(terminated, dtype=torch.float32),
        "next_masks": torch.tensor(masks),
    }


def test_bootstrap_max_ignores_masked_actions_and_terminal_states():
    target = FixedQ([[5.0, 1.0, 2.0], [5.0, 1.0, 2.0], [5.0, 1.0, 2.0]])
    data = batch([1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [[False, True, True], [True, True, True], [False] * 3])
    value = td_target(data, target, target, gamma=0.5, double=False)
    # best valid next action is 2 (Q 2, not the masked 5); terminal → r; no valid action → r
    assert value.tolist() == pytest.approx([1.0 + 0.5 * 2.0, 1.0, 1.0])


def test_double_dqn_evaluates_the_online_choice_with_the_target_network():
    online = FixedQ([[0.0, 9.0, 1.0, 7.0]])
    target = FixedQ([[100.0, 3.0, 4.0, 8.0]])
    data = batch([0.0], [0.0], [[False, True, True, True]])
    assert td_target(data, online, target, 1.0, double=True).item() == pytest.approx(3.0)  # online picks 1
    assert td_target(data, online, target, 1.0, double=False).item() == pytest.approx(8.0)  # target's max


def test_greedy_action_never_picks_a_masked_action():
    network = FixedQ([[9.0, 1.0, 5.0]])
    assert greedy_action(network, np.zeros(2), np.array([False, True, True]), torch.device("cpu")) == 2


def test_replay_buffer_overwrites_the_oldest_and_stores_volumes_as_float16():
    example = {"volume": np.zeros((2, 3, 3, 3), np.float32), "angles": np.zeros(4, np.float32)}
    buffer = ReplayBuffer(3, example, actions=4, seed=0)
    for n in range(5):
        obs = {"volume": np.full((2, 3, 3, 3), n, np.float32), "angles": np.full(4, n, np.float32)}
        buffer.add(obs, n, float(n), obs, n == 4, np.arange(4) < n)
    assert buffer.size == 3 and sorted(buffer.actions.tolist()) == [2, 3, 4]
    assert buffer.obs["volume"].dtype == np.float16 and buffer.obs["angles"].dtype == np.float32
    sample = buffer.sample(16, torch.device("cpu"))
    assert set(sample["actions"].tolist()) <= {2, 3, 4} and sample["obs"]["volume"].shape == (16, 2, 3, 3, 3)
    assert all(sample["rewards"][i] == sample["actions"][i] for i in range(16))


def test_config_checks_and_epsilon_schedule():
    config = DQNConfig(total_steps=100, exploration_fraction=0.5, start_epsilon=1.0, end_epsilon=0.1)
    assert config.epsilon(0.0) == 1.0 and config.epsilon(0.25) == pytest.approx(0.55)
    assert config.epsilon(0.5) == pytest.approx(0.1) and config.epsilon(0.9) == pytest.approx(0.1)
    assert DQNConfig(total_steps=100, total_episodes=4).progress(10, 2) == 0.5  # the nearer budget
    for bad in ({"total_steps": None}, {"gamma": 1.5}, {"batch_size": 0}, {"device": "tpu"}):
        with pytest.raises(InputError):
            DQNConfig(**bad)


def test_volume_network_shapes():
    network = VolumeQNetwork(channels=7, shape=(16, 32, 32), angles=36, actions=36)
    obs = {"volume": torch.zeros(2, 7, 16, 32, 32), "angles": torch.zeros(2, 36)}
    assert network(obs).shape == (2, 36)
    assert VectorQNetwork(300, 18)({"vector": torch.zeros(5, 300)}).shape == (5, 18)


@pytest.fixture(scope="module")
def tpp_env():
    return TPPEnv("prostate", config=TPPConfig(engine=COARSE, max_steps=6, include_tpps=True))


@pytest.fixture(scope="module")
def trained(tpp_env, tmp_path_factory):
    """A tiny training run (24 steps): the smoke test CI affords."""
    out = tmp_path_factory.mktemp("dqn") / "run"
    checkpoint = train_dqn(tpp_env, TINY, out, agent="dqn-tpp", run_info={"variants": "0"})
    return out, checkpoint


def test_tiny_training_writes_a_loadable_checkpoint_and_a_log(trained, tpp_env):
    out, checkpoint = trained
    record = json.loads((out / "checkpoint.json").read_text())
    assert record["hyperparameters"]["total_steps"] == 24 and record["training"]["step"] == 24
    assert record["env_spec"] == env_spec(tpp_env) and record["training"]["variants"] == "0"
    episodes = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(episodes) == 4 and [e["length"] for e in episodes] == [6, 6, 6, 6]  # none reached 9
    assert all(np.isfinite(e["return"]) for e in episodes) and episodes[-1]["loss"] is not None
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoint.json", "model.pt", "replay_buffer.npz", "train_log.jsonl", "training_state.pt",
    ]  # fmt: skip
    obs, _ = tpp_env.reset(seed=3)
    q = checkpoint.network({"vector": torch.as_tensor(obs)[None]})
    assert q.shape == (1, 18) and torch.isfinite(q).all()


def test_checkpoint_round_trip_gives_the_same_q_values(tmp_path, tpp_env):
    network = VectorQNetwork(tpp_env.observation_space.shape[0], 18, (16,))
    architecture = architecture_for(tpp_env, DQNConfig(hidden=(16,)))
    save_checkpoint(tmp_path, network, architecture, {"env_spec": env_spec(tpp_env)})
    loaded = load_checkpoint(tmp_path)
    obs = {"vector": torch.rand(3, tpp_env.observation_space.shape[0])}
    assert torch.equal(loaded.network(obs), network(obs))
    loaded.check(tpp_env)  # same environment: accepted


def test_mismatched_environment_is_refused_with_the_differences(trained):
    _, checkpoint = trained
    without_tpps = TPPEnv("prostate", config=TPPConfig(engine=COARSE, include_tpps=False))
    with pytest.raises(InputError, match=r"include_tpps True \(this case/env: False\)"):
        checkpoint.check(without_tpps)
    four_oars = TPPEnv("prostate-4oar", config=TPPConfig(engine=COARSE, include_tpps=True))
    with pytest.raises(InputError, match=r"scored_oars 2 \(this case/env: 5\)"):
        checkpoint.check(four_oars)
    gantry = GantryEnv("prostate", config=GantryConfig(engine=COARSE, candidate_step_deg=60.0, beams=2))
    gantry.reset(seed=0)
    with pytest.raises(InputError, match="is a tpp agent, not a gantry agent"):
        checkpoint.check(gantry)


def test_broken_checkpoints_are_clear_errors(tmp_path, trained):
    with pytest.raises(InputError, match=r"needs checkpoint\.json and model\.pt"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    record = json.loads((trained[0] / "checkpoint.json").read_text())
    record["architecture"]["hidden"] = [8, 8]
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    (tmp_path / "model.pt").write_bytes((trained[0] / "model.pt").read_bytes())
    with pytest.raises(InputError, match="does not fit its architecture"):
        load_checkpoint(tmp_path)


def test_same_seed_gives_the_same_network_and_resume_continues(tmp_path, trained, tpp_env):
    _, checkpoint = trained
    again = train_dqn(tpp_env, TINY, tmp_path / "again", agent="dqn-tpp")
    for key, value in checkpoint.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key
    longer = DQNConfig(**{**TINY.__dict__, "total_steps": 36})
    resumed = train_dqn(tpp_env, longer, tmp_path / "again", agent="dqn-tpp", resume=True)
    assert resumed.record["training"]["step"] == 36
    lines = (tmp_path / "again" / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["step"] == 36  # appended after the first 4


def test_tiny_gantry_training_uses_the_3d_cnn(tmp_path):
    config = GantryConfig(engine=COARSE, candidate_step_deg=60.0, beams=2, observation_shape=(8, 8, 8))
    env = GantryEnv("prostate", config=config)
    checkpoint = train_dqn(
        env, DQNConfig(**{**TINY.__dict__, "total_steps": 10}), tmp_path, agent="dqn-gantry"
    )
    assert checkpoint.record["architecture"]["type"] == "volume"
    assert checkpoint.spec["strict"]["observation_shape"] == [7, 8, 8, 8]
    lengths = [json.loads(line)["length"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert lengths == [2] * 5  # masking: every episode adds 2 distinct beams and terminates


def _same_weights(first, second):
    for key, value in first.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[key]), key


def _log_without_times(folder):
    lines = (folder / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in lines]


def test_paused_and_resumed_training_equals_one_run(tmp_path, trained, tpp_env):
    """24 steps in one run and 13 + 11 resumed (paused mid-episode, after the updates began) give the
    same weights and the same log: the replay buffer, random states and episode in progress carry over."""
    out, checkpoint = trained
    first = train_dqn(tpp_env, TINY, tmp_path / "parts", agent="dqn-tpp", pause_after=13)
    assert first.record["training"]["step"] == 13
    resumed = train_dqn(tpp_env, TINY, tmp_path / "parts", agent="dqn-tpp", resume=True)
    assert resumed.record["training"]["step"] == 24
    _same_weights(checkpoint, resumed)
    assert _log_without_times(tmp_path / "parts") == _log_without_times(out)
    other = DQNConfig(**{**TINY.__dict__, "learning_rate": 1e-2})
    with pytest.raises(InputError, match="other hyperparameters: learning_rate"):
        train_dqn(tpp_env, other, tmp_path / "parts", agent="dqn-tpp", resume=True)


def test_paused_gantry_training_resumes_mid_episode(tmp_path):
    config = GantryConfig(engine=COARSE, candidate_step_deg=60.0, beams=2, observation_shape=(8, 8, 8))
    short = DQNConfig(**{**TINY.__dict__, "total_steps": 12, "learning_starts": 4})
    whole = train_dqn(GantryEnv("prostate", config=config), short, tmp_path / "whole", agent="dqn-gantry")
    env = GantryEnv("prostate", config=config)
    train_dqn(env, short, tmp_path / "parts", agent="dqn-gantry", pause_after=5)
    resumed = train_dqn(
        GantryEnv("prostate", config=config), short, tmp_path / "parts", agent="dqn-gantry", resume=True
    )
    _same_weights(whole, resumed)
    assert _log_without_times(tmp_path / "parts") == _log_without_times(tmp_path / "whole")


def test_per_environment_hyperparameters_are_the_shipped_agents():
    """GantryDQNConfig / TPPDQNConfig hold what the shipped checkpoints record; the TPP agent's ε, decayed
    over 0.4 of its first 2000-step run, is the same schedule as 800/6000 of one 6000-step run."""
    from dataclasses import asdict
    from pathlib import Path

    import radagent.agents

    folder = Path(radagent.agents.__file__).parent / "checkpoints"
    for env, name in (("gantry", "dqn-gantry-prostate"), ("tpp", "dqn-tpp-prostate")):
        shipped = json.loads((folder / name / "checkpoint.json").read_text())["hyperparameters"]
        ours = json.loads(json.dumps(asdict(DQN_CONFIGS[env]())))
        if env == "tpp":
            assert shipped.pop("exploration_fraction") == 0.1
            assert ours.pop("exploration_fraction") * 6000 == pytest.approx(0.4 * 2000)
        assert ours == shipped


def test_environments_are_registered_under_versioned_ids_and_checkpoints_record_them(trained, tpp_env):
    import gymnasium

    from radagent.envs import ENV_IDS

    assert ENV_IDS == {"gantry": "RadAgent/Gantry-v1", "tpp": "RadAgent/TPP-v1"}
    made = gymnasium.make("RadAgent/TPP-v1", case="prostate", config=TPPConfig(engine=COARSE, max_steps=2))
    assert isinstance(made.unwrapped, TPPEnv)
    made.close()
    out, checkpoint = trained
    assert checkpoint.spec["strict"]["id"] == "RadAgent/TPP-v1"
    newer = json.loads(json.dumps(checkpoint.record["env_spec"]))
    newer["strict"]["id"] = "RadAgent/TPP-v2"
    with pytest.raises(InputError, match=r"id 'RadAgent/TPP-v2' \(this case/env: 'RadAgent/TPP-v1'\)"):
        Checkpoint(checkpoint.network, {**checkpoint.record, "env_spec": newer}, out).check(tpp_env)
    older = json.loads(json.dumps(checkpoint.record["env_spec"]))
    del older["strict"]["id"]  # the shipped checkpoints predate the ids: version 1
    Checkpoint(checkpoint.network, {**checkpoint.record, "env_spec": older}, out).check(tpp_env)
