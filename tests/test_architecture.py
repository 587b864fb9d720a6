"""The package's shape: no import circles, and no import from a lower layer to a higher one.

Imports are read from the source (every ``import``/``from`` statement, including those inside
functions and under ``TYPE_CHECKING``: a lazy import is still a dependency), so the check
needs no import of torch and cannot be fooled by import order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "realspo"

# Lowest first. A module may import from its own layer or lower ones, never from higher ones.
# The pipeline order is the architecture (docs/ARCHITECTURE.md).
LAYERS: list[set[str]] = [
    {"errors", "faults", "__init__"},
    {"config", "outputs", "output_lock", "output_paths", "processes", "sources", "schema", "models",
     "gguf", "toy_models"},
    {"conversations", "chat_format", "template_sandbox"},
    {"formats", "spo", "proving_ground", "served"},
    {"generation", "embeddings", "selection"},
    {"labels"},
    {"annotate"},
    {"training"},
    {"evaluation"},
    {"pipeline"},                         # select and rounds: pipelines that span stages
    {"arms"},                             # what the proving-ground experiments share
    {"demo", "grid", "leaderboard"},      # the experiments, one home each
    {"commands"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """The realspo modules ``path`` imports (``from a import b`` counts ``a.b`` if it is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("realspo"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith("realspo"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        graph[name] = {m for m in _imports(path, name) if m in paths and m != name}
    return graph


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(component: str) -> int:
    for i, layer in enumerate(LAYERS):
        if component in layer:
            return i
    raise AssertionError(f"realspo.{component} is in no layer of tests/test_architecture.py")


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_is_in_a_layer():
    for module in _graph():
        _layer(_component(module))


def test_no_import_circles_between_modules():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_import_circles_between_stages():
    graph = _graph()
    stages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = _component(module)
        stages.setdefault(here, set()).update(_component(t) for t in targets if _component(t) != here)
    cycle = _find_cycle({k: v & set(stages) for k, v in stages.items()})
    assert cycle is None, "stage circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(_graph()))
def test_no_import_from_a_higher_layer(module):
    here = _layer(_component(module))
    upward = sorted(t for t in _graph()[module] if _layer(_component(t)) > here)
    assert not upward, f"{module} (layer {here}) imports from higher layers: {upward}"


def test_the_checker_sees_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_package_is_drawn_in_the_architecture_doc():
    """The layers diagram of docs/ARCHITECTURE.md names every package (and nothing is left out of LAYERS)."""
    doc = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    diagram = doc.split("## Layers", 1)[1].split("```")[1]
    drawn = {word.strip(",") for word in diagram.split()} - {">"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    layered = set().union(*LAYERS) - {"__init__"}
    assert packages | modules <= drawn, f"not in the ARCHITECTURE.md layers: {sorted((packages | modules) - drawn)}"
    assert drawn <= layered, f"drawn but in no layer of LAYERS: {sorted(drawn - layered)}"


def test_modules_stay_small():
    """A file past ~400 lines is usually two ideas (docs/ARCHITECTURE.md)."""
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not big, f"modules over 400 lines: {big}"
