"""stress/ in layers: harness < journeys < scenarios and benches, as the README says.

Parsed with ``ast`` (nothing imported): a module of one folder imports only from its
own folder or a folder below it, and the two top folders not from each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

STRESS = Path(__file__).resolve().parents[2] / "stress"
MAY_IMPORT = {
    "harness": {"harness"},
    "journeys": {"harness", "journeys"},
    "scenarios": {"harness", "journeys", "scenarios"},
    "benches": {"harness", "journeys", "benches"},
}


def stress_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.startswith("stress.")]
    return out


def test_each_folder_imports_only_below_it() -> None:
    bad = []
    for folder, allowed in MAY_IMPORT.items():
        files = sorted((STRESS / folder).glob("*.py"))
        assert files, folder
        for path in files:
            for line, name in stress_imports(path):
                if name.split(".")[1] not in allowed:
                    bad.append(f"stress/{folder}/{path.name}:{line}: {name}")
    assert bad == []


def test_nothing_is_left_outside_the_folders() -> None:
    loose = {p.name for p in STRESS.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py"}
