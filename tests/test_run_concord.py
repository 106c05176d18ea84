"""The CONCORD run notebook: its config cell refuses bad parameters in milliseconds (before the record, the data or the
zoo), its parameters cell, params file and table spec agree with the config, it takes its pieces from the library, and
(slow) an end-to-end papermill smoke run on the embedded zoo with a tiny budget, resumed once."""
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from run_notebook import code_cells, config_class, papermill, parameters
from ddrepro.core import ConfigError, DataError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "run_concord.ipynb"
UNUSED = "/tmp/ddrepro-unused"


def _code_cells() -> list[str]:
    return code_cells(NB)


@pytest.fixture(scope="module")
def Config():
    "The notebook's `ConcordRunConfig`, from its own cell (run here as the notebook runs it, nothing else executed)."
    return config_class(NB, "ConcordRunConfig")


def _parameters() -> dict:
    return parameters(NB)


def _papermill(tmp_path, *args, timeout=900):
    return papermill(NB, tmp_path, *args, timeout=timeout)


# ------------------------------------------------------------------ bad parameters: refused by the config cell
@pytest.mark.parametrize("params,error,match", [
    (dict(bases=["minimax", "sdxl"]), ConfigError, r"bases=\['minimax', 'sdxl'\]: expected a non-empty list of distinct names from \['minimax', 'dit', 'unclip'\]"),
    (dict(bases=[]), ConfigError, r"bases=\[\]: expected a non-empty list"),
    (dict(lam="abc"), ConfigError, r"parameter lam='abc' is not a valid float"),
    (dict(lam=float("nan")), ConfigError, r"lam=nan: expected a finite number, the informing weight λ of Eq. 9"),
    (dict(ipc=0), ConfigError, r"ipc=0: expected an integer ≥ 1"),
    (dict(n_neg=10), ConfigError, r"n_neg=10: expected an integer 0..9: each negative concept comes from a different class"),
    (dict(n_neg=-1), ConfigError, r"n_neg=-1: expected an integer 0..9"),
    (dict(concepts="/nonexistent/concepts.json"), DataError, r"concepts='/nonexistent/concepts.json': no concept file at /nonexistent/concepts.json"),
    (dict(tau=0), ConfigError, r"tau=0.0: expected None .* or a positive temperature"),
    (dict(positives="names"), ConfigError, r"positives='names': expected one of \['concepts', 'class_name'\]"),
    (dict(positives="class_name"), ConfigError, r"positives='class_name': expected 'concepts' unless objective is 'cosine'"),
    (dict(neg_mode="hardest"), ConfigError, r"neg_mode='hardest': expected one of \['random', 'similar', 'weighted'\]"),
    (dict(unclip="zoo-attr"), ConfigError, r"unclip='zoo-attr': expected an image-conditioned backbone"),
    (dict(encoder="clip-xxl"), ConfigError, r"encoder='clip-xxl'"),
    (dict(train_batch_size="big"), ConfigError, r"train_batch_size='big': expected 'ipc'"),
    (dict(eval_overrides={"batch_size": 8}), ConfigError, r"set the students' mini-batch with train_batch_size"),
    (dict(dataset="imagewoof"), ConfigError, r"dataset='imagewoof': expected 'fashion_mnist'"),
    (dict(students=["vit"]), ConfigError, r"students=\['vit'\]: expected a non-empty list of student names"),
    (dict(objective="classify"), ConfigError, r"objective='classify': expected one of \['contrastive', 'cosine', 'classifier', 'combination'\]"),
    (dict(objective="classifier", guidance_classifier="none"), ConfigError, r"guidance_classifier='none': expected 'zoo'"),
    (dict(cls_weight=float("inf")), ConfigError, r"cls_weight=inf: expected a finite classifier-guidance weight"),
    (dict(concept_prompt="menon"), ConfigError, r"concept_prompt='menon': expected one of \['concord', 'classification'\]"),
    (dict(concept_prompt="classification"), ConfigError, r"concept_prompt='classification': expected 'concord' unless -p llm"),
])
def test_bad_parameters_fail_in_milliseconds_naming_them(Config, params, error, match):
    t0 = time.perf_counter()
    with pytest.raises(error, match=match):
        config_from_dict(Config, dict(params, out_dir=UNUSED), source="notebook parameters")
    assert time.perf_counter() - t0 < 1


def test_the_missing_default_concept_file_is_named(Config, tmp_path, monkeypatch):
    "Without `concepts`, the dataset's file under params/concord/concepts/ is required, and a missing one is named."
    import ddrepro.concord as concord
    monkeypatch.setattr(concord, "project_root", lambda: tmp_path)
    with pytest.raises(DataError, match=r"concepts=None: no concept file at .*params/concord/concepts/fashion_mnist.json"):
        Config(out_dir=UNUSED)


def test_good_parameters_and_the_batch_choice(Config):
    cfg = Config(out_dir=UNUSED)
    assert cfg.train_batch() == 10 and cfg.eval_kwargs()["batch_size"] == 10            # the paper: mini-batch = IPC
    assert cfg.eval_kwargs()["protocol"] == "soft" and cfg.eval_kwargs()["teacher"] == "zoo"
    assert Config(ipc=3, train_batch_size="rded", out_dir=UNUSED).train_batch() is None   # the preset's RDED default
    assert "batch_size" not in Config(train_batch_size="rded", out_dir=UNUSED).eval_kwargs()
    assert Config(train_batch_size=32, out_dir=UNUSED).eval_kwargs()["batch_size"] == 32
    assert Config(n_neg=0, objective="cosine", lam=-1, out_dir=UNUSED).n_neg == 0        # 0 negatives: Eq. 10
    assert Path(Config().out_dir).name == "fashion_mnist_ipc10_lam1_contrastive_neg5_steps50_seed0"
    assert Config(objective="combination", out_dir=UNUSED).guidance_classifier == "zoo"              # Table 7's Combination
    assert Config(objective="classifier").default_run_name().startswith("fashion_mnist_ipc10_lam1_classifier_")
    llm = "openai:gpt-4o@http://127.0.0.1:9/v1"                                          # never asked: no concept stage runs
    assert Config(llm=llm, out_dir=UNUSED).concepts_file().name == "fashion_mnist_openai-gpt-4o-http-127.0.0.1-9-v1.json"
    assert Config(llm=llm, concept_prompt="classification", out_dir=UNUSED).concepts_file().name \
        == "fashion_mnist_openai-gpt-4o-http-127.0.0.1-9-v1_classification.json"      # its own file: Table 4's two prompts apart


def test_parameters_cell_params_file_and_table_spec_match_the_config(Config):
    params = _parameters()
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Config)}
    assert set(params) == set(defaults) - {"method"}
    wrong = {k: (params[k], defaults[k]) for k in params if params[k] != defaults[k] or type(params[k]) is not type(defaults[k])}
    assert not wrong, wrong
    from ddrepro.core import load_yaml
    from ddrepro.reports import cell_run_params, load_table_spec, table_cells
    run = load_yaml(ROOT / "params" / "concord" / "embedded" / "run.yaml")
    assert {k: v for k, v in run.items() if k != "table"} == {k: v for k, v in params.items() if k in run}
    spec = load_table_spec("concord/embedded/run")
    assert spec.notebook == "nbs/run_concord.ipynb" and spec.grid == {"ipc": [1, 10, 50]} and spec.cols == ["set"]
    for cell in table_cells(spec):
        cfg = config_from_dict(Config, {**cell_run_params(spec, cell), "out_dir": UNUSED}, source=str(spec.path))
        assert cfg.bases == ["minimax", "dit", "unclip"] and cfg.lam == 1.0 and cfg.train_batch() == cell["ipc"]


@pytest.mark.parametrize("name,expect", [
    ("table6_7", {"contrastive": (["dit", "unclip"], 5), "cosine": (["unclip"], 0), "classifier": (["unclip"], 5),
                  "combination": (["unclip"], 5)}),
    ("table5", {"random": (["unclip"], 5), "similar": (["unclip"], 5), "weighted": (["unclip"], 5)}),
    ("table9", {False: (["unclip"], 5), True: (["unclip"], 5)}),
])
def test_embedded_ablation_cells_resolve_to_their_rows(Config, name, expect):
    "Every cell of the embedded ablation grids builds a valid config with the bases and negatives its row needs."
    from ddrepro.reports import cell_run_params, load_table_spec, table_cells
    spec = load_table_spec(f"concord/embedded/{name}")
    axis, = spec.grid
    seen = {}
    for cell in table_cells(spec):
        cfg = config_from_dict(Config, {**cell_run_params(spec, cell), "out_dir": UNUSED}, source=str(spec.path))
        seen[cell[axis]] = (cfg.bases, cfg.n_neg)
        assert cfg.dataset == "fashion_mnist" and cfg.ipc == 10 and cfg.repeats == 5 and cfg.baselines == ["random_real"]
        assert getattr(cfg, axis) == cell[axis]
        if name == "table6_7": assert cfg.cls_weight == 1.0 and cfg.guidance_classifier == "zoo"
    assert seen == expect


def test_run_concord_takes_its_pieces_from_the_library():
    "One sampler, one pool writer, one evaluator, one report: the notebook calls them and defines none of its own."
    code = "\n".join(_code_cells())
    for call in ("ConcordGuidance(", "concord_items(", "filter_concepts(", "load_concepts(", "encoder_tau(", "make_pool(",
                 "sample_text(", "load_pool_generator(", "evaluate_sets(", "paired_rows(", "results_frame(",
                 "random_real_subset(", "image_conditioning(", "load_text_backbone(", "load_image_text_encoder("):
        assert call in code, call
    for own in ("def denoise", "def sample", "def train_student", "def train(", "def evaluate", "def paired", "ddim_step(", "autograd.grad(",
                "optim.", "def contrastive", "def results"):
        assert own not in code, own


def test_run_concord_stops_in_the_config_cell_before_the_record(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = _papermill(tmp_path, "-y", "bases: [minimax, sdxl]", "-p", "out_dir", str(out), timeout=300)
    assert r.returncode != 0
    assert "ConfigError: bases=['minimax', 'sdxl']" in r.stdout + r.stderr
    assert not out.exists()                                    # nothing started: no record, no data, no zoo
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    failed = [c for c in nb["cells"] if c["cell_type"] == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "config_from_namespace(ConcordRunConfig" in "".join(failed[0]["source"])
    assert time.perf_counter() - t0 < 120


# ------------------------------------------------------------------ end to end (slow)
SMOKE = ["-p", "ipc", "2", "-p", "num_steps", "3", "-p", "repeats", "1", "-y", "eval_overrides: {epochs: 1}",
         "-p", "filter_real_per_class", "20", "-p", "minimax_steps", "20", "-p", "minimax_per_class", "20",
         "-p", "eval_workers", "1", "-p", "batch_size", "8"]


@pytest.mark.slow
def test_run_concord_embedded_smoke_and_resume(tmp_path):
    from ddrepro.concord import encoder_tau
    from ddrepro.backbones import load_image_text_encoder
    from ddrepro.data import class_map, load_distilled
    out = tmp_path / "run"
    r = _papermill(tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and rec["params"]["ipc"] == 2 and rec["params"]["lam"] == 1.0
    sets = ["minimax", "minimax_concord", "dit", "dit_concord", "unclip", "unclip_concord"]
    assert set(rec["stages"]) >= {"preflight", "concepts", "items", "diagnostics", "evaluate", "figures",
                                  *(f"generate_{s}" for s in sets)}
    cm = class_map("fashion_mnist")
    imgs = {s: load_distilled(out / "distilled" / s, cm, 2, exact=True).images for s in sets}
    for b in ("minimax", "dit", "unclip"):                   # same noise, different images: the guidance acted
        assert (imgs[b].float() - imgs[f"{b}_concord"].float()).abs().max() > 0
        assert json.loads((out / "distilled" / b / "record.json").read_text())["params"]["guidance"] is None
        g = json.loads((out / "distilled" / f"{b}_concord" / "record.json").read_text())["params"]["guidance"]
        assert g["name"] == "ddrepro.concord.ConcordGuidance" and g["settings"]["lam"] == 1.0
    # τ is the encoder's own, recorded as a deviation; 5 negatives; the filter's positives
    tau = encoder_tau(load_image_text_encoder("zoo-attr", device="cpu"))
    assert abs(rec["results"]["concord"]["tau"] - tau) < 1e-9 and "τ = " in rec["results"]["deviations"]["tau"]
    assert rec["results"]["concord"]["n_neg"] == 5 and all(len(v) == 5 for v in rec["results"]["concord"]["positives"].values())
    items = pd.read_csv(out / "items.csv")
    assert len(items) == 20 and items.negatives.str.count(r" \| ").eq(4).all()
    assert items.real_index.nunique() == 20                          # without replacement within a class
    from ddrepro.data import load_real
    train = load_real("fashion_mnist", "train")
    assert (train.labels[items.real_index.tolist()].numpy() == items.label.to_numpy()).all()   # a real image of its own class
    assert items.prompt.str.len().gt(0).all()
    # diagnostics before training: each base with and without, and random real
    d = pd.DataFrame(rec["results"]["diagnostics"]["rows"])
    sets_only = d[~d.set.str.startswith("Δ")]
    assert len(d) == 3 * 3 + 1 and len(sets_only) == 7 and sets_only["teacher accuracy %"].between(0, 100).all()
    assert "Eq. 11 loss" in d and "positive-concept cosine" in d
    # the table: every base beside its base, Δ paired over the training seeds; random real
    rows = pd.DataFrame(rec["results"]["rows"])
    assert list(rows.set) == ["Minimax", "Minimax^c", "DiT", "DiT^c", "unCLIP stand-in", "unCLIP stand-in^c", "random real"]
    assert list(rows.delta_vs.fillna("")) == ["minimax", "minimax", "dit", "dit", "unclip", "unclip", ""]
    assert (rows.n_runs == 1).all() and (rows.ipc == 2).all() and (rows.protocol == "soft").all()
    assert rows.settings.str.contains("bs 2").all()                 # the students' mini-batch = IPC
    assert (out / "concord_pairs.png").stat().st_size > 1000
    text = (tmp_path / "out.ipynb").read_text()
    assert "Minimax^c" in text and "Δ (paired) ± SE" in text and "CONCORD moved the positive-concept cosine" in text
    # resumed into the same folder: nothing generated or filtered again, the finished training runs reused
    r = _papermill(tmp_path, *SMOKE, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec2 = json.loads((out / "record.json").read_text())
    assert rec2["stages"]["concepts"]["from_cache"] is True
    assert all(rec2["stages"][f"generate_{s}"]["images"] == 0 and rec2["stages"][f"generate_{s}"]["resumed_with"] == 20 for s in sets)
    assert [r["finals"] for r in rec2["results"]["rows"]] == [r["finals"] for r in rec["results"]["rows"]]
    # another λ into the same folder is refused by the pool writer, not mixed into the finished sets
    r = _papermill(tmp_path, *SMOKE, "-p", "lam", "2.0", "-y", "bases: [dit]", "-p", "out_dir", str(out), timeout=600)
    assert r.returncode != 0 and "existing pool was made with guidance=" in r.stdout + r.stderr
