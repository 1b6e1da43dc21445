"""Getting ``radagent`` and its dependencies into Slicer's Python: checked on use, installed only with
the user's consent (the Widget asks), never at import and never with a dialog in batch mode.

This module imports nothing heavy, so the Widget can use it before the dependencies exist.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["core_requirement", "missing_modules", "torch_needed"]

# What the planning needs importable; the first failing one is what pip must bring.
REQUIRED_MODULES = ("radagent", "numba", "scipy", "gymnasium", "nrrd", "matplotlib")
TORCH_AGENTS_PREFIX = "dqn-"


def core_requirement() -> str:
    """The pip requirement for the core: this checkout's ``RadAgentCore`` folder when the module runs
    from a clone (Extension Wizard / additional module paths), else the package by name."""
    checkout = Path(__file__).resolve().parents[2] / "RadAgentCore"
    return str(checkout) if (checkout / "pyproject.toml").is_file() else "radagent"


def missing_modules() -> list[str]:
    """The required modules this Python cannot import (empty when planning can run)."""
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def torch_needed(agent_names: list[str]) -> bool:
    """True when a chosen agent needs torch and this Python has none."""
    uses_torch = any(name.startswith(TORCH_AGENTS_PREFIX) for name in agent_names if name)
    return uses_torch and importlib.util.find_spec("torch") is None
