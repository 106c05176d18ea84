"""Notebook hygiene: clean notebooks keep papermill's `parameters` tag, `-p` really reaches the run, and every
run notebook writes its RunRecord under the out_dir it was given."""
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
