"""Notebook hygiene: clean notebooks keep papermill's `parameters` tag, `-p` really reaches the run, and every
run notebook writes its RunRecord under the out_dir it was given."""
import ast
import dataclasses
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
BIN = Path(sys.executable).parent
RUN_NOTEBOOKS = sorted(NBS.glob("run_*.ipynb"))


def _tags(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    return [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]


def test_settings_keep_cell_tags():
    ini = (ROOT / "settings.ini").read_text()
    assert "allowed_cell_metadata_keys = tags" in ini
    assert "tst_flags = gpu slow hub" in ini


@pytest.mark.parametrize("nb", RUN_NOTEBOOKS, ids=lambda p: p.name)
def test_run_notebook_has_one_parameters_cell_that_survives_nbdev_clean(nb, tmp_path):
    assert sum("parameters" in t for t in _tags(nb)) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
    copy = tmp_path / nb.name
    shutil.copy(nb, copy)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(copy)], cwd=ROOT, check=True, capture_output=True)
    assert sum("parameters" in t for t in _tags(copy)) == 1, "nbdev_clean stripped the parameters tag"


@pytest.mark.parametrize("nb", sorted(NBS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_clean(nb, tmp_path):
    """`nbdev_clean` is a no-op on every committed notebook (CI checks the same with git diff)."""
    copy = tmp_path / nb.name
    shutil.copy(nb, copy)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(copy)], cwd=ROOT, check=True, capture_output=True)
    assert copy.read_text() == nb.read_text(), f"{nb.name} is not clean: run nbdev_clean"


def test_papermill_p_overrides_reach_the_run_after_nbdev_clean(tmp_path):
    nb = tmp_path / "run_data.ipynb"
    shutil.copy(NBS / "run_data.ipynb", nb)
    subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(nb)], cwd=ROOT, check=True, capture_output=True)
    params = tmp_path / "p.yaml"
    params.write_text("ipc: 7\nseed: 2\n")
    out_dir = tmp_path / "run"
    r = subprocess.run([str(BIN / "papermill"), str(nb), str(tmp_path / "out.ipynb"), "-f", str(params),
                        "-p", "ipc", "3", "-p", "out_dir", str(out_dir), "--cwd", str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out_dir / "record.json").read_text())
    assert rec["params"]["ipc"] == 3          # -p wins over -f
    assert rec["params"]["seed"] == 2         # -f value used where no -p is given
    assert rec["status"] == "complete" and (out_dir / "sample_grid.png").exists()


# ------------------------------------------------------------- parameters cell ↔ config dataclass defaults
# One (run notebook, config dataclass) pair per line: the notebook's `parameters` cell must give every field of
# the dataclass it sets the dataclass's own default, so `papermill` without `-p` runs what the library documents.
PARAMETER_CONFIGS = [
    ("run_pool.ipynb", "ddrepro.pools:PoolConfig"),
    ("run_eval.ipynb", "ddrepro.evaluate:EvalRunConfig"),
    ("run_data.ipynb", "ddrepro.core:RunConfig"),
    ("run_sas.ipynb", "ddrepro.sas:SASConfig"),
    ("run_dsco.ipynb", "ddrepro.dsco:DsCoConfig"),
]


def parameters_cell(nb_path) -> dict:
    "The simple assignments `name = <literal>` of a notebook's papermill `parameters` cell, in order."
    nb = json.loads(Path(nb_path).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{Path(nb_path).name}: expected one cell tagged 'parameters', found {len(cells)}"
    out = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_parameters_cell_parser():
    p = parameters_cell(NBS / "run_pool.ipynb")
    assert list(p)[:3] == ["dataset", "generator", "ipc"] and p["cfg_scale"] == 4.0 and p["out_dir"] is None


def _same(a, b) -> bool:
    "Equal, and not only because True == 1 or 4 == 4.0 with a str/None on one side."
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)


@pytest.mark.parametrize("nb_name,config", PARAMETER_CONFIGS)
def test_parameters_cell_matches_config_defaults(nb_name, config):
    module, cls_name = config.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    params = parameters_cell(NBS / nb_name)
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING: defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING: defaults[f.name] = f.default_factory()
    shared = sorted(set(params) & set(defaults))
    assert len(shared) >= 5, f"{nb_name}: only {shared} of its parameters are fields of {cls_name}"
    wrong = [f"{nb_name}: parameter {k} = {params[k]!r} in the notebook, but {cls_name}.{k} defaults to {defaults[k]!r}"
             for k in shared if not _same(params[k], defaults[k])]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("nb_name,config", PARAMETER_CONFIGS)
def test_every_config_field_is_a_notebook_parameter(nb_name, config):
    "A field the config gains (e.g. through PoolSettings / EvalSettings) shows up in the notebook's parameters cell."
    module, cls_name = config.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    missing = sorted({f.name for f in dataclasses.fields(cls)} - {"method"} - set(parameters_cell(NBS / nb_name)))
    assert not missing, f"{nb_name}: {cls_name} fields {missing} are not in the parameters cell"


@pytest.mark.parametrize("nb", RUN_NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(nb):
    """papermill's own parser (`papermill --help-notebook`, the check behind "Passed unknown parameter") sees every
    assignment of the parameters cell; it skips a line whose comment holds a '=' and then warns on a valid `-p`."""
    import papermill
    assert sorted(papermill.inspect_notebook(str(nb))) == sorted(parameters_cell(nb))
