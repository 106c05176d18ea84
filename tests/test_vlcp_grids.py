"""Every shipped VLCP table grid runs what its paper column says ("Dataset Distillation via Vision-Language Category
Prototype", Zou et al., ICCV 2025, arXiv 2506.23580, and its supplementary tables). Each cell's run parameters — what
run_vlcp.ipynb gets from `-f <table file>` + the cell's `-p` / `-y` values — are parameters of the notebook, carry the
paper's per-dataset settings (supplementary Tables 1, 4–7) and the three seeds, and resolve through `eval_config`,
without loading any data or weights, to the paper's evaluation protocol (Minimax/IDC hard labels for the ImageNet
subsets, RDED soft labels for ImageNet-1K and CIFAR). The paper-numbers CSVs are checked for format and for a cell
behind every printed VLCP / D4M / baseline number we claim to run; the few that cannot run are listed (and the list is
kept exact). The checks that need the run notebook's config class (and `ddrepro.vlcp`) skip, naming what is missing."""
import importlib.util
from functools import partial

import pandas as pd
import pytest

from ddrepro.core import project_root
from ddrepro.data import DATASETS, check_val_split, class_map
from ddrepro.evaluate import EvalConfig, eval_config, hard_epochs, rded_batch_size
from ddrepro.reports import cell_dir, match_key, table_cells
from ddrepro.students import STUDENTS
from grid_checks import (cells, check_known_parameters, check_long_format_csv, check_paper_csv_link,
                         check_papermill_values, check_pool_weights, check_run_parameters, check_stopped_in_preflight,
                         fake_image_folders, method_specs, paper_csv, run_until_preflight)

FILES, PAPER_SCALE, BY_NAME = method_specs("vlcp/")
NB = project_root() / "nbs" / "run_vlcp.ipynb"
OUT = "/tmp/ddrepro-vlcp-grid-test"
_cells = partial(cells, out_root=OUT)

# the parameters of nbs/run_vlcp.ipynb (its papermill parameters cell); a key outside this set would be silently
# ignored by the notebook's config cell, which picks VLCPRunConfig fields only
KNOWN_PARAMS = {
    "dataset", "ipc", "seed", "out_dir", "device", "data_root", "val_split", "val_root",
    "method", "backbone", "describer", "descriptions", "finetune", "finetune_overrides", "per_class", "prototype_size",
    "latent_mode", "contamination", "n_neighbors", "kmeans", "beta", "top_k", "text_prototype", "strength",
    "strength_match", "guidance", "negative_prompt", "num_steps", "sampler", "out_size", "synth_batch_size",
    "method_overrides", "baselines", "pool_cfg_scale", "dit_weights", "minimax_weights", "pool_vae", "minimax_steps",
    "minimax_per_class", "students", "protocol", "preset", "repeats", "teacher", "teacher_arch", "eval_overrides",
    "eval_workers", "threads", "figures",
}
BASELINE_ROWS = {"random_real": "random", "dit": "dit", "minimax": "minimax", "d4m": "d4m"}   # baseline → its rows' method
RUN_METHODS = {"vlcp", "d4m", *BASELINE_ROWS.values()}                                     # run_vlcp's result rows
LITERATURE = {"dm", "herding", "idc1", "sre2l", "rded", "kcenter", "glad", "full"}         # printed, never run here
CSV_HEAD = ["table", "source", "dataset", "model", "method", "ipc", "mean", "std"]
SOURCES = {"supp", "main-readme", "third-party"}

# what each paper-scale file reproduces: (its CSV or None when the table is not in our sources, datasets, students, IPCs)
TABLES = {
    "vlcp/imagenette_imageidc": ("vlcp_imagenette_imageidc.csv", ["imagenette", "imageidc"], ["resnet_ap10"], [10, 20, 50]),
    "vlcp/imagenet100": ("vlcp_imagenet100.csv", ["imagenet100"], ["convnet6", "resnet_ap10", "resnet18"], [10, 20]),
    "vlcp/imagewoof": (None, ["imagewoof"], ["convnet6", "resnet_ap10", "resnet18"], [10, 20, 50]),
    "vlcp/imagenet1k": ("vlcp_imagenet1k.csv", ["imagenet1k"], ["resnet18"], [10, 50]),
    "vlcp/cifar": (None, ["cifar10", "cifar100"], ["resnet18"], [10, 50]),
}
# every vlcp_*.csv: its `table` value(s), `source` and dataset(s)
CSVS = {
    "vlcp_imagenette_imageidc.csv": ({"main_nette_idc"}, {"main-readme"}, {"imagenette", "imageidc"}),
    "vlcp_imagenet100.csv": ({"supp_table2"}, {"supp"}, {"imagenet100"}),
    "vlcp_tinyimagenet.csv": ({"supp_table3"}, {"supp"}, {"tiny_imagenet"}),
    "vlcp_imagenet1k.csv": ({"main_in1k"}, {"main-readme"}, {"imagenet1k"}),
    "vlcp_thirdparty.csv": ({"uvlp_readme"}, {"third-party"}, {"imagenette", "imageidc", "imagewoof"}),
}
# supplementary Tables 4–7 (α = LOF contamination, β = non-representative threshold) and the synthetic image size
ALPHA = {"imagewoof": 0.0, "imagenette": 0.01, "imageidc": 0.1, "imagenet100": 0.1, "imagenet1k": 0.0,
         "cifar10": 0.0, "cifar100": 0.0}
BETA = {"imagewoof": 0.7, "imagenette": 0.7, "imageidc": 0.7, "imagenet100": 0.7, "imagenet1k": 0.7,
        "cifar10": 0.8, "cifar100": 0.2}
OUT_SIZE = {"imagewoof": 256, "imagenette": 256, "imageidc": 256, "imagenet100": 256, "imagenet1k": 224,
            "cifar10": 32, "cifar100": 32}
SUBSETS = {"imagewoof", "imagenette", "imageidc", "imagenet100"}
D4M_OWN = {"finetune", "describer", "descriptions", "contamination", "beta", "kmeans", "text_prototype", "guidance",
           "negative_prompt"}                                    # D4M cells leave these to D4M's defaults


def _eval(p, student) -> EvalConfig:
    "The EvalConfig one evaluation of a cell trains `student` with (as evaluate_sets → evaluate_set builds it)."
    return eval_config(p["protocol"], p["preset"], p["dataset"], p["ipc"], None, student, repeats=p["repeats"],
                       **p.get("eval_overrides", {}))


def _produced(p) -> list[dict]:
    "The result rows a cell's run writes (run_vlcp's evaluation cell): the method's and each baseline's, per student."
    methods = [p.get("method", "vlcp")] + [BASELINE_ROWS[b] for b in p["baselines"]]
    return [dict(dataset=p["dataset"], model=st, method=m, ipc=p["ipc"]) for st in p["students"] for m in methods]


def _key(r) -> tuple:
    return tuple(match_key(r[k]) for k in ("dataset", "model", "method", "ipc"))


def _gap(csv: str, line: dict) -> str | None:
    "Why a printed number of a method we run has no cell (None: it must have one). Kept exact by the test below."
    if csv == "vlcp_tinyimagenet.csv":
        return "Tiny-ImageNet is not a ddrepro dataset (ddrepro.data.DATASETS)"
    return None


# ------------------------------------------------------------------------------------------------- the files


def test_the_table_files_are_all_here():
    assert {s.name for s in PAPER_SCALE} == set(TABLES)
    assert all(s.notebook == "nbs/run_vlcp.ipynb" for s in FILES)
    for s in PAPER_SCALE:
        check_paper_csv_link(s, TABLES[s.name][0])
    assert "tiny_imagenet" not in DATASETS and not [d for d in DATASETS if "tiny" in d]    # hence no params file for it
    assert not (project_root() / "params" / "d4m").exists()          # D4M runs on the vlcp files' `method` axis


def test_the_known_parameters_are_the_notebooks():
    check_known_parameters(NB, KNOWN_PARAMS)


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_every_parameter_is_a_run_parameter(tab):
    "No key of a VLCP file is silently ignored by the notebook's config cell."
    check_run_parameters(tab, KNOWN_PARAMS, OUT)


# ------------------------------------------------------------------------------------------------- synthesis


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_cells_synthesise_with_the_papers_models_and_settings(tab):
    _, datasets, students, ipcs = TABLES[tab.name]
    assert tab.grid["seed"] == [0, 1, 2] and "seed" not in tab.base       # three full pipelines (supp. §3–§4)
    cells = _cells(tab)
    assert sorted({p["dataset"] for _, p in cells}) == sorted(datasets)
    assert sorted({p["ipc"] for _, p in cells}) == ipcs
    assert len({cell_dir(tab, c) for c, _ in cells}) == len(cells), f"{tab.name}: two cells share a run folder"
    for cell, p in cells:
        d = p["dataset"]
        assert p["students"] == students, cell
        assert (p["backbone"], p["prototype_size"], p["latent_mode"], p["out_size"]) == ("sd-1.5", 512, "sample", OUT_SIZE[d]), cell
        assert (p["sampler"], p["num_steps"], p["strength"], p["strength_match"]) == ("ddim", 50, 0.7, "steps"), cell
        assert (p["top_k"], p["n_neighbors"]) == (30, 10), cell
        assert not {"guidance", "negative_prompt", "kmeans", "text_prototype"} & set(p), cell   # the methods' defaults
        assert p["val_split"] == ("imagenet_val50" if d in SUBSETS else "auto"), cell
        check_val_split(d, p["val_split"], p.get("val_root"))
        if p.get("method", "vlcp") == "vlcp":
            assert (p["finetune"], p["describer"]) == ("paper", "llava-1.5-7b"), cell
            assert (p["contamination"], p["beta"]) == (ALPHA[d], BETA[d]), cell
            assert p.get("finetune_overrides", {}) == ({"resolution": 32} if d.startswith("cifar") else {}), cell
        else:                                        # D4M: its own defaults, and the baselines only in the VLCP cells
            assert p["method"] == "d4m" and not D4M_OWN & set(p) and p["baselines"] == [], cell
        assert set(p["baselines"]) <= set(BASELINE_ROWS) and "d4m" not in p["baselines"], cell


def test_d4m_runs_on_the_method_axis_where_the_paper_prints_it():
    for name, tab in BY_NAME.items():
        if name not in TABLES: continue
        csv = TABLES[name][0]
        printed = bool(csv) and "d4m" in set(paper_csv(csv)["method"])
        assert ("method" in tab.grid) == (printed or name == "vlcp/imagewoof"), name    # ImageWoof: the 3P table has D4M
        if "method" in tab.grid: assert tab.grid["method"] == ["vlcp", "d4m"], name
        else: assert tab.base["method"] == "vlcp", name


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_the_baseline_pools_sample_the_right_weights(tab):
    "DiT: the public DiT-XL/2; Minimax: a fine-tune of it on the cell's dataset (names only, nothing loaded)."
    for cell, p in _cells(tab):
        check_pool_weights(p, p["baselines"], cell)


# ------------------------------------------------------------------------------------------------- evaluation


MINIMAX = dict(protocol="hard", preset="paper", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
               schedule="multistep", gamma=0.2, size=224, rrc_scale=(0.5, 1.0), flip=True, jitter=0.4, lighting=0.1,
               cutmix_p=1.0, cutmix_beta=1.0, shuffle_factor=1, test_resize="center", repeats=3)
RDED = dict(protocol="soft", preset="paper", optimizer="adamw", lr=1e-3, weight_decay=0.01, wd_all_params=False,
            schedule="rded_cosine", epochs=500, temperature=20.0, cutmix_p=1.0, jitter=0.0, lighting=0.0,
            eval_every=10, eval_after=0.8, test_resize="rded", repeats=1)
RDED_BATCH = {("imagenet1k", 10): 100, ("imagenet1k", 50): 200, ("cifar10", 10): 50, ("cifar10", 50): 100,
              ("cifar100", 10): 100, ("cifar100", 50): 200}
HARD_EPOCHS = {(10, 10): 2000, (10, 20): 1500, (10, 50): 1500, (100, 10): 1300, (100, 20): 1000}   # (classes, IPC)


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_every_cell_evaluates_with_the_papers_protocol(tab):
    for cell, p in _cells(tab):
        d, ipc = p["dataset"], p["ipc"]
        for st in p["students"]:
            e, where = _eval(p, st), f"{tab.name} {cell} {st}"
            if d in SUBSETS:                         # Minimax/IDC train.py (supp. §6: "Minimax valuation method")
                assert {k: getattr(e, k) for k in MINIMAX} == MINIMAX, where
                assert e.epochs == HARD_EPOCHS[(len(class_map(d)), ipc)] == hard_epochs(ipc, len(class_map(d))), where
                assert e.eval_every == e.epochs // 100 and e.norm is None, where                  # instance norm
                assert p.get("teacher") is None and not p.get("eval_overrides"), where
            else:                                    # the RDED code the authors vendor, 500 epochs
                assert {k: getattr(e, k) for k in RDED} == RDED, where
                assert e.batch_size == RDED_BATCH[(d, ipc)] == rded_batch_size(ipc, len(class_map(d))), where
                big = d == "imagenet1k"
                assert (e.size, e.shuffle_factor, e.rrc_scale) == ((224, 2, (0.5, 1.0)) if big else (32, 1, (1.0, 1.0))), where
                if big: assert (p["teacher"], p.get("teacher_arch")) == ("torchvision:resnet18", None), where
                else: assert (p["teacher"], p["teacher_arch"]) == (f"data/pretrain_models/{d}_resnet18_modified.pth", "resnet18"), where


# ------------------------------------------------------------------------------------------------- through papermill




@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_papermill_hands_the_notebook_the_values_of_the_file(tab):
    "Every -f / -p / -y value arrives with its type (contamination 0.0 a float, baselines [] a list, paths strings)."
    check_papermill_values(tab, OUT)


def _notebook_config():
    "VLCPRunConfig from the run notebook's config cell (skips, naming what is missing)."
    if not NB.exists(): pytest.skip("nbs/run_vlcp.ipynb is missing (the run notebook)")
    missing = [m for m in ("ddrepro.vlcp", "ddrepro.d4m") if importlib.util.find_spec(m) is None]
    if missing: pytest.skip(f"{', '.join(missing)} missing (ddrepro/vlcp.py, ddrepro/d4m.py): the notebook's config cell imports them")
    from run_notebook import config_class
    try:
        return config_class(NB, "VLCPRunConfig")
    except ImportError as e:                         # the notebook and ddrepro.vlcp are written together
        pytest.skip(f"nbs/run_vlcp.ipynb's config cell does not import yet: {e}")


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_every_cell_builds_the_notebooks_config(tab):
    "Through the notebook's own config class (names and values checked, nothing loaded): the resolved method settings."
    from ddrepro.core import config_from_namespace
    cls = _notebook_config()
    for cell, p in _cells(tab):
        cfg = config_from_namespace(cls, p)
        assert all(getattr(cfg, k) == v for k, v in p.items()), cell
        m = cfg.methods[cfg.method]
        assert (m.out_size, cfg.sampler, m.strength_match) == (OUT_SIZE[cfg.dataset], "ddim", "steps"), cell
        assert cfg.per_class is None, cell                                   # every training image, as the paper
        if cfg.method == "vlcp":
            assert (m.contamination, m.finetune) == (ALPHA[cfg.dataset], "paper"), cell


# ------------------------------------------------------------------------------------------------- paper numbers


@pytest.mark.parametrize("name", sorted(CSVS))
def test_paper_csvs_are_long_format_with_one_line_per_printed_number(name):
    tables, sources, datasets = CSVS[name]
    p = check_long_format_csv(name, CSV_HEAD, tables, datasets, sources)
    assert set(p["source"]) <= SOURCES
    assert set(p["method"]) <= RUN_METHODS | LITERATURE and set(p["model"]) <= set(STUDENTS), name
    assert (p["ipc"] != "").all() or set(p.loc[p["ipc"] == "", "method"]) == {"full"}, name


def test_no_params_file_shows_a_third_party_number_as_the_papers():
    for s in PAPER_SCALE:
        if s.paper:
            p = paper_csv(s.paper)
            assert "third-party" not in set(p["source"]), s.name
            assert not p.duplicated(list(s.paper_match.values()) + ["model"]).any(), f"{s.paper}: a drawn cell would match twice"
    assert (project_root() / "params" / "paper" / "vlcp_notes.md").exists()
    assert set(CSVS) == {f.name for f in (project_root() / "params" / "paper").glob("vlcp_*.csv")}


def test_a_cell_behind_every_printed_number_we_run():
    "Every printed VLCP / D4M / Random / DiT / Minimax number (paper and third party) has a cell, but the listed gaps."
    have = {_key(r) for s in PAPER_SCALE for _, p in _cells(s) for r in _produced(p)}
    missing, gaps = [], []
    for name in sorted(CSVS):
        for line in paper_csv(name).to_dict("records"):
            if line["method"] not in RUN_METHODS: continue                     # the literature's numbers: not run
            hit, why = _key(line) in have, _gap(name, line)
            if why: gaps.append((name, line, hit))
            elif not hit: missing.append((name, _key(line)))
    assert not missing, f"printed numbers without a cell: {missing}"
    assert not [g for g in gaps if g[2]], "a listed gap has a cell now; shorten _gap"
    assert sorted((n, l["method"], l["ipc"]) for n, l, _ in gaps) == [("vlcp_tinyimagenet.csv", "vlcp", "10"),
                                                                      ("vlcp_tinyimagenet.csv", "vlcp", "50")]


@pytest.mark.parametrize("tab", [s for s in PAPER_SCALE if s.paper], ids=lambda s: s.name)
def test_cells_run_only_the_papers_columns(tab):
    "No cell makes rows for a column the paper's table lacks — but the paired random baseline of ImageNet-1K."
    paper = set(pd.read_csv(project_root() / tab.paper, dtype=str)["method"])
    ours = {r["method"] for _, p in _cells(tab) for r in _produced(p)}
    extra = {"vlcp/imagenet1k": {"random"}}.get(tab.name, set())
    assert ours - paper == extra, f"{tab.name}: {ours - paper}"
    assert paper & RUN_METHODS <= ours, tab.name


# ------------------------------------------------------------------------------------------------- drawn beside the paper


def test_a_drawn_table_shows_the_papers_numbers_beside_ours(tmp_path):
    from ddrepro.core import RunRecord
    from ddrepro.reports import draw_table
    tab = BY_NAME["vlcp/imagenette_imageidc"]
    root = tmp_path / "runs"
    for k, (cell, p) in enumerate(_cells(tab)):
        rows = [dict(r, selector="", protocol=p["protocol"], preset=p["preset"], settings="fake",
                     acc_final_mean=0.5 + 0.001 * (i + 10 * k), acc_final_std=0.01, acc_best_mean=0.6, acc_best_std=0.01,
                     n_runs=3, fingerprint=f"fp{k}-{i}", seeds=[p["seed"] + j for j in range(3)])
                for i, r in enumerate(_produced(p))]
        rec = RunRecord.start(cell_dir(tab, cell, root), {**p, "out_dir": str(cell_dir(tab, cell, root))}, kind="vlcp")
        rec.results["rows"] = rows
        rec.finish()
    draw_table(tab, root, tmp_path / "figures")
    sbs = pd.read_csv(tmp_path / "figures" / "vlcp_imagenette_imageidc_vs_paper.csv", dtype=str).fillna("")
    hit = sbs[(sbs.dataset == "imagenette") & (sbs.method == "vlcp") & (sbs.ipc == "10")]
    assert list(hit["paper"]) == ["64.8 ± 3.6"], sbs.to_string()
    assert list(hit["n"]) == ["3"]                                   # the three seeds' records
    printed = paper_csv("vlcp_imagenette_imageidc.csv")["method"].isin(RUN_METHODS).sum()
    assert (~sbs["paper"].isin(["", "–"])).sum() == printed == len(sbs) == 30


def test_the_run_notebook_stops_in_its_preflight_naming_the_describer(tmp_path):
    "An ImageNette cell through run_vlcp itself: data folders present, no weights cached → the preflight names LLaVA's id."
    spec = next(s for s in PAPER_SCALE if s.name == "vlcp/imagenette_imageidc")
    cell = next(c for c in table_cells(spec) if c["dataset"] == "imagenette" and c["method"] == "vlcp" and c["ipc"] == 10)
    fake_image_folders(tmp_path / "imagenet", "imagenette", train_per_class=10)
    r, rec, seconds = run_until_preflight(spec, cell, tmp_path / "imagenet", tmp_path)
    check_stopped_in_preflight(r, rec, "AssetError", "llava-hf/llava-1.5-7b-hf")
    assert rec["params"]["backbone"] == "sd-1.5" and rec["params"]["finetune"] == "paper"
    assert seconds < 120                                     # kernel start + imports; the preflight itself is seconds
