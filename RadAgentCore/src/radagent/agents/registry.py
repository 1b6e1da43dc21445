"""The one agent registry: every planner a user, the CLI or the Slicer module can run, by name.

Adding an agent is one :class:`AgentSpec` line in ``AGENTS``; its run function may import heavy
dependencies (torch, an LLM client) inside itself, so that listing agents stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from radagent.agents.baselines import (
    ExhaustiveOptions,
    TunerOptions,
    run_equispaced,
    run_exhaustive,
    run_greedy,
    run_random,
    run_tuner,
)
from radagent.agents.common import AgentKind, AgentOptions, AgentResult, AngleAgentOptions, TPPAgentOptions
from radagent.agents.learned import DQNGantryOptions, DQNTPPOptions, run_dqn_gantry, run_dqn_tpp
from radagent.errors import InputError
from radagent.patient import Case
from radagent.progress import ProgressCallback

__all__ = ["AGENTS", "AgentSpec", "get_agent", "list_agents"]

RunFunction = Callable[[str | Case, Any, ProgressCallback | None], AgentResult]
_OPTIONS_BASE: dict[str, type[AgentOptions]] = {"angles": AngleAgentOptions, "tpp": TPPAgentOptions}


@dataclass(frozen=True)
class AgentSpec:
    """An agent's name, kind (``angles`` or ``tpp``), options dataclass, run function and one-line summary."""

    name: str
    kind: AgentKind
    options_type: type[AgentOptions]
    run_function: RunFunction
    description: str

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
        """Run on a Case or built-in case name with ``options`` (default: the options' defaults)."""
        options = options if options is not None else self.options_type()
        if not isinstance(options, self.options_type):
            expected, given = self.options_type.__name__, type(options).__name__
            raise InputError(f"agent {self.name!r} takes {expected} options, got {given}")
        return self.run_function(case, options, progress)


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
            AgentSpec("tuner", "tpp", TunerOptions, run_tuner, "coordinate-search TPP auto-tuner"),
            AgentSpec(
                "dqn-gantry", "angles", DQNGantryOptions, run_dqn_gantry, "trained DQN, one beam per step"
            ),
            AgentSpec("dqn-tpp", "tpp", DQNTPPOptions, run_dqn_tpp, "trained DQN, one TPP step per step"),
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
