"""The one agent registry: every planner a user, the CLI or the Slicer module can run, by name.

Adding an agent is one :class:`AgentSpec` line in ``AGENTS``; its run function may import heavy
dependencies (torch, an LLM client) inside itself, so that listing agents stays cheap. What an agent
needs (Python modules, a score card, a trained checkpoint) is data on its entry (:class:`AgentNeeds`):
front ends ask the entry what to install, check and show, never the agent's name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from radagent.agents.baselines import (
    ExhaustiveOptions,
    PriorTunerOptions,
    TunerOptions,
    run_equispaced,
    run_exhaustive,
    run_greedy,
    run_prior_tuner,
    run_random,
    run_tuner,
)
from radagent.agents.checkpoint import GANTRY_DQN, TPP_DQN, TrainedFor
from radagent.agents.common import AgentKind, AgentOptions, AgentResult, AngleAgentOptions, TPPAgentOptions
from radagent.agents.learned import DQNGantryOptions, DQNTPPOptions, run_dqn_gantry, run_dqn_tpp
from radagent.agents.llm_agents import LLMGantryOptions, run_llm_gantry
from radagent.agents.llm_tpp import LLMTPPOptions, M2MOptions, run_llm_tpp, run_m2m
from radagent.errors import InputError
from radagent.patient import Case
from radagent.progress import ProgressCallback

__all__ = ["AGENTS", "AgentNeeds", "AgentSpec", "get_agent", "list_agents", "trained_agent"]

RunFunction = Callable[[str | Case, Any, ProgressCallback | None], AgentResult]
_OPTIONS_BASE: dict[str, type[AgentOptions]] = {"angles": AngleAgentOptions, "tpp": TPPAgentOptions}


@dataclass(frozen=True)
class AgentNeeds:
    """What an agent needs beyond a case with a target and an organ at risk."""

    modules: tuple[str, ...] = ()  # Python modules its run imports (e.g. torch)
    install: str | None = None  # the pip requirement that brings them, e.g. radagent[learn]
    score_card: bool = False  # it optimizes a score card's score
    trained: TrainedFor | None = None  # a checkpoint, and the environment it was trained in
    llm_endpoint: bool = False  # a chat LLM's URL and model (its options, or RADAGENT_LLM_URL / _MODEL)

    def missing_modules(self) -> list[str]:
        """The needed modules this Python cannot import."""
        return [name for name in self.modules if importlib.util.find_spec(name) is None]


_TORCH = ("torch",)
_LEARN_EXTRA = "radagent[learn]"  # the optional dependencies that bring torch


@dataclass(frozen=True)
class AgentSpec:
    """An agent's name, kind (``angles`` or ``tpp``), options dataclass, run function, one-line summary
    and what it needs."""

    name: str
    kind: AgentKind
    options_type: type[AgentOptions]
    run_function: RunFunction
    description: str
    needs: AgentNeeds = field(default_factory=AgentNeeds)

    def __post_init__(self) -> None:
        if not issubclass(self.options_type, _OPTIONS_BASE[self.kind]):
            base = _OPTIONS_BASE[self.kind].__name__
            raise TypeError(f"agent {self.name!r}: {self.kind} options must derive from {base}")

    def run(
        self,
        case: str | Case,
        options: AgentOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> AgentResult:
        """Run on a Case or built-in case name with ``options`` (default: the options' defaults); the
        result carries this entry's name, whichever run function produced it."""
        options = options if options is not None else self.options_type()
        if not isinstance(options, self.options_type):
            expected, given = self.options_type.__name__, type(options).__name__
            raise InputError(f"agent {self.name!r} takes {expected} options, got {given}")
        return replace(self.run_function(case, options, progress), agent=self.name)


AGENTS: Mapping[str, AgentSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            AgentSpec("random", "angles", AngleAgentOptions, run_random, "seeded random K-subset"),
            AgentSpec("equispaced", "angles", AngleAgentOptions, run_equispaced, "equispaced template"),
            AgentSpec("greedy", "angles", AngleAgentOptions, run_greedy, "greedy forward beam selection"),
            AgentSpec(
                "exhaustive", "angles", ExhaustiveOptions, run_exhaustive, "best K-subset of a small set"
            ),
            AgentSpec(
                "tuner",
                "tpp",
                TunerOptions,
                run_tuner,
                "coordinate-search TPP auto-tuner",
                AgentNeeds(score_card=True),
            ),
            AgentSpec(
                "dqn-gantry",
                "angles",
                DQNGantryOptions,
                run_dqn_gantry,
                "trained DQN, one beam per step",
                AgentNeeds(_TORCH, _LEARN_EXTRA, trained=GANTRY_DQN),
            ),
            AgentSpec(
                "llm-gantry",
                "angles",
                LLMGantryOptions,
                run_llm_gantry,
                "an LLM chooses the angle set from renderings and rewards (Text-to-Plan)",
                AgentNeeds(llm_endpoint=True),
            ),
            AgentSpec(
                "dqn-tpp",
                "tpp",
                DQNTPPOptions,
                run_dqn_tpp,
                "trained DQN, one TPP step per step",
                AgentNeeds(_TORCH, _LEARN_EXTRA, score_card=True, trained=TPP_DQN),
            ),
            AgentSpec(
                "prior-tuner",
                "tpp",
                PriorTunerOptions,
                run_prior_tuner,
                "the tuner started from a knowledge card's medians (the knowledge without an LLM)",
                AgentNeeds(score_card=True),
            ),
            AgentSpec(
                "llm-tpp",
                "tpp",
                LLMTPPOptions,
                run_llm_tpp,
                "an LLM sets the TPPs from the score card, DVH and history (unguided)",
                AgentNeeds(score_card=True, llm_endpoint=True),
            ),
            AgentSpec(
                "m2m",
                "tpp",
                M2MOptions,
                run_m2m,
                "an LLM sets the TPPs guided by a trained agent's knowledge card (M2M)",
                AgentNeeds(score_card=True, llm_endpoint=True),
            ),
        )
    }
)


def get_agent(name: str) -> AgentSpec:
    """The registered agent ``name``; an unknown name is an InputError listing the known ones."""
    if name not in AGENTS:
        raise InputError(f"unknown agent {name!r}; known agents: {', '.join(AGENTS)}")
    return AGENTS[name]


def list_agents(kind: AgentKind | None = None) -> list[AgentSpec]:
    """All registered agents, or those of one kind, in registration order."""
    if kind is not None and kind not in _OPTIONS_BASE:
        raise InputError(f"agent kind must be 'angles' or 'tpp', got {kind!r}")
    return [spec for spec in AGENTS.values() if kind is None or spec.kind == kind]


def trained_agent(env: str) -> AgentSpec:
    """The registered agent whose network is trained in environment ``env`` (what ``radagent train``
    produces a checkpoint for)."""
    for spec in AGENTS.values():
        if spec.needs.trained is not None and spec.needs.trained.env == env:
            return spec
    raise InputError(f"no registered agent is trained in the {env!r} environment")
