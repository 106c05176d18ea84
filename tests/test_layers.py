"""The package's modules form layers: each imports only the modules below it, so there is no import cycle.

Function-level imports count too (they hide cycles rather than remove them); only optional heavy third-party
packages may be imported inside functions."""
import ast
from pathlib import Path

import ddrepro

LAYERS = ["core", "data", "llm", "diffusion", "students", "describe", "zoo", "backbones", "minimax", "pools", "selection",
          "evaluate", "sas", "dsco", "concord", "rded", "patchsel", "d4m", "vlcp", "reports"]
PKG = Path(ddrepro.__file__).parent


def ddrepro_imports(path: Path) -> dict[str, list[int]]:
    "ddrepro modules imported anywhere in `path` → line numbers."
    out: dict[str, list[int]] = {}
    for n in ast.walk(ast.parse(path.read_text())):
        mods = []
        if isinstance(n, ast.ImportFrom) and n.module:
            parts = n.module.split(".")
            if n.level == 1: mods = [parts[0]]
            elif parts[0] == "ddrepro": mods = [parts[1]] if len(parts) > 1 else [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 1:
            mods = [a.name for a in n.names]
        elif isinstance(n, ast.Import):
            mods = [a.name.split(".")[1] for a in n.names if a.name.startswith("ddrepro.")]
        for m in mods:
            if m != path.stem and not m.startswith("_"): out.setdefault(m, []).append(n.lineno)
    return out


def import_graph() -> dict[str, dict[str, list[int]]]:
    return {p.stem: ddrepro_imports(p) for p in sorted(PKG.glob("*.py")) if not p.stem.startswith("_")}


def find_cycle(graph: dict[str, set]) -> list[str] | None:
    "One cycle of module names (first == last), or None."
    state: dict[str, int] = {}
    def visit(u, path):
        state[u] = 1
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1: return path[path.index(v):] + [v]
            if state.get(v) is None and (c := visit(v, path + [v])): return c
        state[u] = 2
        return None
    for u in sorted(graph):
        if state.get(u) is None and (c := visit(u, [u])): return c
    return None


def test_find_cycle_detects_a_hidden_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_module_has_a_layer():
    assert set(import_graph()) == set(LAYERS), "add the new module to LAYERS (and README's layer list)"


def test_no_import_cycle():
    g = {m: set(deps) for m, deps in import_graph().items()}
    assert find_cycle(g) is None, f"import cycle: {' -> '.join(find_cycle(g))}"


def test_layers_import_only_downward():
    rank = {m: i for i, m in enumerate(LAYERS)}
    bad = [f"{m} imports {d} (line {lines[0]})" for m, deps in import_graph().items() for d, lines in deps.items()
           if rank[d] >= rank[m]]
    assert not bad, "upward imports: " + "; ".join(bad)


def test_no_function_level_imports_of_ddrepro():
    "Only top-level imports between ddrepro modules: a function-level one is how cycles were hidden before."
    bad = []
    for p in sorted(PKG.glob("*.py")):
        if p.stem.startswith("_"): continue
        for fn in ast.walk(ast.parse(p.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            for n in ast.walk(fn):
                if isinstance(n, ast.ImportFrom) and ((n.module or "").startswith("ddrepro") or n.level):
                    bad.append(f"{p.name}:{n.lineno} in {fn.name}()")
    assert not bad, "function-level ddrepro imports: " + ", ".join(bad)
