"""Baseline planners (METHOD §5): random, equispaced, greedy and exhaustive beam choice; a TPP auto-tuner.

Each drives a planning environment (sequential :class:`GantryEnv`, :class:`TPPEnv`) and returns an
:class:`AgentResult`; lookahead steps are tried on copies of the environment, so every candidate plan
is scored exactly as the environment scores it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from radagent.agents.common import (
    SCORE_TOLERANCE,
    AgentResult,
    AngleAgentOptions,
    TPPAgentOptions,
    Trial,
    angle_record,
    improves,
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
    "PriorTunerOptions",
    "TunerOptions",
    "run_equispaced",
    "run_exhaustive",
    "run_greedy",
    "run_prior_tuner",
    "run_random",
    "run_tuner",
]


@dataclass(frozen=True)
class ExhaustiveOptions(AngleAgentOptions):
    """Exhaustive search defaults: 7 beams among candidates every 40° (C(9, 7) = 36 plans, like the other
    angle agents' K = 7, so its R bounds theirs on that candidate set)."""

    candidate_step_deg: float = 40.0


@dataclass(frozen=True)
class TunerOptions(TPPAgentOptions):
    """Coordinate-search tuner: at most ``max_moves`` accepted TPP steps (the TPP env's episode limit) and,
    when given, at most ``max_optimizations`` fluence optimizations (a comparison's budget)."""

    max_moves: int = 20
    max_optimizations: int | None = None

    def __post_init__(self) -> None:
        if self.max_optimizations is not None and self.max_optimizations < 2:
            raise ValueError(f"max_optimizations must be at least 2, got {self.max_optimizations}")


@dataclass(frozen=True)
class PriorTunerOptions(TunerOptions):
    """The tuner started from a knowledge card's median TPPs, mapped to this case's roles (default: the
    card shipped with the package)."""

    knowledge: str | None = None
    uses_start: ClassVar[bool] = False  # it starts from the card's medians, whatever ``start`` says


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


def run_tuner(
    case: str | Case, options: TunerOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """Coordinate search on (score, smooth score): try every valid TPP step, keep the best improving one.

    Stops at the maximum score, when no step improves, after ``max_moves`` moves or at the optimization
    budget; each round costs one optimization per valid action (≤ 6 + 6N) plus one for the start.
    """
    start = time.perf_counter()
    return _tune("tuner", _tuner_env(case, options), options, None, "", start, progress)


def run_prior_tuner(
    case: str | Case, options: PriorTunerOptions, progress: ProgressCallback | None = None
) -> AgentResult:
    """The tuner from the knowledge card's medians (role-mapped): what the knowledge is worth without an
    LLM (METHOD §5, the ablation the sources lack)."""
    from radagent.agents.knowledge import read_card

    start = time.perf_counter()
    card = read_card(options.knowledge)
    env = _tuner_env(case, options)
    patient = env.source.case(env.source.variants[0])
    mapping = card.mapping(patient, env.roles.target, env.roles.oars)
    medians = card.medians(mapping, env.roles.oars)
    names = ", ".join(f"{name} → card {key}" for name, _, key in mapping.oars)
    note = f"started from the card's medians ({names})"
    result = _tune("prior-tuner", env, options, medians, note, start, progress)
    return replace(result, knowledge={**card.provenance(), **mapping.to_dict()})


def _tuner_env(case: str | Case, options: TunerOptions) -> TPPEnv:
    """The TPP environment a tuner steps (its episode limit the tuner's move limit)."""
    config = TPPConfig(
        engine=options.engine, angles_deg=options.angles_deg, start=options.start, max_steps=options.max_moves
    )
    return TPPEnv(case=case, config=config)


def _tune(
    agent: str,
    env: TPPEnv,
    options: TunerOptions,
    start_tpps: dict[str, float] | None,
    note: str,
    start: float,
    progress: ProgressCallback | None,
) -> AgentResult:
    """The coordinate search in ``env`` from the options' start, or from ``start_tpps`` (entry → value);
    ``start``: when the run began (``perf_counter``)."""
    reset_options = {"tpps": start_tpps} if start_tpps is not None else None
    _, info = env.reset(seed=options.seed, options=reset_options)
    history = [{**tpp_record(None, "", 0.0, info), "optimizer_calls": 1}]
    calls, budget = 1, options.max_optimizations or math.inf
    stop = ""
    while len(history) <= options.max_moves and info["score"] < info["score_max"] - SCORE_TOLERANCE:
        moves = len(history) - 1
        trials = []
        actions = np.flatnonzero(env.action_masks())
        for n, action in enumerate(actions):
            if calls + len(trials) >= budget:
                stop = f"optimization budget of {options.max_optimizations} spent"
                break
            done = (moves + n / len(actions)) / options.max_moves
            report(progress, done, f"{agent}: move {moves + 1}{plan_status(info)}")
            trials.append(lookahead(env, int(action)))
        calls += len(trials)
        if not trials:
            break
        best = max(trials, key=lambda t: (t.info["score"], t.info["smooth_score"]))
        if not improves(best.info, info):
            break
        record = tpp_record(best.action, env.action_name(best.action), best.reward, best.info)
        history.append({**record, "optimizer_calls": calls})
        env, info = best.env, best.info
        if stop:
            break
    report(progress, 1.0, f"{agent}: done")
    env.close()
    return AgentResult(
        agent=agent,
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
        note="; ".join(part for part in (note, stop) if part),
        metrics=info["metrics"],
    )
