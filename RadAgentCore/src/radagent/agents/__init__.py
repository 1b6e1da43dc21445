"""Planning agents behind one registry (METHOD §5): baselines, DQN; LLM agents later."""

from radagent.agents.baselines import ExhaustiveOptions, TunerOptions
from radagent.agents.common import AgentOptions, AgentResult, AngleAgentOptions, TPPAgentOptions
from radagent.agents.learned import DQNGantryOptions, DQNTPPOptions
from radagent.agents.registry import AGENTS, AgentSpec, get_agent, list_agents

__all__ = [
    "AGENTS",
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
]
