"""Planning agents behind one registry (METHOD §5): baselines, DQN; LLM agents later."""

from radagent.agents.baselines import ExhaustiveOptions, TunerOptions
from radagent.agents.common import AgentOptions, AgentResult, AngleAgentOptions, TPPAgentOptions
from radagent.agents.learned import DQNGantryOptions, DQNTPPOptions
from radagent.agents.registry import AGENTS, AgentNeeds, AgentSpec, get_agent, list_agents, trained_agent

__all__ = [
    "AGENTS",
    "AgentNeeds",
    "AgentOptions",
    "AgentResult",
    "AgentSpec",
    "AngleAgentOptions",
    "DQNGantryOptions",
    "DQNTPPOptions",
    "ExhaustiveOptions",
    "TPPAgentOptions",
    "TunerOptions",
    "get_agent",
    "list_agents",
    "trained_agent",
]
