"""What every agent shares: its options' common fields, the result it returns, and env lookahead.

Agents act only through the planning environments (``radagent.envs``), so the rewards and scores they
see and report are the numbers a learning agent sees; each valid environment step is one fluence
optimization on the agent grid, and every reported number comes from the env's CT-grid evaluation.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import gymnasium as gym

from radagent.beams import DEFAULT_BEAMS, equispaced_angles
from radagent.dose import DoseEngineSettings
from radagent.envs.common import AGENT_ENGINE
from radagent.evaluate.metrics import score_text
from radagent.optimize import TPPs

__all__ = [
    "SCORE_TOLERANCE",
    "AgentKind",
    "AgentOptions",
    "AgentResult",
    "AngleAgentOptions",
    "TPPAgentOptions",
    "Trial",
    "angle_record",
    "improves",
    "lookahead",
    "plan_status",
    "tpp_record",
]

AgentKind = Literal["angles", "tpp"]


@dataclass(frozen=True)
class AgentOptions:
    """Settings every agent has: its seed and the agent grid (dose engine) its environment plans on."""

    seed: int = 0
    engine: DoseEngineSettings = AGENT_ENGINE


@dataclass(frozen=True)
class AngleAgentOptions(AgentOptions):
    """An angle agent's settings: K beams among candidate angles ``candidate_step_deg`` apart."""

    beams: int = DEFAULT_BEAMS
    candidate_step_deg: float = 10.0


@dataclass(frozen=True)
class TPPAgentOptions(AgentOptions):
    """A TPP agent's settings: the fixed beams whose TPPs it tunes and where tuning starts."""

    angles_deg: tuple[float, ...] = field(default_factory=lambda: equispaced_angles(DEFAULT_BEAMS))
    start: Literal["default", "random"] = "default"
    # False for an agent that chooses its own start (prior-tuner: a card's medians), which a comparison
    # then runs once per variant instead of once per start
    uses_start: ClassVar[bool] = True


@dataclass(frozen=True)
class AgentResult:
    """What any agent returns: its final beams / TPPs, the final plan's CT-grid numbers, cost and history.

    ``history[0]`` is the environment's start (action ``None``); each later entry one accepted step.
    """

    agent: str
    kind: AgentKind
    case: str
    angles_deg: tuple[float, ...]  # chosen by an angle agent; the fixed beams of a TPP agent
    tpps: TPPs | None  # chosen by a TPP agent; None for an angle agent (plans use the default TPPs)
    reward: float  # penalty reward R of the final plan
    score: float | None
    score_max: float | None
    steps: int
    optimizer_calls: int
    wall_s: float
    history: list[dict[str, Any]]
    options: AgentOptions
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)  # final plan's CT-grid evaluation
    llm: dict[str, Any] | None = None  # an LLM agent's calls, tokens, valid-reply rate and stop reason
    knowledge: dict[str, Any] | None = None  # the knowledge card used (source, hash) and the role mapping

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (TPPs as ``{entry: value}``, options as plain values); without the final
        plan's metrics, which the caller reports once for the plan it builds from the result."""
        result = asdict(self)
        del result["metrics"]
        result["angles_deg"] = list(self.angles_deg)
        result["tpps"] = self.tpps.to_dict() if self.tpps is not None else None
        result["options"] = asdict(self.options)
        result["wall_s"] = round(self.wall_s, 3)
        return result


class Trial(NamedTuple):
    """One environment step tried on a copy of the environment: the copy after it, reward and info."""

    action: int
    env: gym.Env
    reward: float
    info: dict[str, Any]


def lookahead(env: gym.Env, action: int) -> Trial:
    """Step a shallow copy of ``env``, leaving ``env`` as it was (steps replace state, never mutate it)."""
    trial = copy.copy(env)
    _, reward, _, _, info = trial.step(action)
    return Trial(int(action), trial, float(reward), info)


def angle_record(action: int | None, reward: float, info: dict[str, Any]) -> dict[str, Any]:
    """One gantry history entry: the action, the angles after it, its reward, the plan's R and score."""
    return {
        "action": action,
        "angles_deg": list(info["angles_deg"]),
        "reward": reward,
        "plan_reward": info["plan_reward"],
        "score": info["score"],
    }


def tpp_record(action: int | None, name: str | None, reward: float, info: dict[str, Any]) -> dict[str, Any]:
    """One TPP history entry: the action and its name, the TPPs after it, reward, score, smooth score, R."""
    return {
        "action": action,
        "action_name": name or None,
        "tpps": dict(info["tpps"]),
        "reward": reward,
        "score": info["score"],
        "smooth_score": info["smooth_score"],
        "plan_reward": info["plan_reward"],
    }


SCORE_TOLERANCE = 1e-9  # a score change smaller than this is no improvement


def improves(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """A higher score, or the same score and a higher smooth score (env step ``info`` dictionaries)."""
    if new["score"] > old["score"] + SCORE_TOLERANCE:
        return True
    same_score = abs(new["score"] - old["score"]) <= SCORE_TOLERANCE
    return same_score and new["smooth_score"] > old["smooth_score"] + SCORE_TOLERANCE


def plan_status(info: dict[str, Any]) -> str:
    """The current plan's live numbers, ``", R -12.34, score 7.50/9"``, from an env step's ``info``
    (empty before the first beam); appended to agents' progress messages for front ends to show."""
    if "tpps" not in info and not info.get("angles_deg"):
        return ""
    score_max = info.get("metrics", {}).get("plan", {}).get("score_max")
    score = f", {score_text(info['score'], score_max)}" if score_max else ""
    return f", R {info['plan_reward']:.2f}{score}"
