"""What both planning environments share: case sampling, role mapping, CT-grid evaluation, JSON-lines log."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import gymnasium as gym
import numba
import numpy as np

from radagent.cases import load_case
from radagent.dose import DoseEngineSettings, DoseInfluenceCache
from radagent.dose.influence import StructureInfluence
from radagent.errors import InputError
from radagent.evaluate import PlanEvaluation, RewardWeights
from radagent.geometry import Grid
from radagent.optimize import OptimizationResult, OptimizerSettings, TPPs, tpp_oar_names
from radagent.patient import Case
from radagent.plan import PlanSettings, normalize_and_evaluate, plan_fluence

__all__ = [
    "AGENT_ENGINE",
    "AGENT_GRID_MM",
    "CaseSource",
    "EnvConfig",
    "PlanningEnv",
    "Roles",
    "StepLog",
    "StepPlan",
    "agent_engine",
    "criteria_records",
    "evaluate_on_ct",
    "plan_step",
]

AGENT_GRID_MM = 5.0  # the agents' coarse resolution: beamlet width and dose grid spacing


def agent_engine(grid_mm: float = AGENT_GRID_MM) -> DoseEngineSettings:
    """The dose-engine settings of an agent grid: beamlets ``grid_mm`` wide on a ``grid_mm`` dose grid."""
    return DoseEngineSettings(bixel_mm=grid_mm, dose_grid_mm=grid_mm)


AGENT_ENGINE = agent_engine()


@dataclass(frozen=True)
class EnvConfig:
    """Settings both environments share: agent resolution, optimizer, reward weights, penalty, log."""

    engine: DoseEngineSettings = AGENT_ENGINE
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    reward_weights: RewardWeights = field(default_factory=RewardWeights)
    invalid_action_penalty: float = -1.0  # reward of a masked action, which leaves the state unchanged
    log_path: str | Path | None = None  # JSON lines, one per reset and step, appended
    cache_megabytes: float = 4000.0  # dose-influence blocks kept across variants
    cached_variants: int = 8  # prepared variants (structure rows, observation channels) kept in memory
    # numba threads of a step's optimization (None: numba's default, every core). Each of the optimizer's
    # ~500 products per step is one parallel region that waits for its slowest thread, so while other
    # processes keep a core busy, 2 threads cost 2-3x more than 1 (benchmarks/bench_envs.py): give 1 to
    # environments that share the machine (parallel rollouts, training beside other jobs).
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.cached_variants < 1:
            raise InputError(f"cached variants must be ≥ 1, got {self.cached_variants}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be ≥ 1 (or None for numba's default), got {self.threads}")


@dataclass(frozen=True)
class Roles:
    """The structures an environment acts on, by role: the primary target, the scored OARs in card order."""

    target: str
    oars: tuple[str, ...]
    other_oars: tuple[str, ...]

    @classmethod
    def of(cls, case: Case, env_name: str, needs_card: bool, oar_count: int | None = None) -> Roles:
        """Map a case's structures to roles, refusing a case without an OAR, without a score card when
        one is needed, or with another number of scored OARs than ``oar_count`` (the spaces' size)."""
        if not case.oars:
            raise InputError(f"{env_name} needs at least one organ at risk; case '{case.name}' has none")
        if needs_card and case.protocol.scorecard is None:
            raise InputError(f"{env_name} needs a score card; case '{case.name}' has none")
        oars = tpp_oar_names(case)
        if oar_count is not None and len(oars) != oar_count:
            raise InputError(
                f"{env_name} was built for {oar_count} scored OARs; case '{case.name}' has {len(oars)}"
            )
        return cls(case.primary_target.name, oars, tuple(o.name for o in case.oars if o.name not in oars))


class CaseSource:
    """The case of each episode: one fixed Case, or a built-in case whose variant is drawn at reset."""

    def __init__(self, case: str | Case, variants: Sequence[int] | None) -> None:
        if isinstance(case, Case):
            if variants is not None:
                raise InputError("variants apply to a built-in case name, not to a Case object")
            self.name, self.variants = case.name, (0,)
            self._cases: dict[int, Case] = {0: case}
        else:
            self.name = str(case)
            self.variants = tuple(int(v) for v in (variants if variants is not None else (0,)))
            if not self.variants:
                raise InputError("variants must name at least one case variant")
            self._cases = {self.variants[0]: load_case(self.name, self.variants[0])}  # fails early

    def draw(self, rng: np.random.Generator) -> tuple[int, Case]:
        """A variant drawn uniformly with ``rng`` (no draw when there is one) and its case."""
        index = int(rng.integers(len(self.variants))) if len(self.variants) > 1 else 0
        variant = self.variants[index]
        return variant, self.case(variant)

    def case(self, variant: int) -> Case:
        """The case of one of the source's variants."""
        if variant not in self.variants:
            raise InputError(f"variant {variant} is not among this environment's {list(self.variants)}")
        if variant not in self._cases:
            self._cases[variant] = load_case(self.name, variant)
        return self._cases[variant]


@dataclass(frozen=True)
class StepPlan:
    """The plan of one environment step: its dose on the CT grid (normalized to target D95 = p there), its
    evaluation, the normalization factor and the optimizer's final objective."""

    dose_ct_gy: np.ndarray
    evaluation: PlanEvaluation
    normalization: float  # factor applied to the optimizer's (agent-grid normalized) dose
    objective: float | None = None  # the optimizer's final objective value (before normalization)

    @property
    def reward(self) -> float:
        """The penalty reward R (METHOD §4)."""
        return self.evaluation.reward

    @property
    def score(self) -> float:
        """The score-card score S (0 without a card)."""
        return float(self.evaluation.score or 0.0)

    @property
    def smooth_score(self) -> float:
        """S_smooth (0 without a card)."""
        return float(self.evaluation.smooth_score or 0.0)


def evaluate_on_ct(
    case: Case,
    dose_gy: np.ndarray,
    dose_grid: Grid,
    weights: RewardWeights,
    objective: float | None = None,
) -> StepPlan:
    """Resample an agent-grid dose onto the CT grid, renormalize there to D95 = p and evaluate it without
    DVH curves (``objective``: the optimizer's final value, kept with the plan): plan_case's last step."""
    dose_ct, factor, evaluation = normalize_and_evaluate(
        case, dose_gy, dose_grid, reward_weights=weights, dvh_step_gy=None
    )
    return StepPlan(dose_ct, evaluation, factor, objective)


def plan_step(
    case: Case, influence: StructureInfluence, tpps: TPPs | None, config: EnvConfig
) -> tuple[StepPlan, OptimizationResult]:
    """One environment step's plan: :func:`radagent.plan.plan_case`'s fluence and evaluation steps for
    the TPP objective (``tpps``; None: the default TPPs), cold-started, on the agent grid."""
    settings = PlanSettings(objective_set="tpp", tpps=tpps, optimizer=config.optimizer)
    fluence = plan_fluence(influence, influence.dose_grid, case, settings)
    optimization = fluence.optimization
    assert optimization is not None  # optimized fluence always has a run
    objective = optimization.objective_history[-1]
    plan = evaluate_on_ct(case, optimization.dose_gy, influence.dose_grid, config.reward_weights, objective)
    return plan, optimization


def criteria_records(evaluation: PlanEvaluation) -> list[dict[str, Any]]:
    """Each criterion's label, value and sub-score (JSON-ready)."""
    return [
        {"label": r.criterion.describe(), "value": float(r.value), "subscore": float(r.subscore)}
        for r in evaluation.criteria
    ]


class StepLog:
    """Appends one JSON object per line to ``path``; a no-op without a path."""

    def __init__(self, path: str | Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - open for the env's life

    def write(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and flush, so a crashed run keeps its trajectory."""
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class PlanningEnv(gym.Env):
    """What GantryEnv and TPPEnv share: case source, dose cache, role mapping, action check, step log."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute
    # The gymnasium id; its version changes whenever observations, actions, rewards or dynamics change
    # meaning. Checkpoints record it and are refused by another version.
    env_id: ClassVar[str]
    log_name: ClassVar[str]  # the step log's "env" field
    config_type: ClassVar[type[EnvConfig]]  # the configuration dataclass; its defaults when none is given

    def __init__(
        self, case: str | Case = "prostate", variants: Sequence[int] | None = None, config: Any = None
    ) -> None:
        """An environment on a built-in case's ``variants`` (or one :class:`Case`), under ``config``."""
        self.config = config if config is not None else self.config_type()
        if not isinstance(self.config, self.config_type):
            raise InputError(f"{type(self).__name__} takes a {self.config_type.__name__}, got {config!r}")
        self.source = CaseSource(case, variants)
        self.cache = DoseInfluenceCache(self.config.cache_megabytes)
        self._log = StepLog(self.config.log_path)
        self._episode = -1
        self._patients: OrderedDict[int, Any] = OrderedDict()  # prepared variants, least recent first
        # The first variant fixes the roles and the spaces' sizes: every later one has as many scored OARs.
        first = self._patient(*self.source.draw(np.random.default_rng(0)))
        self.roles: Roles = first.roles
        card = first.case.protocol.scorecard
        self.scorecard_name: str | None = card.name if card is not None else None
        self._define_spaces(first)

    def _patient(self, variant: int, case: Case) -> Any:
        """The variant prepared for steps (computed once, kept for a few variants)."""
        raise NotImplementedError

    def _define_spaces(self, first: Any) -> None:
        """Set ``action_space`` and ``observation_space`` from the first prepared variant."""
        raise NotImplementedError

    @contextmanager
    def _numba_threads(self) -> Iterator[None]:
        """Run the enclosed numba kernels on ``config.threads`` threads (numba's setting is per thread)."""
        if self.config.threads is None:
            yield
            return
        previous = numba.get_num_threads()
        numba.set_num_threads(min(self.config.threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(previous)

    def _keep_recent(self, prepared: OrderedDict[int, Any]) -> None:
        """Drop the least recently used prepared variants beyond ``cached_variants``."""
        while len(prepared) > self.config.cached_variants:
            prepared.popitem(last=False)

    def _roles(self, case: Case, known: Roles | None, needs_card: bool) -> Roles:
        """Roles of a new variant, held to the OAR count of the first one (the spaces' size)."""
        return Roles.of(case, type(self).__name__, needs_card, len(known.oars) if known is not None else None)

    def _checked(self, action: int) -> int:
        """The action as an int, refused when it lies outside the action space."""
        action = int(action)
        if not self.action_space.contains(action):
            raise InputError(f"action {action} is outside {self.action_space}")
        return action

    def _log_event(self, event: str, record: dict[str, Any]) -> None:
        self._log.write({"event": event, **record})

    def _started(self) -> tuple[Any, dict[str, Any]]:
        """Log the episode's start and return what ``reset`` returns."""
        info = self._info(invalid=False)
        self._log_event("reset", self._record(None, 0.0, info))
        return self._observation(), info

    def _stepped(
        self, action: Any, reward: float, terminated: bool, truncated: bool, valid: bool
    ) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Log a step and return what ``step`` returns."""
        info = self._info(invalid=not valid)
        self._log_event("step", self._record(action, reward, info))
        return self._observation(), float(reward), bool(terminated), bool(truncated), info

    def episode_state(self) -> dict[str, Any]:
        """The episode in progress as plain values (a paused training run saves it)."""
        return {
            "episode": self._episode,
            "variant": self.patient.variant,
            "steps": self._steps,
            **self._choices(),
        }

    def _record(self, action: Any, reward: float, info: dict[str, Any]) -> dict[str, Any]:
        """One line of the step log: what every environment records, then its own fields."""
        plan = self._plan
        return {
            "env": self.log_name,
            "case": info["case"],
            "episode": self._episode,
            "step": self._steps,
            "action": action,
            "invalid_action": info["invalid_action"],
            "criteria": criteria_records(plan.evaluation) if plan is not None else [],
            "reward": float(reward),
            "score": info["score"],
            **self._record_fields(action, info),
        }

    def _observation(self) -> Any:
        raise NotImplementedError

    def _info(self, invalid: bool) -> dict[str, Any]:
        """The ``info`` of reset and step: the variant, the environment's state and the plan's numbers,
        which the environment computed on the CT grid."""
        return {
            "invalid_action": invalid,
            "case": self.patient.case.name,
            "variant": self.patient.variant,
            **self._plan_info(),
            "grid": "ct",
        }

    def _plan_info(self) -> dict[str, Any]:
        """The environment's own ``info`` fields: its choices and the current plan's numbers."""
        raise NotImplementedError

    def _choices(self) -> dict[str, Any]:
        """What the agent has chosen so far in this episode, as plain values."""
        raise NotImplementedError

    def _record_fields(self, action: Any, info: dict[str, Any]) -> dict[str, Any]:
        """The environment's own fields of a step-log line."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the step log."""
        self._log.close()
