"""The SAS run notebook end to end through papermill (embedded zoo, tiny budget), and its fail-fast preflight
at paper scale when ImageWoof / the checkpoints are absent."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ddrepro.data import class_map, load_distilled

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = [str(Path(sys.executable).parent / "papermill")]


def _papermill(tmp_path, *args, timeout=900):
    env = dict(os.environ, DDREPRO_PROGRESS="0", HF_HUB_OFFLINE="1")
    return subprocess.run(PAPERMILL + [str(ROOT / "nbs" / "run_sas.ipynb"), str(tmp_path / "out.ipynb"), "--cwd", str(ROOT), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_run_sas_embedded_smoke(tmp_path):
    out = tmp_path / "run"
    r = _papermill(tmp_path, "-p", "ipc", "2", "-p", "pool", "dit", "-p", "pool_factor", "2", "-p", "repeats", "1",
                   "-p", "num_steps", "5", "-p", "pool_dir", str(tmp_path / "pool"), "-p", "out_dir", str(out),
                   "-p", "figures", "False", "-y", "baselines: [first_pool, random_pool, random_real]", "-y", "eval_overrides: {epochs: 2}",
                   "-p", "selection_draws", "2", "-p", "diagnostics_draws", "5")
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and rec["params"]["ipc"] == 2
    assert set(rec["stages"]) >= {"preflight", "pool", "embed", "select", "diagnostics", "evaluate"}
    # selection-level diagnostics: the selection, 5 random draws, rejected, pool, real reference, with the zoo teacher
    d = rec["results"]["diagnostics"]
    assert d["teacher"] == "zoo" and d["draws"] == 5 and d["selection"]["n"] == 20 and d["rejected"]["n"] == 20
    assert d["reference"]["n"] == 40 and 0 <= d["selection"]["teacher_acc"] <= 1 and d["selection"]["spread"] > 0
    assert "z(teacher accuracy)" in (tmp_path / "out.ipynb").read_text()
    rows = pd.DataFrame(rec["results"]["rows"])
    assert sorted(zip(rows.method, rows.selector)) == [("dit", ""), ("dit", "A"), ("dit", "A"), ("dit", "sas"), ("random", "")]
    assert sorted(rows["draw"].dropna().astype(int)) == [0, 1]             # two random-from-pool draws, selection seeds 0, 1
    assert (rows.delta_vs == "dit/A").all()                                   # every row paired against random from the pool
    # one run each on the 10 000 Fashion-MNIST test images: every accuracy is a count over them
    assert (rows.n_runs == 1).all() and (rows.ipc == 2).all()
    assert ((rows.acc_final_mean * 10000 - (rows.acc_final_mean * 10000).round()).abs() < 1e-3).all()   # float32-stored
    # exactly IPC images per class, readable as a distilled set, with the score table beside them
    assert load_distilled(out / "distilled", class_map("fashion_mnist"), 2, exact=True).per_class() == [2] * 10
    scores = pd.read_csv(out / "distilled" / "scores.csv")
    assert len(scores) == 40 and scores.is_selected.sum() == 20
    assert list(scores.columns[:4]) == ["class", "file", "label", "pool_index"] and "s_margin" in scores
    assert (out / "distilled" / "embeddings.npz").exists()
    meta = json.loads((out / "distilled" / "selection.json").read_text())
    assert meta["selector"] == "sas" and meta["ipc"] == 2 and meta["selected"] == scores.pool_index[scores.is_selected == 1].tolist()
    assert {"generator/dit", "generator/vae", "encoder/clip", "pool"} <= set(rec["assets"])


def test_run_sas_paper_params_fail_fast_without_imagewoof(tmp_path):
    r = _papermill(tmp_path, "-f", str(ROOT / "params/sas/table1_imagewoof.yaml"), "-p", "ipc", "50",
                   "-p", "out_dir", str(tmp_path / "run"), timeout=300)
    assert r.returncode != 0
    msg = r.stderr + r.stdout
    assert "DataError: imagewoof: no" in msg and "-p data_root" in msg
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert rec["stages"]["preflight"]["status"].startswith("failed: DataError")
    assert set(rec["stages"]) == {"preflight"}                  # nothing heavy started: no pool, no embedding
    assert not (tmp_path / "run" / "distilled").exists()


def test_bad_encoder_name_fails_in_seconds_naming_encoder():
    import time
    from ddrepro.core import ConfigError
    from ddrepro.sas import SASConfig
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"encoder='clip-xxl': expected 'zoo'"):
        SASConfig(encoder="clip-xxl", out_dir="/tmp/ddrepro-unused")
    assert time.perf_counter() - t0 < 5


def test_run_sas_rejects_a_typo_in_the_config_cell(tmp_path):
    # `-p encoder clip-xxl` used to surface only after the (embedded, ~85 s) Minimax fine-tune in the preflight;
    # now the config cell rejects it before the run record, the pool or the fine-tune start
    out = tmp_path / "run"
    r = _papermill(tmp_path, "-p", "encoder", "clip-xxl", "-p", "pool_dir", str(tmp_path / "pool"), "-p", "out_dir", str(out),
                   timeout=300)
    assert r.returncode != 0
    msg = r.stderr + r.stdout
    assert "ConfigError: encoder='clip-xxl'" in msg
    assert not (out / "record.json").exists() and not (tmp_path / "pool").exists()
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    failed = [c for c in nb["cells"] if c["cell_type"] == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "config_from_namespace(SASConfig" in "".join(failed[0]["source"])


def test_table1_params_evaluate_kcenter_and_full_data_and_cite_idc():
    from ddrepro.core import config_from_namespace
    from ddrepro.reports import cell_run_params, load_table_spec, table_cells
    from ddrepro.sas import SASConfig
    spec = load_table_spec("sas/table1_imagewoof")
    cfg = config_from_namespace(SASConfig, {**cell_run_params(spec, table_cells(spec)[0]), "out_dir": "/tmp/ddrepro-unused"})
    assert {"kcenter_pool", "full_data", "first_pool", "random_real"} <= set(cfg.baselines)
    assert {"method": "idc"} in spec.cited and {"method": "kcenter"} in spec.cited
    emb = load_table_spec("sas/embedded/table1")
    cfg = config_from_namespace(SASConfig, {**cell_run_params(emb, table_cells(emb)[0]), "out_dir": "/tmp/ddrepro-unused"})
    assert "kcenter_pool" in cfg.baselines and "full_data" not in cfg.baselines      # 60k images: opt-in on the CPU
    assert "full_data" not in SASConfig(out_dir="/tmp/ddrepro-unused").baselines


def test_run_sas_passes_mixed_norm_and_builds_baselines_through_the_library():
    nb = json.loads((ROOT / "nbs" / "run_sas.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "norm=cfg.mixed_norm" in code and "pool_baselines(cfg.baselines" in code and "describe_rows(rows" in code
    assert '"full_data" in cfg.baselines' in code and "evaluate_set(" not in code.replace("evaluate_sets(", "")   # one evaluator
