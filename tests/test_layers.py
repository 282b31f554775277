"""The layers: each module under waitroom/ imports only from its own layer or below.

Every module is parsed with ``ast`` (nothing is imported), each of its imports
(module level, in a function, under ``TYPE_CHECKING``: all of them) is resolved to
the module it names, and both are mapped to their layer. Low to high:

    errors < shared < line < settings < room < gateway

``lookup`` (the backend) is a server of its own beside them: it may import
``errors`` and ``shared`` only, and nothing below ``cli``/``devtools`` imports it.
``cli``, ``__main__`` and ``devtools`` are the top: they start either server and
may import anything. A separate top-level ``lookup`` package must not come back:
nothing in waitroom/, stress/ or tests/ may import one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "waitroom"

LAYERS = ("errors", "shared", "line", "settings", "room", "gateway")
TOP = "top"
# What each layer may import: itself and every layer below it.
MAY_IMPORT: dict[str, frozenset[str]] = {
    layer: frozenset(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)
}
MAY_IMPORT["lookup"] = frozenset({"errors", "shared", "lookup"})
MAY_IMPORT[TOP] = frozenset({*LAYERS, "lookup", TOP})
# The modules at the top: they wire the servers together.
TOP_MODULES = ("cli", "__main__", "devtools")

# Upward imports known and accepted for now, each with the reason; the test fails
# when one of them is gone, so this list only shrinks.
KNOWN_DEBTS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    source: str
    target: str
    source_layer: str
    target_layer: str

    def __str__(self) -> str:
        allowed = ", ".join(sorted(MAY_IMPORT[self.source_layer]))
        return (
            f"{self.path}:{self.line}: {self.source} ({self.source_layer}) imports "
            f"{self.target} ({self.target_layer}); {self.source_layer} may import {allowed}"
        )


def layer_of(module: str) -> str:
    """The layer of ``waitroom.<...>``; a ValueError for a module with no layer."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not in {PACKAGE}")
    if len(parts) == 1 or parts[1] in TOP_MODULES:
        return TOP
    if parts[1] in LAYERS or parts[1] == "lookup":
        return parts[1]
    raise ValueError(
        f"{module} belongs to no layer: put it in one of the packages, or add it to "
        "tests/test_layers.py and the README's map"
    )


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(
    tree: ast.Module, module: str, is_package: bool, known: set[str]
) -> Iterator[tuple[int, str]]:
    """Each ``(line, module)`` that ``tree`` imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = {}  # one per module, in order: ``from m import a, b`` is one import
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                # ``from waitroom.line import state`` imports the module waitroom.line.state.
                targets[candidate if candidate in known else base] = None
            for target in targets:
                yield node.lineno, target


def violations(sources: dict[str, tuple[str, str, bool]]) -> list[Violation | str]:
    """Every upward import among ``sources`` (module -> (path, text, is_package)),
    and every import of a top-level ``lookup`` package."""
    known = set(sources)
    found: list[Violation | str] = []
    for module, (path, text, is_package) in sorted(sources.items()):
        source_layer = layer_of(module)
        for line, target in imported(ast.parse(text, path), module, is_package, known):
            if target == "lookup" or target.startswith("lookup."):
                found.append(
                    f"{path}:{line}: {module} imports {target}: there is no top-level "
                    "lookup package any more; the backend is waitroom.lookup"
                )
                continue
            if target.split(".")[0] != PACKAGE or target == PACKAGE:
                continue
            target_layer = layer_of(target)
            if target_layer in MAY_IMPORT[source_layer]:
                continue
            found.append(Violation(path, line, module, target, source_layer, target_layer))
    return found


def package_sources() -> dict[str, tuple[str, str, bool]]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name = module_name(path, ROOT)
        out[name] = (
            str(path.relative_to(ROOT)),
            path.read_text(encoding="utf-8"),
            path.name == "__init__.py",
        )
    return out


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    found = violations(package_sources())
    upward = [
        v for v in found if not (isinstance(v, Violation) and (v.source, v.target) in KNOWN_DEBTS)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(map(str, upward))
    debts = {(v.source, v.target) for v in found if isinstance(v, Violation)}
    stale = [pair for pair in KNOWN_DEBTS if pair not in debts]
    assert not stale, f"paid off, remove from KNOWN_DEBTS: {stale}"


def test_nothing_imports_a_top_level_lookup_package() -> None:
    assert not (ROOT / "lookup").exists(), "lookup/ belongs inside waitroom/"
    sources = {}
    for folder in ("stress", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            # Checked as if it were a top module: only the lookup rule can fire.
            sources[f"{PACKAGE}.devtools._{module_name(path, ROOT).replace('.', '_')}"] = (
                str(path.relative_to(ROOT)),
                path.read_text(encoding="utf-8"),
                False,
            )
    assert violations(sources) == []


def test_every_module_has_a_layer() -> None:
    for module in package_sources():
        layer_of(module)  # a ValueError names the module that has none


def test_the_check_catches_what_it_must() -> None:
    """The check can fail: synthetic modules with each kind of bad import."""
    sources = {
        "waitroom.line": ("waitroom/line/__init__.py", "", True),
        "waitroom.line.store": (
            "waitroom/line/store.py",
            "from typing import TYPE_CHECKING\n"
            "from waitroom.errors import ConfigError\n"
            "if TYPE_CHECKING:\n"
            "    from waitroom.gateway.app import create_app\n",
            False,
        ),
        "waitroom.room.door": (
            "waitroom/room/door.py",
            "def f():\n    from ..gateway import pages\n",
            False,
        ),
        "waitroom.gateway.pages": ("waitroom/gateway/pages.py", "", False),
        "waitroom.gateway.forward": (
            "waitroom/gateway/forward.py",
            "from waitroom.line import store\nimport lookup.admission\n",
            False,
        ),
        "waitroom.lookup.app": (
            "waitroom/lookup/app.py",
            "from waitroom.shared import assets\nimport waitroom.settings\n",
            False,
        ),
        "waitroom.cli": ("waitroom/cli.py", "import waitroom.lookup.app\n", False),
    }
    found = violations(sources)
    texts = [str(v) for v in found]
    assert len(found) == 4, texts
    assert texts[0].startswith(
        "waitroom/gateway/forward.py:2: waitroom.gateway.forward imports "
        "lookup.admission: there is no top-level lookup package"
    )
    assert texts[1] == (
        "waitroom/line/store.py:4: waitroom.line.store (line) imports waitroom.gateway.app "
        "(gateway); line may import errors, line, shared"
    )
    assert (
        "lookup/app.py:2: waitroom.lookup.app (lookup) imports waitroom.settings "
        "(settings)" in texts[2]
    )
    assert texts[3].startswith(
        "waitroom/room/door.py:2: waitroom.room.door (room) imports waitroom.gateway.pages "
        "(gateway)"
    )
    try:
        layer_of("waitroom.stray")
    except ValueError as exc:
        assert "waitroom.stray belongs to no layer" in str(exc)
    else:
        raise AssertionError("a module outside every layer went unnoticed")
