"""Baseline planners (METHOD §5): random, equispaced, greedy and exhaustive beam choice; a TPP auto-tuner.

Each drives a planning environment (sequential :class:`GantryEnv`, :class:`TPPEnv`) and returns an
:class:`AgentResult`; lookahead steps are tried on copies of the environment, so every candidate plan
is scored exactly as the environment scores it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from radagent.agents.common import (
    AgentResult,
    AngleAgentOptions,
    TPPAgentOptions,
    Trial,
    angle_record,
    lookahead,
    plan_status,
    tpp_record,
)
from radagent.beams import equispaced_angles
from radagent.envs import GantryConfig, GantryEnv, TPPConfig, TPPEnv
from radagent.errors import InputError
from radagent.patient import Case
from radagent.progress import ProgressCallback, report

__all__ = [
    "ExhaustiveOptions",
    "TunerOptions",
    "run_equispaced",
    "run_exhaustive",
    "run_greedy",
    "run_random",
    "run_tuner",
]

_TOLERANCE = 1e-9  # a score change smaller than this is no improvement


@dataclass(frozen=True)
class ExhaustiveOptions(AngleAgentOptions):
    """Exhaustive search defaults: 7 beams among candidates every 40° (C(9, 7) = 36 plans, like the other
    angle agents' K = 7, so its R bounds theirs on that candidate set)."""

    candidate_step_deg: float = 40.0


@dataclass(frozen=True)
class TunerOptions(TPPAgentOptions):
    """Coordinate-search tuner: at most ``max_moves`` accepted TPP steps (the TPP env's episode limit)."""

    max_moves: int = 20


class _AngleEpisode:
    """A sequential gantry episode: the current environment, its info, accepted steps and optimizer calls."""

    def __init__(self, case: str | Case, options: AngleAgentOptions) -> None:
        self.start = time.perf_counter()
        self.options = options
        config = GantryConfig(
            engine=options.engine, beams=options.beams, candidate_step_deg=options.candidate_step_deg
        )
        self.env = GantryEnv(case=case, config=config)
        _, self.info = self.env.reset(seed=options.seed)
        self.history: list[dict[str, Any]] = [angle_record(None, 0.0, self.info)]
        self.optimizer_calls = 0

    def free_actions(self) -> np.ndarray:
        """Indices of the candidates not chosen yet."""
        return np.flatnonzero(self.env.action_masks())

    def trial(self, action: int, env: GantryEnv | None = None) -> Trial:
        """Try adding candidate ``action`` to ``env`` (default: the current one); one optimization."""
        self.optimizer_calls += 1
        return lookahead(env if env is not None else self.env, action)

    def accept(self, trial: Trial) -> None:
        """Make a tried step the episode's next step."""
        self.env, self.info = trial.env, trial.info
        self.history.append(angle_record(trial.action, trial.reward, trial.info))

    def result(self, agent: str, note: str = "") -> AgentResult:
        """The episode's final plan as an :class:`AgentResult`."""
        self.env.close()
        plan = self.info["metrics"]["plan"]
        return AgentResult(
            agent=agent,
            kind="angles",
            case=self.info["case"],
            angles_deg=tuple(self.info["angles_deg"]),
            tpps=None,
            reward=self.info["plan_reward"],
            score=self.info["score"],
            score_max=plan["score_max"],
            steps=len(self.history) - 1,
            optimizer_calls=self.optimizer_calls,
            wall_s=time.perf_counter() - self.start,
            history=self.history,
            options=self.options,
            note=note,
            metrics=self.info["metrics"],
        )


def _run_sequence(
    agent: str, episode: _AngleEpisode, actions: list[int], progress: ProgressCallback | None
) -> AgentResult:
    for n, action in enumerate(actions):
        status = plan_status(episode.info)
        report(progress, n / len(actions), f"{agent}: beam {n + 1} of {len(actions)}{status}")
        episode.accept(episode.trial(action))
    report(progress, 1.0, f"{agent}: done")
    return episode.result(agent)


def run_random(
    case: str | Case, options: AngleAgentOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """K candidates drawn uniformly without replacement (seeded); K optimizations."""
    episode = _AngleEpisode(case, options)
    rng = np.random.default_rng(options.seed)
    actions = [int(a) for a in rng.choice(episode.free_actions(), size=options.beams, replace=False)]
    return _run_sequence("random", episode, actions, progress)


def run_equispaced(
    case: str | Case, options: AngleAgentOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """The equispaced K-beam template from 0°, snapped to the nearest candidates; K optimizations."""
    episode = _AngleEpisode(case, options)
    step, count = options.candidate_step_deg, len(episode.env.candidates)
    actions = list(dict.fromkeys(round(a / step) % count for a in equispaced_angles(options.beams)))
    if len(actions) != options.beams:
        raise InputError(f"the {options.beams}-beam template does not fit candidates every {step:g}°")
    return _run_sequence("equispaced", episode, actions, progress)


def run_greedy(
    case: str | Case, options: AngleAgentOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Greedy forward selection: each step adds the free candidate giving the best R.

    Costs n + (n − 1) + … + (n − K + 1) optimizations for n candidates (ties go to the lower angle).
    """
    episode = _AngleEpisode(case, options)
    for beam in range(options.beams):
        trials = []
        free = episode.free_actions()
        for n, action in enumerate(free):
            done = (beam + n / len(free)) / options.beams
            report(progress, done, f"greedy: beam {beam + 1} of {options.beams}{plan_status(episode.info)}")
            trials.append(episode.trial(int(action)))
        episode.accept(max(trials, key=lambda t: t.info["plan_reward"]))
    report(progress, 1.0, "greedy: done")
    return episode.result("greedy")


def run_exhaustive(
    case: str | Case, options: ExhaustiveOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Every K-subset of the candidates, built depth first sharing prefixes; the best R is a bound.

    Costs one optimization per prefix-tree node: Σₖ C(n − K + k, k) for k = 1…K (119 for C(9, 7)).
    """
    episode = _AngleEpisode(case, options)
    count, beams = len(episode.env.candidates), options.beams
    total = math.comb(count, beams)
    best: list[Trial] = []
    plans = 0

    def visit(env: GantryEnv, first: int, path: list[Trial]) -> None:
        nonlocal best, plans
        for action in range(first, count - (beams - len(path)) + 1):
            trial = episode.trial(action, env)
            if len(path) + 1 < beams:
                visit(trial.env, action + 1, [*path, trial])
                continue
            plans += 1
            report(progress, plans / total, f"exhaustive: plan {plans} of {total}")
            if not best or trial.info["plan_reward"] > best[-1].info["plan_reward"]:
                best = [*path, trial]

    visit(episode.env, 0, [])
    for trial in best:
        episode.accept(trial)
    note = (
        f"optimum over all {total} sets of {beams} among {count} candidates: a bound for agents on that set"
    )
    return episode.result("exhaustive", note)


def _improves(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """A higher score, or the same score and a higher smooth score."""
    if new["score"] > old["score"] + _TOLERANCE:
        return True
    same_score = abs(new["score"] - old["score"]) <= _TOLERANCE
    return same_score and new["smooth_score"] > old["smooth_score"] + _TOLERANCE


def run_tuner(
    case: str | Case, options: TunerOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Coordinate search on (score, smooth score): try every valid TPP step, keep the best improving one.

    Stops at the maximum score, when no step improves, or after ``max_moves`` moves; each round costs one
    optimization per valid action (≤ 6 + 6N) plus one for the start.
    """
    start = time.perf_counter()
    config = TPPConfig(
        engine=options.engine, angles_deg=options.angles_deg, start=options.start, max_steps=options.max_moves
    )
    env = TPPEnv(case=case, config=config)
    _, info = env.reset(seed=options.seed)
    history = [tpp_record(None, "", 0.0, info)]
    calls = 1
    while len(history) <= options.max_moves and info["score"] < info["score_max"] - _TOLERANCE:
        moves = len(history) - 1
        trials = []
        actions = np.flatnonzero(env.action_masks())
        for n, action in enumerate(actions):
            done = (moves + n / len(actions)) / options.max_moves
            report(progress, done, f"tuner: move {moves + 1}{plan_status(info)}")
            trials.append(lookahead(env, int(action)))
        calls += len(trials)
        best = max(trials, key=lambda t: (t.info["score"], t.info["smooth_score"]))
        if not _improves(best.info, info):
            break
        history.append(tpp_record(best.action, env.action_name(best.action), best.reward, best.info))
        env, info = best.env, best.info
    report(progress, 1.0, "tuner: done")
    env.close()
    return AgentResult(
        agent="tuner",
        kind="tpp",
        case=info["case"],
        angles_deg=tuple(options.angles_deg),
        tpps=env.tpps,
        reward=info["plan_reward"],
        score=info["score"],
        score_max=info["score_max"],
        steps=len(history) - 1,
        optimizer_calls=calls,
        wall_s=time.perf_counter() - start,
        history=history,
        options=options,
        metrics=info["metrics"],
    )
