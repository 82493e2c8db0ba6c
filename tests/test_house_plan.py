"""The house plan, checked: module and function sizes, imports that run one way, one file writer.

The layers, lowest first (README "Code map", docs/architecture.md): the top-level base modules
(errors, config, seeds, files), then data -> protocol -> models -> runs -> cv / tune / blending ->
submission -> report -> api. A module may import its own layer and any layer below it; within
the cv / tune / blending layer tune and blending may use cv (the fold loop, the depth estimate),
never the other way.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "recsys_kit"
LAYER = {"errors": 0, "config": 0, "seeds": 0, "files": 0, "data": 1, "protocol": 2, "models": 3, "runs": 4,
         "cv": 5, "tune": 6, "blending": 6, "submission": 7, "report": 8, "api": 9}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(recsys_kit module, line, at module level) for every import of the library in a file."""
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recsys_kit"):
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "recsys_kit" \
                else [node.module]
            found += [(name, node.lineno, id(node) in top_level) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names
                      if alias.name.startswith("recsys_kit")]
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


@pytest.mark.parametrize("path", python_files("recsys_kit", "cli"), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_imports_run_one_way():
    wrong = []
    for path in python_files("recsys_kit"):
        here = module_name(path)
        own = layer_of(here)
        if own is None:
            continue
        for target, line, _ in imported_modules(ast.parse(path.read_text())):
            theirs = layer_of(target)
            same_stage = target.split(".")[1] == here.split(".")[1]
            allowed = (theirs is None or theirs < own or same_stage or theirs == own == 0 or
                       (here.split(".")[1] in ("tune", "blending") and target.split(".")[1] == "cv"))
            if not allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_circle():
    """Module-level imports between library modules form no cycle (lazy imports inside functions
    are what keeps `kit --help` light, and are checked by the layer order above)."""
    modules = {module_name(p): p for p in python_files("recsys_kit")}
    edges = {}
    for name, path in modules.items():
        targets = {t for t, _, top in imported_modules(ast.parse(path.read_text())) if top}
        edges[name] = {t for t in targets if t in modules and t != name}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in edges[node]:
            assert state.get(target) != 1, "import circle: " + " -> ".join(trail + [node, target])
            if target not in state:
                visit(target, trail + [node])
        state[node] = 2

    for name in modules:
        if name not in state:
            visit(name, [])


def test_one_writer_renames_files():
    """Temporary-then-rename lives in recsys_kit/files.py only: no other module calls os.replace,
    os.rename or Path.rename, or spells a temporary name of its own."""
    writer = LIBRARY / "files.py"
    found = []
    for path in python_files("recsys_kit", "cli"):
        if path == writer:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} os.{node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "rename":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .rename()")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ".tmp" in node.value:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, "files written outside recsys_kit.files:\n" + "\n".join(found)


def test_top_level_holds_only_the_base_modules():
    modules = sorted(p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__")
    assert modules == ["api", "config", "errors", "files", "seeds"]
    for package in (p for p in LIBRARY.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 10, f"{package.name}/__init__.py says what it owns"
