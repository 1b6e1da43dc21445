"""Planning environments with the gymnasium interface (METHOD §5): beam angles and planning parameters."""

from radagent.envs.common import EnvConfig
from radagent.envs.gantry import GantryConfig, GantryEnv
from radagent.envs.tpp import TPPConfig, TPPEnv

__all__ = ["ENV_IDS", "EnvConfig", "GantryConfig", "GantryEnv", "TPPConfig", "TPPEnv"]

ENV_IDS = {"gantry": GantryEnv.env_id, "tpp": TPPEnv.env_id}


def _register() -> None:
    """Register both environments with gymnasium (``gymnasium.make("RadAgent/TPP-v1", case=...)``)."""
    import gymnasium

    for env_type in (GantryEnv, TPPEnv):
        if env_type.env_id not in gymnasium.registry:
            gymnasium.register(id=env_type.env_id, entry_point=f"{env_type.__module__}:{env_type.__name__}")


_register()
