"""Pieces shared by the table-grid tests (test_*_grids.py): a method's table specs, a cell's run parameters, a paper
CSV; the generic checks — a paper CSV's long format, the params files' keys against the run notebook's parameters, a
paper-scale file's link to its paper CSV, the values papermill hands the notebook, the weights of the DiT / Minimax
pools — and one cell's run through papermill, offline against fake data folders, up to its failing preflight."""
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ddrepro.core import project_root
from ddrepro.data import IMAGENET_VAL_PER_CLASS, class_map, save_image_set
from ddrepro.evaluate import EvalConfig
from ddrepro.pools import pool_sources
from ddrepro.reports import cell_dir, cell_run_params, papermill_command, table_cells, table_specs
from run_notebook import PAPERMILL, papermill_params, parameters, typed


def method_specs(prefix: str):
    "(every table spec whose name starts with `prefix`, e.g. 'vlcp/'; the paper-scale ones (not embedded); {name: spec})."
    files = [s for s in table_specs() if s.name.startswith(prefix)]
    return files, [s for s in files if "/embedded/" not in s.name], {s.name: s for s in files}


def cell_params(tab, cell, out_root) -> dict:
    "Every parameter one cell's run gets (`cell_run_params`), its out_dir the cell's folder under `out_root`."
    return {**cell_run_params(tab, cell), "out_dir": str(cell_dir(tab, cell, out_root))}


def cells(tab, out_root) -> list[tuple[dict, dict]]:
    "(cell, its run parameters) for every cell of `tab` (see `cell_params`)."
    return [(cell, cell_params(tab, cell, out_root)) for cell in table_cells(tab)]


def _paper_path(name: str) -> Path:
    return project_root() / ("" if "/" in name else "params/paper") / name


def paper_csv(name: str) -> pd.DataFrame:
    "A paper-numbers CSV, all strings, blanks '': params/paper/<name>, or a spec's `paper` path (relative to the root)."
    return pd.read_csv(_paper_path(name), dtype=str).fillna("")


def check_long_format_csv(name: str, head: list, tables: set, datasets: set, sources: set | None = None,
                          blank_std: bool = False) -> pd.DataFrame:
    """A paper-numbers CSV (`paper_csv`'s `name`) is long format: exactly the columns `head`; exactly the values `tables`,
    `datasets` (and `sources`, where given) in its table, dataset (and source) columns; every mean a percentage, every std
    in [0, 10) (or blank, where `blank_std`); one line per cell (no two alike but in table, source, mean and std).
    Returns it as `paper_csv` does."""
    raw = pd.read_csv(_paper_path(name), dtype=str)
    assert list(raw.columns) == head, name
    p = raw.fillna("")
    assert set(p["table"]) == tables and set(p["dataset"]) == datasets, name
    assert sources is None or set(p["source"]) == sources, name
    assert p["mean"].map(lambda v: 0 < float(v) < 100).all(), name
    assert p["std"].map(lambda v: (blank_std and v == "") or 0 <= float(v) < 10).all(), name
    keys = [c for c in head if c not in ("table", "source", "mean", "std")]
    assert not p.duplicated(keys).any(), f"{name}: two lines for one cell"
    return p


def check_known_parameters(nb: Path, known: set, skip_missing: bool = True):
    "`known` is exactly the parameters of the run notebook `nb`'s papermill parameters cell (skips if `nb` is missing)."
    if skip_missing and not nb.exists(): pytest.skip(f"nbs/{nb.name} is missing (the run notebook)")
    assert set(parameters(nb)) == known, f"update KNOWN_PARAMS: {sorted(set(parameters(nb)) ^ known)}"


def check_run_parameters(tab, known: set, out_root, **overrides):
    """No key of `tab` — its base, grid, cell_params rules (which never set a grid key) and every cell's resolved
    parameters — is outside `known` (the run notebook's config cell would silently ignore it), and the keys of each
    cell's `eval_overrides` (and of every `<name>=<config class>` in `overrides`) are fields of EvalConfig (that class)."""
    where = f"{tab.name}: not {Path(tab.notebook).stem} parameters"
    assert set(tab.base) <= known, f"{where}: {sorted(set(tab.base) - known)}"
    assert set(tab.grid) <= known, f"{where}: {sorted(set(tab.grid) - known)}"
    for rule in tab.cell_params:
        assert set(rule["set"]) <= known and not set(rule["set"]) & set(tab.grid), tab.name
    for cell, p in cells(tab, out_root):
        assert set(p) <= known, cell
        for key, cls in {"eval_overrides": EvalConfig, **overrides}.items():
            assert set(p.get(key, {})) <= {f.name for f in dataclasses.fields(cls)}, (cell, key)


def check_paper_csv_link(spec, csv: str | None) -> bool:
    """A paper-scale spec's `paper` is params/paper/<csv> (None where `csv` is None), an existing file, matched by
    `paper_match` (non-empty) on keys of the table. Returns whether the spec has a paper CSV."""
    assert spec.paper == (f"params/paper/{csv}" if csv else None), spec.name
    if csv:
        assert (project_root() / spec.paper).exists() and spec.paper_match, spec.name
        assert set(spec.paper_match) <= set(spec.rows) | set(spec.cols), f"{spec.name}: paper_match keys must be table keys"
    return bool(csv)


def check_papermill_values(tab, out_root):
    "Every cell's -f / -p / -y values reach the notebook, through papermill's own parsing, as its run parameters, typed."
    for cell, p in cells(tab, out_root):
        via = papermill_params(papermill_command(tab, cell, cell_dir(tab, cell, out_root)))
        via.pop("table", None)                       # the -f file's table: section (the config cell ignores it)
        assert typed(via) == typed(p), f"{tab.name} {cell}"


def check_pool_weights(p: dict, pools, where):
    """The DiT / Minimax pools among `pools` sample, for run parameters `p`, the right weights (names only, nothing
    loaded): DiT the public DiT-XL/2, Minimax a fine-tune of it on the cell's dataset; both decode with sd-vae-ft-mse."""
    for pool in [x for x in ("dit", "minimax") if x in pools]:
        src = pool_sources(pool, p["dataset"], p.get(f"{pool}_weights"), p.get("pool_vae"), pool_param=f"{pool}_weights")
        if pool == "dit":
            assert (src["weights_kind"], src["weights"]) == ("hub", "DiT-XL-2-256"), where
        else:
            assert src["weights_kind"] == "local" and f"/{p['dataset']}_DiT-XL-2-256" in f"/{src['weights']}", where
        assert src["vae"] == "sd-vae-ft-mse", where                                  # Minimax sample.py's decoder


def fake_image_folders(root: Path, train: str, train_per_class: int = 1, val: str | None = None):
    """The folder layout a preflight checks, no real image: train/<wnid>/ with `train_per_class` tiny PNGs per class of
    dataset `train`, val/<wnid>/ with ImageNet's 50 per class of `val` (default `train`; val_split imagenet_val50 checks
    the count). Returns the class map of `train`."""
    for split, name, n in (("train", train, train_per_class), ("val", val or train, IMAGENET_VAL_PER_CLASS)):
        cm = class_map(name)
        y = torch.arange(len(cm)).repeat_interleave(n)
        save_image_set(torch.zeros(len(y), 3, 8, 8, dtype=torch.uint8), y, root / split, cm)
    return class_map(train)


def run_until_preflight(tab, cell, data_root: Path, tmp_path: Path, *args: str, timeout: int = 300):
    """One cell's papermill command (`papermill_command`, with this venv's papermill) plus `-p data_root <data_root>` and
    `args`, into tmp_path/run (made first, as run_table does), in the repository root: offline, quiet, no DDREPRO_DATA, the
    Hugging Face and torch hub caches empty folders under tmp_path. Returns (the CompletedProcess, the run's
    record.json or None where it wrote none, seconds taken)."""
    out = tmp_path / "run"
    out.mkdir()
    cmd = [*PAPERMILL, *papermill_command(tab, cell, out)[3:], "-p", "data_root", str(data_root), *args]
    env = {k: v for k, v in os.environ.items() if k != "DDREPRO_DATA"}
    env.update(HF_HUB_OFFLINE="1", DDREPRO_PROGRESS="0", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=project_root())
    rec = out / "record.json"
    return r, (json.loads(rec.read_text()) if rec.exists() else None), time.perf_counter() - t0


def check_stopped_in_preflight(r: subprocess.CompletedProcess, rec: dict | None, *named: str):
    "The run failed, its log holds every string of `named`, and its record's one stage is the preflight, failed on an AssetError."
    log = r.stdout + r.stderr
    assert r.returncode != 0
    assert all(n in log for n in named), log[-3000:]
    assert rec is not None, "no record.json"
    assert list(rec["stages"]) == ["preflight"] and rec["stages"]["preflight"]["status"].startswith("failed: AssetError")
