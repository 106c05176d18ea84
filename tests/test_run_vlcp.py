"""The VLCP / D4M run notebook: its config cell refuses bad parameters in milliseconds naming them, resolves each
method's settings (a run's value is its own method's; D4M beside VLCP keeps D4M's), its parameters cell and the
embedded params file agree with the config, it takes its pieces from the library, and (slow) an end-to-end papermill
smoke run on the embedded zoo with a tiny budget, resumed once."""
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from run_notebook import code_cells, config_class, papermill, parameters
from ddrepro.core import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "run_vlcp.ipynb"
UNUSED = "/tmp/ddrepro-unused"


@pytest.fixture(scope="module")
def Config():
    "The notebook's `VLCPRunConfig`, from its own cell (nothing else of the notebook executed)."
    return config_class(NB, "VLCPRunConfig")


@pytest.mark.parametrize("params,match", [
    (dict(method="sd"), r"method='sd': expected one of \['vlcp', 'd4m'\]"),
    (dict(dataset="imagewoof"), r"dataset='imagewoof': expected 'fashion_mnist' with a zoo backbone"),
    (dict(backbone="sdxl"), r"backbone='sdxl': expected 'zoo-attr'"),
    (dict(baselines=["random_real", "herding"]), r"baselines=\['random_real', 'herding'\]: expected a list of distinct names"),
    (dict(method="d4m", baselines=["d4m"]), r"no 'd4m' when method is 'd4m'"),
    (dict(method="d4m", baselines=["no_text"]), r"no 'no_text' when method is 'd4m'"),
    (dict(students=["vit"]), r"students=\['vit'\]: expected a non-empty list"),
    (dict(sampler="pndm"), r"sampler='pndm': expected 'ddim'"),
    (dict(contamination=0.7), r"contamination"),
    (dict(beta=1.5), r"beta=1.5: expected a document-frequency ratio"),
    (dict(kmeans="spectral"), r"kmeans='spectral'"),
    (dict(strength=1.0), r"strength=1.0: expected img2img strength in \(0, 1\)"),
    (dict(finetune="typo"), r"finetune='typo': expected one of"),
    (dict(method_overrides={"tempo": 1}), r"method_overrides \['tempo'\]: not fields of VLCPConfig"),
    (dict(val_split="fastai"), r"val_split='fastai': expected 'auto' for fashion_mnist"),
    (dict(synth_batch_size=0), r"synth_batch_size=0: expected an integer ≥ 1"),
    (dict(dataset="imagenette", backbone="sd-1.5", per_class=None), r"describer='zoo': expected 'llava-1.5-7b'"),
])
def test_bad_parameters_fail_in_milliseconds_naming_them(Config, params, match):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        config_from_dict(Config, dict(params, out_dir=UNUSED), source="notebook parameters")
    assert time.perf_counter() - t0 < 1


def test_each_method_gets_its_own_defaults_and_the_run_values_go_to_its_method(Config):
    cfg = Config(baselines=["random_real", "d4m"], guidance=12.0, out_dir=UNUSED)
    v, d = cfg.methods["vlcp"], cfg.methods["d4m"]
    assert (v.guidance, v.kmeans, v.contamination, v.finetune, v.strength_match) == (12.0, "kmeans", 0.1, "embedded", "alpha_bar")
    assert (d.guidance, d.kmeans, d.contamination) == (8.0, "minibatch", 0.0)          # the baseline keeps D4M's values
    assert (v.ipc, v.seed, v.strength) == (d.ipc, d.seed, d.strength)                   # ... and shares the prototype inputs
    c = Config(method="d4m", baselines=["random_real"], out_dir=UNUSED)
    assert list(c.methods) == ["d4m"] and c.methods["d4m"].guidance == 8.0
    paper = Config(dataset="imageidc", backbone="sd-1.5", describer="llava-1.5-7b", per_class=None, baselines=["random_real"],
                   out_dir=UNUSED).methods["vlcp"]
    assert (paper.contamination, paper.beta, paper.out_size, paper.finetune, paper.strength_match) == (0.1, 0.7, 256, "paper", "steps")


def test_parameters_cell_and_params_file_match_the_config(Config):
    params = parameters(NB)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Config)}
    assert set(params) == set(defaults)
    wrong = {k: (params[k], defaults[k]) for k in params if params[k] != defaults[k]}
    assert not wrong, wrong
    from ddrepro.core import load_yaml
    from ddrepro.reports import cell_run_params, load_table_spec, table_cells
    for name in ("run",):
        raw = load_yaml(ROOT / "params" / "vlcp" / "embedded" / f"{name}.yaml")
        unknown = set(raw) - set(params) - {"table"}
        assert not unknown, (name, unknown)
        spec = load_table_spec(f"vlcp/embedded/{name}")
        assert spec.notebook == "nbs/run_vlcp.ipynb"
        for cell in table_cells(spec):
            cfg = config_from_dict(Config, {**cell_run_params(spec, cell), "out_dir": UNUSED}, source=str(spec.path))
            assert cfg.methods[cfg.method].ipc == cell["ipc"] and cfg.backbone == "zoo-attr"


def test_run_vlcp_takes_its_pieces_from_the_library():
    code = "\n".join(code_cells(NB))
    for call in ("vlcp_distill(", "d4m_distill(", "finetune_text_unet(", "describe_dataset(", "load_descriptions(",
                 "prompt_agreement(", "evaluate_sets(", "paired_rows(", "paired_difference(", "random_real_subset(",
                 "make_pool(", "results_frame(", "load_text_backbone(", "plot_lof("):
        assert call in code, call
    for own in ("def train_student", "def evaluate", "KMeans(", "LocalOutlierFactor(", "def text_prototypes", "Counter("):
        assert own not in code, own


SMOKE = ["-p", "ipc", "2", "-p", "per_class", "30", "-p", "repeats", "2", "-p", "eval_workers", "1",
         "-y", "eval_overrides: {epochs: 1}\nbaselines: [random_real, dit, d4m, no_text]\nfinetune_overrides: {max_steps: 3}"]


@pytest.mark.slow
def test_run_vlcp_embedded_smoke_and_resume(tmp_path):
    from ddrepro.data import class_map, load_distilled
    out = tmp_path / "run"
    r = papermill(NB, tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete"
    assert set(rec["stages"]) >= {"preflight", "descriptions", "finetune", "vlcp", "d4m", "pool_dit", "diagnostics", "evaluate", "figures"}
    cm = class_map("fashion_mnist")
    for m in ("vlcp", "vlcp_no_text", "d4m"):
        s = load_distilled(out / m / "distilled", cm, 2, exact=True)
        assert s.images.shape == (20, 3, 32, 32)
    tp = json.loads((out / "vlcp" / "text_prototypes.json").read_text())
    assert set(tp["classes"]) == {str(c) for c in range(10)} and all(len(v) == 2 for v in tp["classes"].values())
    res = rec["results"]
    assert res["vlcp_lof"]["outliers"] == 30 and 0 <= res["vlcp_lof"]["teacher_acc_outliers"] <= 1      # 10 % of 30 per class
    pa = res["vlcp_prompt_agreement"]
    assert pa["n"] == 20 and 0 <= pa["exact"] <= 1 and set(pa["per_attribute"]) <= {"tone", "pattern", "width", "sleeves", "shaft", "handle"}
    rows = pd.DataFrame(res["rows"])
    assert list(rows.set) == ["VLCP", "VLCP w/o text", "D4M", "random real", "DiT"] and (rows.n_runs == 2).all()
    assert {"d4m", "vlcp_no_text"} == set(res["vlcp_vs"]) and "convnet" in res["vlcp_vs"]["d4m"]
    tp0 = json.loads((out / "vlcp_no_text" / "text_prototypes.json").read_text())     # the ablation: same prototypes, class prompt
    assert tp0["classes"] == tp["classes"] and tp0["text_prototype"] is False
    assert (out / "vlcp_sets.png").stat().st_size > 1000 and (out / "fig2_lof_0.png").stat().st_size > 1000
    r = papermill(NB, tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec2 = json.loads((out / "record.json").read_text())
    assert rec2["stages"]["finetune"].get("resumed") is True
    assert all(rec2["stages"][m]["generated"] == 0 for m in ("vlcp", "vlcp_no_text", "d4m"))      # the pools resume
    assert [r["finals"] for r in rec2["results"]["rows"]] == [r["finals"] for r in rec["results"]["rows"]]


@pytest.mark.slow
def test_run_vlcp_as_d4m(tmp_path):
    "`-p method d4m`: D4M alone (no descriptions, no fine-tune), beside random real images."
    from ddrepro.data import class_map, load_distilled
    out = tmp_path / "d4m"
    r = papermill(NB, tmp_path, "-p", "method", "d4m", "-p", "ipc", "2", "-p", "per_class", "20", "-p", "repeats", "1",
                  "-p", "eval_workers", "1", "-p", "figures", "False", "-y", "eval_overrides: {epochs: 1}\nbaselines: [random_real]",
                  "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and "d4m" in rec["stages"]
    assert not {"descriptions", "finetune", "vlcp"} & set(rec["stages"])
    assert load_distilled(out / "d4m" / "distilled", class_map("fashion_mnist"), 2, exact=True).images.shape == (20, 3, 32, 32)
    d4m = json.loads((out / "d4m" / "d4m.json").read_text())["config"]
    assert (d4m["kmeans"], d4m["contamination"], d4m["guidance"]) == ("minibatch", 0.0, 8.0)
    assert [r["set"] for r in rec["results"]["rows"]] == ["D4M", "random real"]
