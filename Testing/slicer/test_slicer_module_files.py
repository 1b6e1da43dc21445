"""The module's files without Slicer: the .ui parses and has every widget the Widget uses, the
parameter-node bindings name real parameters, and CMake lists every script and resource."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "RadAgentSlicer"
UI_FILE = MODULE / "Resources" / "UI" / "RadAgentSlicer.ui"
WIDGET_FILE = MODULE / "RadAgentSlicer.py"


def _ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _ui_names_used() -> set[str]:
    """Every ``self.ui.NAME`` the module's code reads or writes."""
    tree = ast.parse(WIDGET_FILE.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def _parameter_names() -> set[str]:
    tree = ast.parse(WIDGET_FILE.read_text())
    node = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RadAgentSlicerParameterNode"
    )
    return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}


def test_ui_parses_and_has_every_widget_the_module_uses():
    widgets = _ui_widgets()
    used = _ui_names_used()
    assert len(used) > 10  # the walk sees the names (guards against a broken walk)
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in RadAgentSlicer.py but not in the .ui: {missing}"


def test_ui_parameter_bindings_name_parameter_node_fields():
    parameters = _parameter_names()
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert {"ctSelector", "segmentationSelector", "prescriptionSpinBox", "beamsSpinBox"} <= set(bound)
    unknown = {w: p for w, p in bound.items() if p not in parameters}
    assert not unknown, f"bindings to parameters the parameter node lacks: {unknown}"


def test_cmake_lists_every_script_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "RadAgentSlicer")
    listed = set(re.findall(r"^\s+(\S+\.(?:py|png|ui))$", cmake, re.MULTILINE))
    on_disk = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*") if p.suffix in (".py", ".png", ".ui")}
    assert listed == on_disk
    root = (MODULE.parent / "CMakeLists.txt").read_text()
    assert 'set(EXTENSION_CATEGORY "Radiotherapy")' in root
    assert 'set(EXTENSION_DEPENDS "SlicerRT")' in root
    assert "add_subdirectory(RadAgentSlicer)" in root


def test_module_imports_no_heavy_dependency_at_import_time():
    """radagent, numba and torch are imported inside functions, after the dependencies are ensured."""
    tree = ast.parse(WIDGET_FILE.read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {(n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top_level}
    assert not {m for m in names if m.split(".")[0] in ("radagent", "numba", "torch", "numpy")}
    assert "RadAgentSlicerLib" in names  # only its dependency checker, which imports nothing heavy
    dependencies = ast.parse((MODULE / "RadAgentSlicerLib" / "dependencies.py").read_text())
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name
        for n in ast.walk(dependencies)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    assert imported <= {"__future__", "importlib.util", "pathlib"}


class _ScriptedLoadableModuleLogic:
    """What Slicer's ScriptedLoadableModuleLogic.__init__ does that matters here: it calls super().__init__()
    with no arguments, which reaches the next class in the module Logic's MRO."""

    def __init__(self, parent=None):
        super().__init__()
        self.parent = parent


def test_the_module_logic_is_the_planning_logic_and_can_be_built(scene):
    """The module's Logic class, as written in RadAgentSlicer.py, built on a stand-in for Slicer's base."""
    import slicer
    from RadAgentSlicerLib.logic import PlanningLogic

    tree = ast.parse(WIDGET_FILE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RadAgentSlicerLogic")
    assert [ast.unparse(base) for base in node.bases] == ["ScriptedLoadableModuleLogic", "PlanningLogic"]
    namespace = {"ScriptedLoadableModuleLogic": _ScriptedLoadableModuleLogic, "PlanningLogic": PlanningLogic}
    exec(compile(ast.Module([node], []), str(WIDGET_FILE), "exec"), namespace)
    slicer.mrmlScene = scene  # what the application provides
    try:
        logic = namespace["RadAgentSlicerLogic"]()
    finally:
        del slicer.mrmlScene
    assert isinstance(logic, PlanningLogic) and logic.scene is scene
    assert ("greedy", "greedy forward beam selection") in logic.agentChoices("angles")


def test_the_logic_module_imports_no_core_at_import_time(tmp_path):
    """RadAgentSlicer.py derives its Logic from PlanningLogic at import, before radagent may be installed."""
    import subprocess
    import sys

    code = "import sys, RadAgentSlicerLib.logic; assert not {'radagent', 'numpy'} & set(sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
