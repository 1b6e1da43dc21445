"""Packaging contract: the core imports without torch, vtk or pyRadPlan (torch is an extra; vtk, Slicer's)."""

import subprocess
import sys
from pathlib import Path

import radagent

SOURCE = Path(radagent.__file__).resolve().parent
BLOCKED = ("torch", "vtk", "slicer", "pyRadPlan")
TORCH_MODULES = ("radagent.agents.dqn",)  # the DQN itself; every other module imports without torch


def test_every_module_imports_with_torch_vtk_and_pyradplan_blocked():
    program = f"""
import importlib, pkgutil, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it raises ImportError
import radagent
names = [m.name for m in pkgutil.walk_packages(radagent.__path__, "radagent.")]
for name in names:
    if name not in {TORCH_MODULES!r}:
        importlib.import_module(name)
from radagent.agents import AGENTS  # the DQN agents are listed without torch ...
from radagent.errors import InputError
try:
    AGENTS["dqn-tpp"].run("prostate")
except InputError as error:  # ... and say what to install when run without it
    assert "pip install 'radagent[learn]'" in str(error), error
else:
    raise AssertionError("dqn-tpp ran without torch")
print("imported", len(names))
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported ")


def test_no_core_module_mentions_a_benchmark_only_package_in_an_import():
    for path in SOURCE.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert "pyRadPlan" not in stripped, f"{path}: {stripped}"
                if path.name != "dqn.py":
                    assert "torch" not in stripped, f"{path}: {stripped}"


def test_console_script_is_declared():
    pyproject = (SOURCE.parents[1] / "pyproject.toml").read_text()
    assert 'radagent = "radagent.cli:main"' in pyproject
