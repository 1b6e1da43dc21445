"""Getting ``radagent`` and its dependencies into Slicer's Python: checked on use, installed only with
the user's consent (the Widget asks), never at import and never with a dialog in batch mode.

This module imports nothing heavy, so the Widget can use it before the dependencies exist. What an agent
needs beyond the core (torch for the DQN agents) is read from the core's agent registry once the core is
installed (``AgentSpec.needs.modules``), never from the agent's name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["core_requirement", "missing_modules"]

# What the planning needs importable; the first failing one is what pip must bring.
REQUIRED_MODULES = ("radagent", "numba", "scipy", "gymnasium", "nrrd", "matplotlib", "jsonschema")


def core_requirement() -> str:
    """The pip requirement for the core: this checkout's ``RadAgentCore`` folder when the module runs
    from a clone (Extension Wizard / additional module paths), else the package by name."""
    checkout = Path(__file__).resolve().parents[2] / "RadAgentCore"
    return str(checkout) if (checkout / "pyproject.toml").is_file() else "radagent"


def missing_modules(names: tuple[str, ...] = REQUIRED_MODULES) -> list[str]:
    """Those of ``names`` (default: what planning needs) this Python cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]
