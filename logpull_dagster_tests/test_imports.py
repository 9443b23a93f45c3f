"""Package edges: the config and the plug-in registry load on their own, each first in a fresh
interpreter, with no import hidden inside a function between them (issue 20: config.py imported plugins
inside a function so that it loaded at all)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "logpull_dagster"


@pytest.mark.parametrize("module", ["logpull_dagster.config", "logpull_dagster.plugins",
                                    "logpull_dagster.targets", "logpull_dagster.sources.okta"])
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def function_level_imports(path: Path) -> list[str]:
    """The modules of ours a file imports inside a function (TYPE_CHECKING blocks are not functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("logpull_dagster"):
                    out.append(f"{path.name}:{inner.lineno} from {inner.module}")
                elif isinstance(inner, ast.Import):
                    out += [f"{path.name}:{inner.lineno} import {a.name}" for a in inner.names
                            if a.name.startswith("logpull_dagster")]
    return out


def test_the_registry_imports_none_of_ours_and_the_config_hides_no_import():
    registry = ast.parse((PACKAGE / "plugins.py").read_text())
    runtime = [n for n in registry.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not [n for n in runtime if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("logpull_dagster")]
    hidden = [imp for path in sorted((PACKAGE / "config").glob("*.py")) for imp in function_level_imports(path)]
    assert hidden == [] and function_level_imports(PACKAGE / "plugins.py") == []
