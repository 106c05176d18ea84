"""Helpers shared by the run-notebook tests (test_run_*.py): a notebook's code cells, the config class from its own
config cell (executed alone, as the notebook runs it), its papermill parameters cell, a papermill call, and the parameters a papermill command line injects (the grid tests)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = [str(Path(sys.executable).parent / "papermill")]


def code_cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def config_class(nb: Path, name: str):
    "The class `name` defined in exactly one code cell of `nb`, from that cell alone."
    src = [s for s in code_cells(nb) if f"class {name}" in s]
    assert len(src) == 1, f"{nb.name}: {len(src)} cells define {name}"
    ns = {"__name__": f"{nb.stem}_config"}
    exec(compile(src[0], f"{nb.name}:{name}", "exec"), ns)
    return ns[name]


def parameters(nb: Path) -> dict:
    "The literal values of the papermill `parameters` cell."
    cell = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cell) == 1
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(cell[0]["source"])).body
            if isinstance(n, ast.Assign)}


def papermill(nb: Path, tmp_path: Path, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    "papermill `nb` → tmp_path/out.ipynb in the repository root, offline and quiet."
    env = dict(os.environ, DDREPRO_PROGRESS="0", HF_HUB_OFFLINE="1")
    return subprocess.run(PAPERMILL + [str(nb), str(tmp_path / "out.ipynb"), "--cwd", str(ROOT), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def papermill_params(cmd: list[str]) -> dict:
    "The parameters papermill injects for `papermill_command(...)`: -f files, then -y values, then -p values (its CLI order)."
    from papermill.cli import _resolve_type
    from papermill.iorw import NoDatesSafeLoader, read_yaml_file
    args, files, yamls, ps, i = cmd[5:], [], [], [], 0
    while i < len(args):
        a = args[i]
        if a == "-f": files.append(args[i + 1]); i += 2
        elif a == "-y": yamls.append(args[i + 1]); i += 2
        elif a == "-p": ps.append((args[i + 1], args[i + 2])); i += 3
        elif a == "--cwd": i += 2
        else: raise AssertionError(f"unexpected papermill argument {a!r}")
    params = {}
    for f in files: params.update(read_yaml_file(f) or {})
    for y in yamls: params.update(yaml.load(y, Loader=NoDatesSafeLoader) or {})
    for k, v in ps: params[k] = _resolve_type(v)
    return params


def typed(v):
    if isinstance(v, dict): return {k: typed(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)): return [typed(x) for x in v]
    return (type(v).__name__, v)
