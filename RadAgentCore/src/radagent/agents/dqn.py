"""Deep Q-learning for the planning environments (METHOD §5), in the single-file style of CleanRL.

Replay buffer, target network, linearly decaying ε-greedy, invalid actions masked when acting and in
the bootstrap target's max, optional Double-DQN. The gantry observation goes through a small 3D CNN
(:class:`VolumeQNetwork`), the TPP DVH vector through an MLP (:class:`VectorQNetwork`).

A checkpoint is a folder: ``model.pt`` (the Q-network's ``state_dict``) and ``checkpoint.json`` (the
network's constructor arguments, the hyperparameters and the environment spec it was trained for).
Training also keeps, beside the checkpoint, ``training_state.pt`` (target network, optimizer, counters,
every random state and the environment's episode in progress) and ``replay_buffer.npz``, so a run paused
after some steps (``pause_after``) and resumed trains exactly as one uninterrupted run (same seed, one
thread: a test). None of that goes into the package. This module imports torch; the rest of the
package does not.

Hyperparameters: one dataclass per environment, :class:`GantryDQNConfig` and :class:`TPPDQNConfig`,
whose defaults are what the shipped agents were trained with.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from radagent.agents.checkpoint import CHECKPOINT_FORMAT, check_spec, env_spec, read_checkpoint_record
from radagent.envs import GantryEnv, TPPEnv
from radagent.errors import InputError
from radagent.io.atomic import atomic_path
from radagent.progress import ProgressCallback, report

__all__ = [
    "DQN_CONFIGS",
    "Checkpoint",
    "DQNConfig",
    "GantryDQNConfig",
    "ReplayBuffer",
    "TPPDQNConfig",
    "VectorQNetwork",
    "VolumeQNetwork",
    "greedy_action",
    "load_checkpoint",
    "save_checkpoint",
    "train_dqn",
]

EnvName = Literal["gantry", "tpp"]
PlanningEnvType = GantryEnv | TPPEnv


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters (CleanRL's names). Training ends after ``total_steps`` environment steps or
    ``total_episodes`` episodes, whichever is set and comes first; ε decays with that progress."""

    total_steps: int | None = 20_000
    total_episodes: int | None = None
    learning_rate: float = 5e-4
    buffer_size: int = 20_000
    batch_size: int = 64
    gamma: float = 0.95
    target_update_every: int = 250  # environment steps between hard target-network updates
    start_epsilon: float = 1.0
    end_epsilon: float = 0.05
    exploration_fraction: float = 0.5  # of total_steps over which ε decays linearly
    learning_starts: int = 500
    train_frequency: int = 1
    gradient_steps: int = 1  # gradient updates per training step
    double_dqn: bool = True
    hidden: tuple[int, ...] = (256, 256)
    max_grad_norm: float = 10.0
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available, else CPU
    torch_threads: int = 1  # CPU threads torch uses; part of what makes a run reproducible
    checkpoint_every: int = 2_000  # environment steps between checkpoints written during training

    def __post_init__(self) -> None:
        if self.total_steps is None and self.total_episodes is None:
            raise InputError("give the DQN a budget: total_steps or total_episodes")
        for name in ("total_steps", "total_episodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"DQN setting {name} must be ≥ 1, got {getattr(self, name)}")
        positive = ("buffer_size", "batch_size", "target_update_every", "train_frequency")
        for name in (*positive, "gradient_steps", "torch_threads", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"DQN setting {name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise InputError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.end_epsilon <= self.start_epsilon <= 1.0:
            raise InputError("ε must satisfy 0 ≤ end_epsilon ≤ start_epsilon ≤ 1")
        if not 0.0 < self.exploration_fraction <= 1.0 or self.learning_rate <= 0:
            raise InputError("exploration_fraction must lie in (0, 1] and learning_rate be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def progress(self, step: int, episode: int) -> float:
        """Fraction of the training budget used after ``step`` steps and ``episode`` episodes."""
        done = [step / self.total_steps] if self.total_steps is not None else []
        done += [episode / self.total_episodes] if self.total_episodes is not None else []
        return max(done)

    def epsilon(self, progress: float) -> float:
        """ε at training ``progress``: linear from start to end over the exploration fraction."""
        fraction = min(1.0, progress / self.exploration_fraction)
        return self.start_epsilon + (self.end_epsilon - self.start_epsilon) * fraction

    def torch_device(self) -> torch.device:
        """The device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but torch sees no CUDA device")
        return torch.device(self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DQNConfig:
        """Rebuild from :func:`dataclasses.asdict` output (JSON lists back to tuples)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class GantryDQNConfig(DQNConfig):
    """dqn-gantry as shipped: 1000 episodes of 7 steps (~0.5 MB observations: a smaller buffer), no
    discount (the episode's return is the final plan's reward)."""

    total_steps: int | None = None
    total_episodes: int | None = 1000
    gamma: float = 1.0
    buffer_size: int = 6_000
    batch_size: int = 32
    learning_starts: int = 300
    target_update_every: int = 200


@dataclass(frozen=True)
class TPPDQNConfig(DQNConfig):
    """dqn-tpp as shipped: 6000 steps, few transitions for their cost (one optimization each), so several
    updates per step. ε decayed over the first 800 steps (0.4 of a first 2000-step run; the shipped run
    was then resumed in 1000-step parts with ε at its floor): 800/6000 of the whole budget here."""

    total_steps: int | None = 6_000
    gamma: float = 0.9
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (128, 128)
    buffer_size: int = 20_000
    learning_starts: int = 200
    gradient_steps: int = 4
    exploration_fraction: float = 800 / 6_000
    target_update_every: int = 100


DQN_CONFIGS: dict[str, type[DQNConfig]] = {"gantry": GantryDQNConfig, "tpp": TPPDQNConfig}


# ---------------------------------------------------------------------------------------------------
# Q-networks


class VectorQNetwork(nn.Module):
    """MLP from the TPP environment's DVH (+ TPP) vector to one Q-value per action."""

    def __init__(self, obs_size: int, actions: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Q-values ``(batch, actions)``."""
        return self.net(obs["vector"])


class VolumeQNetwork(nn.Module):
    """3D CNN over the gantry observation's channels, joined with the chosen-angle vector, to Q-values.

    The volume is first average-pooled by ``pool`` (2: 16×32×32 → 8×16×16), which makes an update
    ~10× cheaper on CPU; the beams' dose bands and organs stay several voxels wide at that size.
    """

    def __init__(
        self,
        channels: int,
        shape: tuple[int, int, int],
        angles: int,
        actions: int,
        hidden: int = 256,
        pool: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.AvgPool3d(pool, ceil_mode=True),
            nn.Conv3d(channels, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv3d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv3d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            features = self.encoder(torch.zeros(1, channels, *shape)).shape[1]
        self.head = nn.Sequential(nn.Linear(features + angles, hidden), nn.ReLU(), nn.Linear(hidden, actions))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Q-values ``(batch, actions)``."""
        return self.head(torch.cat([self.encoder(obs["volume"]), obs["angles"]], dim=1))


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """The Q-network a checkpoint's ``architecture`` record describes."""
    kind = architecture["type"]
    if kind == "vector":
        return VectorQNetwork(
            architecture["obs_size"], architecture["actions"], tuple(architecture["hidden"])
        )
    if kind == "volume":
        return VolumeQNetwork(
            architecture["channels"],
            tuple(architecture["shape"]),
            architecture["angles"],
            architecture["actions"],
            architecture["hidden"],
            architecture.get("pool", 2),
        )
    raise InputError(f"unknown Q-network type {kind!r} in checkpoint")


def architecture_for(env: PlanningEnvType, config: DQNConfig) -> dict[str, Any]:
    """The Q-network shape for ``env``: a 3D CNN for the gantry env, an MLP for the TPP env."""
    actions = int(env.action_space.n)
    if isinstance(env, GantryEnv):
        volume = env.observation_space["volume"].shape
        return {
            "type": "volume",
            "channels": int(volume[0]),
            "shape": [int(s) for s in volume[1:]],
            "angles": len(env.candidates),
            "actions": actions,
            "hidden": int(config.hidden[0]),
            "pool": 2,
        }
    return {
        "type": "vector",
        "obs_size": int(env.observation_space.shape[0]),
        "actions": actions,
        "hidden": [int(h) for h in config.hidden],
    }


# ---------------------------------------------------------------------------------------------------
# Observations as tensors


def _as_arrays(obs: Any) -> dict[str, np.ndarray]:
    """An environment observation as named float32 arrays (``vector``, or ``volume`` and ``angles``)."""
    if isinstance(obs, dict):
        return {
            "volume": np.asarray(obs["volume"], np.float32),
            "angles": np.asarray(obs["angles"], np.float32),
        }
    return {"vector": np.asarray(obs, np.float32)}


def _to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in arrays.items()}


def greedy_action(network: nn.Module, obs: Any, mask: np.ndarray, device: torch.device) -> int:
    """The valid action with the highest Q-value."""
    batch = {k: v[None] for k, v in _as_arrays(obs).items()}
    with torch.no_grad():
        q = network(_to_tensors(batch, device))[0].cpu().numpy()
    return int(np.argmax(np.where(mask, q, -np.inf)))


class ReplayBuffer:
    """Fixed-size ring of transitions with the next state's action mask (for the masked bootstrap).

    Volumes are stored as float16 (a gantry observation is ~0.5 MB in float32) to fit tens of
    thousands of transitions in memory; vectors stay float32.
    """

    def __init__(self, capacity: int, example: dict[str, np.ndarray], actions: int, seed: int) -> None:
        self.capacity, self.size, self.position = capacity, 0, 0
        self.rng = np.random.default_rng(seed)

        def storage(value: np.ndarray) -> np.ndarray:
            dtype = np.float16 if value.ndim > 1 else np.float32
            return np.zeros((capacity, *value.shape), dtype)

        self.obs = {k: storage(v) for k, v in example.items()}
        self.next_obs = {k: storage(v) for k, v in example.items()}
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.next_masks = np.zeros((capacity, actions), bool)

    def add(
        self,
        obs: dict[str, np.ndarray],
        action: int,
        reward: float,
        next_obs: dict[str, np.ndarray],
        terminated: bool,
        next_mask: np.ndarray,
    ) -> None:
        """Store one transition, overwriting the oldest when full."""
        n = self.position
        for key in self.obs:
            self.obs[key][n] = obs[key]
            self.next_obs[key][n] = next_obs[key]
        self.actions[n], self.rewards[n], self.terminated[n] = action, reward, float(terminated)
        self.next_masks[n] = next_mask
        self.position = (n + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def save(self, path: Path) -> None:
        """Write the stored transitions (not the empty rest of the ring) and the ring position."""
        arrays: dict[str, np.ndarray] = {"size": np.array(self.size), "position": np.array(self.position)}
        for name in ("actions", "rewards", "terminated", "next_masks"):
            arrays[name] = getattr(self, name)[: self.size]
        for key in self.obs:
            arrays[f"obs.{key}"] = self.obs[key][: self.size]
            arrays[f"next_obs.{key}"] = self.next_obs[key][: self.size]
        with atomic_path(path) as temporary, Path(temporary).open("wb") as file:
            np.savez(file, **arrays)

    def restore(self, path: Path) -> None:
        """Refill the ring from :meth:`save`'s file (same capacity and observation shapes)."""
        with np.load(path) as saved:
            size = int(saved["size"])
            if size > self.capacity or saved["next_masks"].shape[1:] != self.next_masks.shape[1:]:
                raise InputError(f"{path} holds another replay buffer than this run's")
            self.size, self.position = size, int(saved["position"])
            for name in ("actions", "rewards", "terminated", "next_masks"):
                getattr(self, name)[:size] = saved[name]
            for key in self.obs:
                self.obs[key][:size] = saved[f"obs.{key}"]
                self.next_obs[key][:size] = saved[f"next_obs.{key}"]

    def sample(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        """A uniform random batch as tensors."""
        index = self.rng.integers(self.size, size=batch_size)
        return {
            "obs": _to_tensors({k: v[index] for k, v in self.obs.items()}, device),
            "next_obs": _to_tensors({k: v[index] for k, v in self.next_obs.items()}, device),
            "actions": torch.as_tensor(self.actions[index], device=device),
            "rewards": torch.as_tensor(self.rewards[index], device=device),
            "terminated": torch.as_tensor(self.terminated[index], device=device),
            "next_masks": torch.as_tensor(self.next_masks[index], device=device),
        }


def td_target(
    batch: dict[str, Any], q_network: nn.Module, target_network: nn.Module, gamma: float, double: bool
) -> torch.Tensor:
    """r + γ·(1 − terminated)·Q_target(s', a*), a* the best *valid* next action (by the online network
    with Double-DQN, else by the target network); a next state without valid actions bootstraps 0."""
    masks = batch["next_masks"]
    with torch.no_grad():
        target_q = target_network(batch["next_obs"])
        chooser = q_network(batch["next_obs"]) if double else target_q
        best = chooser.masked_fill(~masks, -torch.inf).argmax(dim=1, keepdim=True)
        value = target_q.gather(1, best).squeeze(1)
        value = torch.where(masks.any(dim=1), value, torch.zeros_like(value))
        return batch["rewards"] + gamma * (1.0 - batch["terminated"]) * value


# ---------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the Q-network (eval mode, on CPU) and its JSON record."""

    network: nn.Module
    record: dict[str, Any]
    path: Path

    @property
    def spec(self) -> dict[str, Any]:
        """The environment spec it was trained for."""
        return self.record["env_spec"]

    def check(self, env: PlanningEnvType) -> None:
        """Refuse ``env`` when its observations or actions differ from the trained ones."""
        check_spec(self.spec, env, str(self.path))


def save_checkpoint(
    folder: str | Path, network: nn.Module, architecture: dict[str, Any], record: dict[str, Any]
) -> None:
    """Write ``model.pt`` (state_dict) and ``checkpoint.json`` (architecture, hyperparameters, env spec)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_path(folder / "model.pt") as temporary:
        torch.save(state, temporary)
    full = {"format": CHECKPOINT_FORMAT, "architecture": architecture, **record}
    with atomic_path(folder / "checkpoint.json") as temporary:
        temporary.write_text(json.dumps(full, indent=2) + "\n")


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Load a checkpoint folder; a missing or malformed one is an InputError naming the problem."""
    folder = Path(folder)
    record = read_checkpoint_record(folder)
    weights = folder / "model.pt"
    network = build_network(record["architecture"])
    try:
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as error:
        raise InputError(
            f"checkpoint {weights} does not fit its architecture: {str(error).splitlines()[0]}"
        ) from None
    network.eval()
    return Checkpoint(network, record, folder)


# ---------------------------------------------------------------------------------------------------
# Training


def seed_everything(seed: int, threads: int) -> None:
    """Seed Python, numpy and torch and fix torch's CPU threads: same seed and threads, same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


@dataclass
class _Trainer:
    """Training state that a resume restores."""

    step: int = 0
    episode: int = 0
    wall_s: float = 0.0


def _generator(state: dict[str, Any]) -> np.random.Generator:
    """A numpy generator continuing from a saved ``bit_generator.state``."""
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    return generator


def train_dqn(
    env: PlanningEnvType,
    config: DQNConfig,
    out: str | Path,
    *,
    agent: str,
    resume: bool = False,
    pause_after: int | None = None,
    run_info: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> Checkpoint:
    """Train a DQN on ``env`` until ``config``'s budget is used and write the checkpoint to ``out``
    (``train_log.jsonl`` gets one line per episode), recording the registry ``agent`` it is for.

    ``pause_after``: stop after that many steps of this call, keeping everything a resume needs;
    ``resume``: continue the run in ``out`` exactly where it stopped (replay buffer, random states,
    the episode in progress), so paused-and-resumed parts train the same weights as one run. Returns the
    checkpoint written last."""
    out = Path(out)
    if pause_after is not None and pause_after < 1:
        raise InputError(f"pause_after must be ≥ 1 step, got {pause_after}")
    device = config.torch_device()
    seed_everything(config.seed, config.torch_threads)
    architecture = architecture_for(env, config)
    q_network = build_network(architecture).to(device)
    target_network = build_network(architecture).to(device)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=config.learning_rate)
    trainer = _Trainer()
    state_path, buffer_path = out / "training_state.pt", out / "replay_buffer.npz"
    episode_return, episode_steps, losses = 0.0, 0, []
    if resume:
        checkpoint = load_checkpoint(out)
        checkpoint.check(env)
        for path in (state_path, buffer_path):
            if not path.is_file():
                raise InputError(f"cannot resume: {path} is missing")
        saved = torch.load(state_path, map_location=device, weights_only=True)  # tensors and plain values
        budget = ("total_steps", "total_episodes", "checkpoint_every")  # a resume may extend the budget
        before = {k: v for k, v in saved.get("hyperparameters", {}).items() if k not in budget}
        changed = sorted(k for k, v in asdict(config).items() if k not in budget and before.get(k) != v)
        if changed:
            raise InputError(
                f"cannot resume the run in {out} with other hyperparameters: {', '.join(changed)}"
            )
        q_network.load_state_dict(checkpoint.network.state_dict())
        target_network.load_state_dict(saved["target"])
        optimizer.load_state_dict(saved["optimizer"])
        trainer = _Trainer(**saved["trainer"])
        torch.set_rng_state(saved["torch_rng"])
        rng = _generator(saved["numpy_rng"])
        env.np_random = _generator(saved["env_rng"])
        obs = env.restore_episode(saved["episode_state"])
        episode_return, episode_steps = saved["episode_return"], saved["episode_steps"]
        losses = list(saved["losses"])
    else:
        target_network.load_state_dict(q_network.state_dict())
        rng = np.random.default_rng(config.seed)
        obs, _ = env.reset(seed=config.seed)
    spec = env_spec(env)
    buffer = ReplayBuffer(config.buffer_size, _as_arrays(obs), int(env.action_space.n), config.seed + 1)
    if resume:
        buffer.restore(buffer_path)
        buffer.rng = _generator(saved["buffer_rng"])
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("a" if resume else "w", encoding="utf-8")
    start = time.perf_counter() - trainer.wall_s

    def save_checkpoint_now() -> None:
        trainer.wall_s = time.perf_counter() - start
        record = {
            "agent": agent,
            "hyperparameters": asdict(config),
            "env_spec": spec,
            "training": {**asdict(trainer), "device": str(device), **(run_info or {})},
        }
        save_checkpoint(out, q_network, architecture, record)

    def save_training_state() -> None:
        """What a resume needs besides the checkpoint (written when a call ends, not at every checkpoint:
        the gantry buffer alone is up to ~2.7 GB)."""
        buffer.save(buffer_path)
        state = {
            "hyperparameters": asdict(config),
            "target": target_network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "trainer": asdict(trainer),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": rng.bit_generator.state,
            "env_rng": env.np_random.bit_generator.state,
            "buffer_rng": buffer.rng.bit_generator.state,
            "episode_state": env.episode_state(),
            "episode_return": episode_return,
            "episode_steps": episode_steps,
            "losses": losses,
        }
        with atomic_path(state_path) as temporary:
            torch.save(state, temporary)

    steps_this_call = 0
    try:
        while config.progress(trainer.step, trainer.episode) < 1.0:
            if pause_after is not None and steps_this_call >= pause_after:
                break
            epsilon = config.epsilon(config.progress(trainer.step, trainer.episode))
            mask = env.action_masks()
            if rng.random() < epsilon:
                action = int(rng.choice(np.flatnonzero(mask)))
            else:
                action = greedy_action(q_network, obs, mask, device)
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(_as_arrays(obs), action, reward, _as_arrays(next_obs), terminated, env.action_masks())
            obs = next_obs
            trainer.step += 1
            steps_this_call += 1
            episode_return += reward
            episode_steps += 1

            if buffer.size > config.learning_starts and trainer.step % config.train_frequency == 0:
                for _ in range(config.gradient_steps):
                    batch = buffer.sample(config.batch_size, device)
                    target = td_target(batch, q_network, target_network, config.gamma, config.double_dqn)
                    q = q_network(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
                    loss = nn.functional.smooth_l1_loss(q, target)
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(q_network.parameters(), config.max_grad_norm)
                    optimizer.step()
                    losses.append(loss.item())
            if trainer.step % config.target_update_every == 0:
                target_network.load_state_dict(q_network.state_dict())

            if terminated or truncated:
                record = {
                    "episode": trainer.episode,
                    "step": trainer.step,
                    "variant": info["variant"],
                    "return": round(episode_return, 6),
                    "length": episode_steps,
                    "final_score": info.get("score"),
                    "final_plan_reward": info.get("plan_reward"),
                    "epsilon": round(epsilon, 4),
                    "loss": round(float(np.mean(losses)), 6) if losses else None,
                    "wall_s": round(time.perf_counter() - start, 2),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                report(
                    progress,
                    config.progress(trainer.step, trainer.episode + 1),
                    f"episode {trainer.episode}: return {episode_return:+.3f}, ε {epsilon:.2f}",
                )
                trainer.episode += 1
                episode_return, episode_steps, losses = 0.0, 0, []
                obs, _ = env.reset()
            if trainer.step % config.checkpoint_every == 0:
                save_checkpoint_now()
        save_checkpoint_now()
        save_training_state()
    finally:
        log.close()
    return load_checkpoint(out)
