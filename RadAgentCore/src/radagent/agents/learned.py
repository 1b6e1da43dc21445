"""The DQN agents of the registry (``dqn-gantry``, ``dqn-tpp``): a trained Q-network acting greedily.

Without a ``checkpoint`` option they use the checkpoints shipped in ``radagent/agents/checkpoints``
(trained on prostate variants 0–29; see the README for the command that reproduces them). torch is
imported only when one of them runs, so listing agents never needs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radagent.agents.checkpoint import GANTRY_DQN, TPP_DQN, TrainedFor
from radagent.agents.common import (
    AgentResult,
    AngleAgentOptions,
    TPPAgentOptions,
    angle_record,
    plan_status,
    tpp_record,
)
from radagent.envs import GantryConfig, GantryEnv, TPPConfig, TPPEnv
from radagent.errors import InputError
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = ["DQNGantryOptions", "DQNTPPOptions", "run_dqn_gantry", "run_dqn_tpp"]


@dataclass(frozen=True)
class DQNGantryOptions(AngleAgentOptions):
    """A gantry DQN: ``checkpoint`` folder (default: the shipped prostate agent)."""

    checkpoint: str | None = None


@dataclass(frozen=True)
class DQNTPPOptions(TPPAgentOptions):
    """A TPP DQN: ``checkpoint`` folder (default: the shipped prostate agent); at most ``max_steps``."""

    checkpoint: str | None = None
    max_steps: int = 20


def load_trained(trained: TrainedFor, checkpoint: str | None) -> Any:
    """Import torch lazily and load the checkpoint, with a clear error when torch is missing."""
    try:
        from radagent.agents import dqn
    except ImportError as error:
        raise InputError(
            f"the DQN agents need torch ({error.name} is missing): pip install 'radagent[learn]'"
        ) from None
    return dqn, dqn.load_checkpoint(trained.folder(checkpoint))


def trained_setting(record: dict[str, Any], key: str, default: Any) -> Any:
    """A setting of the environment the checkpoint was trained in (its strict spec), or ``default``."""
    return record["env_spec"]["strict"].get(key, default)


def _run(
    agent: str,
    trained: TrainedFor,
    case: str | Case,
    options: DQNGantryOptions | DQNTPPOptions,
    env_config: Callable[[dict[str, Any]], GantryConfig | TPPConfig],
    progress: ProgressCallback | None,
) -> AgentResult:
    """One masked-greedy episode of the trained Q-network, in the environment ``env_config`` makes
    from the checkpoint's record, as an :class:`AgentResult`."""
    start = time.perf_counter()
    dqn, checkpoint = load_trained(trained, options.checkpoint)
    config = env_config(checkpoint.record)
    env: GantryEnv | TPPEnv = (
        GantryEnv(case, config=config) if isinstance(config, GantryConfig) else TPPEnv(case, config=config)
    )
    tpp = isinstance(env, TPPEnv)

    def entry(action: int | None, reward: float, info: dict[str, Any]) -> dict[str, Any]:
        if tpp:
            return tpp_record(action, env.action_name(action) if action is not None else None, reward, info)
        return angle_record(action, reward, info)

    obs, info = env.reset(seed=options.seed)
    checkpoint.check(env)
    device = dqn.torch.device("cpu")
    history = [entry(None, 0.0, info)]
    done, calls = False, 1 if tpp else 0  # the TPP start plan is optimized too
    limit = env.config.max_steps if tpp else env.config.step_limit
    while not done:
        report(progress, len(history) / (limit + 1), f"{agent}: step {len(history)}{plan_status(info)}")
        action = dqn.greedy_action(checkpoint.network, obs, env.action_masks(), device)
        obs, reward, terminated, truncated, info = env.step(action)
        calls += 1
        history.append(entry(action, reward, info))
        done = terminated or truncated
    report(progress, 1.0, f"{agent}: done")
    env.close()
    return AgentResult(
        agent=agent,
        kind="tpp" if tpp else "angles",
        case=info["case"],
        angles_deg=tuple(env.config.angles_deg if tpp else info["angles_deg"]),
        tpps=env.tpps if tpp else None,
        reward=info["plan_reward"],
        score=info["score"],
        score_max=info["metrics"]["plan"]["score_max"],
        steps=len(history) - 1,
        optimizer_calls=calls,
        wall_s=time.perf_counter() - start,
        history=history,
        options=options,
        note=f"checkpoint {checkpoint.path.name}",
        metrics=info["metrics"],
    )


def run_dqn_gantry(
    case: str | Case, options: DQNGantryOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Choose K beams one by one with the trained Q-network (masked greedy); K optimizations."""

    def config(record: dict[str, Any]) -> GantryConfig:
        return GantryConfig(
            engine=options.engine,
            beams=options.beams,
            candidate_step_deg=options.candidate_step_deg,
            observation_shape=tuple(trained_setting(record, "observation_shape", [0, 16, 32, 32])[1:]),
        )

    return _run("dqn-gantry", GANTRY_DQN, case, options, config, progress)


def run_dqn_tpp(
    case: str | Case, options: DQNTPPOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Tune TPPs step by step with the trained Q-network until the maximum score or ``max_steps``."""

    def config(record: dict[str, Any]) -> TPPConfig:
        return TPPConfig(
            engine=options.engine,
            angles_deg=options.angles_deg,
            start=options.start,
            max_steps=options.max_steps,
            include_tpps=trained_setting(record, "include_tpps", False),
        )

    return _run("dqn-tpp", TPP_DQN, case, options, config, progress)
