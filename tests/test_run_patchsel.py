"""The patch-selection run notebook: its config cell refuses bad parameters in milliseconds, its parameters cell and
params file agree with the config, it takes its pieces from the library, and (slow) an end-to-end papermill smoke run
on the embedded zoo with a tiny budget, resumed once."""
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from run_notebook import code_cells, config_class, papermill, parameters
from ddrepro.core import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "run_patchsel.ipynb"
UNUSED = "/tmp/ddrepro-unused"


def _code_cells() -> list[str]:
    return code_cells(NB)


@pytest.fixture(scope="module")
def Config():
    "The notebook's `PatchselRunConfig`, from its own cell (run here as the notebook runs it, nothing else executed)."
    return config_class(NB, "PatchselRunConfig")


def _parameters() -> dict:
    return parameters(NB)


def _papermill(tmp_path, *args, timeout=900):
    return papermill(NB, tmp_path, *args, timeout=timeout)


@pytest.mark.parametrize("params,match", [
    (dict(methods=["dps", "sre2l"]), r"methods=\['dps', 'sre2l'\]: expected a non-empty list of distinct names"),
    (dict(score_sign="minus"), r"score_sign='minus': expected 'neg'"),
    (dict(n_draws=0), r"n_draws=0: expected a positive integer"),
    (dict(t_lo=0.8), r"t_range=\(0.8, 0.7\): expected 0 ≤ lo < hi ≤ 1"),
    (dict(dift_t=1000), r"dift_t=1000: expected an integer timestep"),
    (dict(per_class=5), r"mipc=5 real images per class give at most 5 key patches"),
    (dict(rded_factor=0), r"rded_factor=0: expected an integer ≥ 1"),
    (dict(students=["vit"]), r"students=\['vit'\]: expected a non-empty list"),
    (dict(observer="resnet"), r"observer='resnet': expected 'teacher'"),
    (dict(dataset="imagewoof"), r"dataset='imagewoof': expected 'fashion_mnist' with backbone 'zoo'"),
    (dict(dataset="imagewoof", backbone="sd-1.5", teacher=None), r"teacher=None: expected a teacher for imagewoof"),
    (dict(backbone="sdxl"), r"backbone='sdxl': expected 'zoo', a hub name"),
    (dict(cluster_features="sift"), r"cluster_features='sift': expected one of"),
    (dict(cluster_features="clip", clip_encoder="clip-xxl"), r"clip_encoder='clip-xxl'"),
    (dict(dps_overrides={"windw": 3}), r"dps_overrides=\{'windw': 3\}: expected fields of DPSConfig"),
    (dict(val_split="fastai"), r"val_split='fastai': expected 'auto' for fashion_mnist"),
    (dict(figure_classes=[0, 10]), r"figure_classes=\[0, 10\]: expected class indices 0..9 or class names of fashion_mnist"),
    (dict(figure_classes="Bag"), r"figure_classes='Bag': expected None or a non-empty list"),
    (dict(focus_class="Sandals"), r"focus_class='Sandals': expected class indices 0..9 or class names of fashion_mnist \('Sandals' is not one\)"),
    (dict(compare_sets={"Minimax": "/nonexistent/minimax"}), r"compare_sets\['Minimax'\]='/nonexistent/minimax': expected a distilled-set folder"),
    (dict(figures="yes"), r"parameter figures='yes' is not a valid bool"),
])
def test_bad_parameters_fail_in_milliseconds_naming_them(Config, params, match):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        config_from_dict(Config, dict(params, out_dir=UNUSED), source="notebook parameters")
    assert time.perf_counter() - t0 < 1


def test_parameters_cell_and_params_file_match_the_config(Config):
    params = _parameters()
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Config)}
    assert set(params) == set(defaults) - {"method"}
    wrong = {k: (params[k], defaults[k]) for k in params if k in defaults and params[k] != defaults[k]}
    assert not wrong, wrong
    from ddrepro.core import load_yaml
    from ddrepro.reports import cell_run_params, load_table_spec, table_cells
    run = load_yaml(ROOT / "params" / "patchsel" / "embedded" / "run.yaml")
    assert {k: v for k, v in run.items() if k != "table"} == {k: v for k, v in params.items() if k in run}
    spec = load_table_spec("patchsel/embedded/run")
    assert spec.notebook == "nbs/run_patchsel.ipynb" and spec.grid == {"ipc": [10, 50]}
    for cell in table_cells(spec):
        cfg = config_from_dict(Config, {**cell_run_params(spec, cell), "out_dir": UNUSED}, source=str(spec.path))
        assert cfg.dps.ipc == cell["ipc"] and cfg.rded.ipc == cell["ipc"] and cfg.dps.assembly_for(32) == "whole"


def test_paper_scale_config_takes_the_papers_settings(Config):
    paper = dict(dataset="imagewoof", backbone="sd-1.5", teacher="/ckpt/resnet18_woof.pth", teacher_arch="resnet18",
                 dift_block=1, rded_factor=2, rded_crop_scale=[0.08, 1.0], out_dir=UNUSED)
    d = Config(**paper).dps
    assert (d.label_prompt, d.null_prompt, d.window, d.stride, d.short_side, d.out_size) == ("An image of {}", "An image of .", 224, 8, 256, 224)
    assert d.assembly_for(256) == "stitch" and Config(**dict(paper, ipc=50)).dps.assembly_for(256) == "single"
    r = Config(**paper).rded
    assert r.factor == 2 and r.out_size == 224 and r.crop_scale == (0.08, 1.0)


def test_run_patchsel_takes_its_pieces_from_the_library():
    code = "\n".join(_code_cells())
    for call in ("dps_distill(", "rded_distill(", "write_distilled(", "sign_check(", "evaluate_sets(", "paired_rows(",
                 "paired_difference(", "random_real_subset(", "results_frame(", "load_text_backbone(", "load_teacher("):
        assert call in code, call
    for own in ("def train_student", "def evaluate", "def paired", "denoising_error(", "KMeans", "def stitch"):
        assert own not in code, own


SMOKE = ["-p", "ipc", "2", "-p", "per_class", "12", "-p", "n_draws", "2", "-p", "dift_ensemble", "1", "-p", "n_clusters",
         "4", "-p", "repeats", "2", "-p", "eval_workers", "1", "-y", "eval_overrides: {epochs: 1}"]


@pytest.mark.slow
def test_run_patchsel_embedded_smoke_and_resume(tmp_path):
    from ddrepro.data import class_map, load_distilled
    out = tmp_path / "run"
    r = _papermill(tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and set(rec["stages"]) >= {"preflight", "dps", "rded", "diagnostics", "evaluate", "figures"}
    cm = class_map("fashion_mnist")
    for m in ("dps", "rded"):
        s = load_distilled(out / m / "distilled", cm, 2, exact=True)
        assert s.images.shape == (20, 3, 32, 32)
        sel = json.loads((out / m / "distilled" / "selection.json").read_text())
        assert sel["selector"] == m and sel["ipc"] == 2
    cand = pd.read_csv(out / "dps" / "candidates.csv")
    assert len(cand) == 120 and cand.is_selected.sum() == 20 and {"score", "cluster", "cluster_rank"} <= set(cand)
    sc = rec["results"]["sign_check"]
    assert len(sc["rho"]) == 10 and -1 <= sc["mean_rho"] <= 1
    rows = pd.DataFrame(rec["results"]["rows"])
    assert list(rows.set) == ["DPS", "RDED", "random real"] and (rows.n_runs == 2).all()
    assert rows.delta_vs.eq("random").all() and "convnet" in rec["results"]["dps_vs_rded"]
    for f in ("fig5_sets.png", "fig4_rded_vs_dps.png", "fig11_dps_set.png", "fig15_dps_3.png", "fig3_clusters_3.png", "fig10_tsne.png"):
        assert (out / f).stat().st_size > 1000, f
    assert rec["stages"]["figures"]["status"] == "done" and len(rec["stages"]["figures"]["figures"]) == 7
    r = _papermill(tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec2 = json.loads((out / "record.json").read_text())
    assert rec2["stages"]["dps"].get("resumed") is True and rec2["stages"]["rded"].get("resumed") is True
    assert [r["finals"] for r in rec2["results"]["rows"]] == [r["finals"] for r in rec["results"]["rows"]]
    # another IPC: Stages I-II come from the ranking cache (IPC-independent), and the selection matches the first run's order
    r = _papermill(tmp_path, *SMOKE, "-p", "ipc", "1", "-y", "methods: [dps]", "-p", "out_dir", str(tmp_path / "run1"))
    assert r.returncode == 0, r.stderr[-4000:]
    rec3 = json.loads((tmp_path / "run1" / "record.json").read_text())
    assert rec3["stages"]["dps"]["rankings_cached"] is True
    c1 = pd.read_csv(tmp_path / "run1" / "dps" / "candidates.csv")
    assert (c1.score.to_numpy() == cand.score.to_numpy()).all() and c1.is_selected.sum() == 10
    # a Stage II setting changed (M = 3): Stage I's candidates come from its cache, Stage II runs again
    r = _papermill(tmp_path, *SMOKE, "-p", "ipc", "1", "-p", "n_clusters", "3", "-y", "methods: [dps]", "-p", "out_dir",
                   str(tmp_path / "run2"))
    assert r.returncode == 0, r.stderr[-4000:]
    st4 = json.loads((tmp_path / "run2" / "record.json").read_text())["stages"]["dps"]
    assert st4["stage1_cached"] is True           # (its Stage II may be cached too by an earlier run of this test)
    c2 = pd.read_csv(tmp_path / "run2" / "dps" / "candidates.csv")
    assert (c2.score.to_numpy() == cand.score.to_numpy()).all() and c2.cluster.max() == 2
