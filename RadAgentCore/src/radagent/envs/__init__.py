"""Planning environments with the gymnasium interface (METHOD §5): beam angles and planning parameters."""

from radagent.envs.common import EnvConfig
from radagent.envs.gantry import GantryConfig, GantryEnv
from radagent.envs.tpp import TPPConfig, TPPEnv

__all__ = ["EnvConfig", "GantryConfig", "GantryEnv", "TPPConfig", "TPPEnv"]
