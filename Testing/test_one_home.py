"""One home per concept, checked on the source: no code recognizes an agent by its name, and the agent-grid
default, its engine settings and the score summary are each written once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from radagent.agents import AGENTS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [*(ROOT / "RadAgentCore" / "src" / "radagent").rglob("*.py"), *(ROOT / "RadAgentSlicer").rglob("*.py")]
)
REGISTRY = ROOT / "RadAgentCore" / "src" / "radagent" / "agents" / "registry.py"


def _names_and_prefixes() -> set[str]:
    """Every registered agent's name, and each name's family prefix (``dqn-`` of ``dqn-tpp``)."""
    names = set(AGENTS)
    return names | {name.split("-")[0] + "-" for name in names if "-" in name}


def _agent_literal(node: ast.AST, literals: set[str]) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in literals


def _about_agents(node: ast.AST) -> bool:
    """An expression that holds an agent or its name (``spec.name``, ``agent``, ``args.agent[0]``)."""
    text = ast.unparse(node).lower()
    return "agent" in text or "name" in text or "spec" in text


def _name_tests(tree: ast.AST, literals: set[str]) -> list[int]:
    """Line numbers where code compares an agent's name with, or prefix-matches it against, an agent name,
    or keeps a table keyed by agent names."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                elements = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                named = any(_agent_literal(e, literals) for e in elements)
                if named and any(_about_agents(other) for other in operands if other is not operand):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("startswith", "endswith") and any(
                _agent_literal(a, literals) for a in node.args
            ):
                lines.append(node.lineno)
        elif _agent_literal(node, literals) and node.value.endswith("-"):  # a family prefix, kept for later
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None and _agent_literal(k, literals)]
            if len(keys) > 1 or any("-" in k.value for k in keys):
                lines.append(node.lineno)
    return lines


def test_no_code_recognizes_an_agent_by_its_name_or_prefix():
    literals = _names_and_prefixes()
    assert {"dqn-gantry", "dqn-", "greedy"} <= literals
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for path in SOURCES
        if path != REGISTRY
        for line in _name_tests(ast.parse(path.read_text()), literals)
    }
    assert not found, f"code that tests an agent's name instead of asking its registry entry: {sorted(found)}"


def test_the_scan_finds_name_tests():
    """The scan above would see the habits it forbids."""
    literals = _names_and_prefixes()
    code = (
        'a = name.startswith("dqn-")\nb = spec.name == "greedy"\nc = {"dqn-tpp": "tpp"}\n'
        'd = agent in ("tuner",)\nTORCH_AGENTS_PREFIX = "dqn-"'
    )
    assert sorted(set(_name_tests(ast.parse(code), literals))) == [1, 2, 3, 4, 5]


def _files_matching(pattern: str) -> list[str]:
    """Each source file with a line matching ``pattern``, once per matching line."""
    regex = re.compile(pattern)
    return [
        str(path.relative_to(ROOT))
        for path in SOURCES
        for line in path.read_text().splitlines()
        if regex.search(line)
    ]


def test_the_agent_grid_default_and_its_engine_settings_are_written_once():
    assert _files_matching(r"AGENT_GRID_MM\s*=\s*\d") == ["RadAgentCore/src/radagent/envs/common.py"]
    agent_grid = r"\b(agent_grid_mm|agentGridMm|grid_mm)\b\s*(:[^=\n]*)?=\s*5(\.0)?\b"
    assert _files_matching(agent_grid) == []  # no other literal 5 mm agent grid
    same_size = r"DoseEngineSettings\(bixel_mm=([\w.]+), dose_grid_mm=\1\)"
    assert _files_matching(same_size) == ["RadAgentCore/src/radagent/envs/common.py"]


def test_the_score_summary_is_formatted_once():
    assert _files_matching(r"score_max[^\n]*:g\}") == ["RadAgentCore/src/radagent/evaluate/metrics.py"]
