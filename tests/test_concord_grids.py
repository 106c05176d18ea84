"""Every shipped CONCORD table grid runs what its paper column says ("CONCORD: Concept-Informed Diffusion for Dataset
Distillation", Gu et al., main Tables 1–6, supplementary Tables 7–11, Figs. 4a–c and 5). Each cell's run parameters —
what run_concord.ipynb gets from `-f <table file>` + the cell's `-p` / `-y` values — are parameters of the notebook,
carry the paper's settings (DiT-XL/2, a Minimax fine-tune of it, SD-2.1 unCLIP, OpenCLIP ViT-L/14 LAION-2B, GPT-4o
concepts, λ = 1, 5 positives, 10 weighted negatives, 50 DDIM steps, 3 runs) and resolve through `eval_config`,
without loading any data or weights, to the RDED protocol the paper follows (soft labels, 300 epochs, mini-batch =
IPC). The paper-numbers CSVs are checked for format and for a cell behind every printed DiT / Minimax / unCLIP /
CONCORD / real-image number we claim to run; the few that cannot run are listed (and the list is kept exact)."""
import time
from functools import partial

import pandas as pd
import pytest

from ddrepro.backbones import HUB
from ddrepro.core import AssetError, ConfigError, DataError, config_from_namespace, project_root
from ddrepro.data import DATASETS, check_val_split, class_map
from ddrepro.evaluate import EvalConfig, eval_config
from ddrepro.reports import cell_dir, match_key, table_cells
from ddrepro.students import STUDENTS
from grid_checks import (cell_params, cells, check_known_parameters, check_long_format_csv, check_paper_csv_link,
                         check_papermill_values, check_pool_weights, check_run_parameters, check_stopped_in_preflight,
                         fake_image_folders, method_specs, paper_csv, run_until_preflight)

FILES, PAPER_SCALE, BY_NAME = method_specs("concord/")
NB = project_root() / "nbs" / "run_concord.ipynb"
OUT = "/tmp/ddrepro-concord-grid-test"
_params, _cells = partial(cell_params, out_root=OUT), partial(cells, out_root=OUT)
GPT4O = "openai:gpt-4o@https://api.openai.com/v1"
GPT35 = "openai:gpt-3.5-turbo@https://api.openai.com/v1"

# the parameters of nbs/run_concord.ipynb (its papermill parameters cell); a key outside this set would be silently
# ignored by the notebook's config cell, which picks ConcordRunConfig fields only
KNOWN_PARAMS = {
    "dataset", "ipc", "seed", "out_dir", "device", "data_root", "val_split", "val_root",
    "bases", "lam", "tau", "objective", "n_neg", "neg_mode", "similar_range", "neg_pool", "grad_path", "keep", "concepts",
    "llm", "concept_prompt", "cls_weight", "guidance_classifier", "filter_real_per_class", "encoder", "num_steps", "cfg_scale", "dit_weights", "minimax_weights", "pool_vae",
    "minimax_steps", "minimax_per_class", "unclip", "unclip_cfg_scale", "unclip_noise_level", "unclip_templates",
    "positives", "prompt_concepts", "batch_size", "threads", "out_size", "students", "protocol", "preset", "repeats", "teacher",
    "teacher_arch", "train_batch_size", "eval_overrides", "eval_workers", "baselines", "diagnostics_teacher", "figures",
    "figure_classes",
}
BASELINE_ROWS = {"random_real": "random", "herding": "herding", "kcenter": "kcenter"}   # baseline → its rows' method
RUN_METHODS = {"dit", "minimax", "unclip", *BASELINE_ROWS.values()}                     # run_concord's result rows
LITERATURE = {"mtt", "sre2l", "rded", "idm", "full"}                                    # printed, never run here
CSV_HEAD = ["table", "source", "dataset", "model", "method", "ipc", "selector", "objective", "neg_mode", "similar_range",
            "llm", "concept_prompt", "prompt_concepts", "mean", "std"]

# what each paper-scale file reproduces: (its CSV or None when the paper prints no number, datasets, students, IPCs)
WOOF3 = ["convnet5", "resnet18", "resnet101"]
TABLES = {
    "concord/table1": ("concord_table1.csv", ["imagewoof"], WOOF3, [1, 10, 50]),
    "concord/table2": ("concord_table2.csv", ["imagenet100", "imagenet1k"], ["resnet18"], [1, 10, 50]),
    "concord/table3": ("concord_table3.csv", ["food101"], ["resnet18"], [1, 10, 50]),
    "concord/table4": ("concord_table4.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table4_classification": ("concord_table4.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table5": ("concord_table5.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table5_similar": ("concord_table5.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table6": ("concord_table6.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table7": ("concord_table7.csv", ["imagewoof"], ["resnet18"], [1, 10, 50]),
    "concord/table8": ("concord_table8.csv", ["imagenet1k"], ["resnet101"], [10, 50]),
    "concord/table9": ("concord_table9.csv", ["imagewoof"], ["resnet18"], [10, 50]),
    "concord/table11": ("concord_table11.csv", ["imagewoof"], WOOF3, [1, 10, 50]),
    "concord/fig4a": (None, ["imagewoof"], ["resnet18"], [1, 10, 20, 50, 100, 200]),
    "concord/fig4b": (None, ["imagewoof"], ["resnet18"], [10]),
    "concord/fig4c": (None, ["imagewoof"], ["resnet18"], [10]),
    "concord/fig5": (None, ["imagewoof"], ["resnet18"], [10, 50]),
}
# every accuracy CSV: its `table` value, `source` and dataset(s)
CSVS = {
    "concord_table1.csv": ("table1", "main", {"imagewoof"}),
    "concord_table2.csv": ("table2", "main", {"imagenet100", "imagenet1k"}),
    "concord_table3.csv": ("table3", "main", {"food101"}),
    "concord_table4.csv": ("table4", "main", {"imagewoof"}),
    "concord_table5.csv": ("table5", "main", {"imagewoof"}),
    "concord_table6.csv": ("table6", "main", {"imagewoof"}),
    "concord_table7.csv": ("table7", "supp", {"imagewoof"}),
    "concord_table8.csv": ("table8", "supp", {"imagenet1k"}),
    "concord_table9.csv": ("table9", "supp", {"imagewoof"}),
    "concord_table11.csv": ("table11", "supp", {"imagewoof"}),
}
# the paper's base of each file (supp. B: Minimax, SD-2.1 unCLIP img2img; Table 6: DiT; §4.3: ablations on unCLIP)
BASES = {"concord/table1": ["minimax", "dit", "unclip"], "concord/table2": ["minimax", "dit", "unclip"],
         "concord/table8": ["minimax"], "concord/table11": ["minimax"], "concord/fig4a": ["minimax", "unclip"],
         "concord/table6": ["dit", "unclip"]}                           # the others: unclip (Table 6 cosine: unclip)
TEMPLATES = 28                                                          # supp. B: "28 prompt templates"
SUBSETS = {"imagewoof", "imagenet100"}


def _eval(p, student) -> EvalConfig:
    "The EvalConfig one evaluation of a cell trains `student` with (as evaluate_sets → evaluate_set builds it)."
    batch = {"ipc": p["ipc"], "rded": None}.get(p.get("train_batch_size", "ipc"), p.get("train_batch_size"))
    return eval_config(p["protocol"], p["preset"], p["dataset"], p["ipc"], None, student, repeats=p["repeats"],
                       batch_size=batch, **p.get("eval_overrides", {}))


def _produced(p) -> list[dict]:
    """The result rows a cell's run writes (run_concord's evaluation cell), each merged with the cell's scalar parameters
    as reports.record_rows does: every base and its ^c set, then the real-image baselines, per student. A ^c row carries
    the CONCORD settings; a base row λ = 0 and None for the rest; a real row None."""
    ctx = {k: v for k, v in p.items() if isinstance(v, (str, int, float, bool)) or v is None}
    on = dict(lam=p["lam"], tau=p["tau"], objective=p["objective"], n_neg=p["n_neg"], neg_mode=p["neg_mode"],
              similar_range=p.get("similar_range"), neg_pool=p.get("neg_pool"))
    off = {k: None for k in on}
    rows = []
    for st in p["students"]:
        base = dict(dataset=p["dataset"], model=st, ipc=p["ipc"])
        for b in p["bases"]:
            rows += [{**ctx, **base, **off, "lam": 0.0, "method": b, "selector": ""},
                     {**ctx, **base, **on, "method": b, "selector": "concord"}]
        rows += [{**ctx, **base, **off, "method": BASELINE_ROWS[x], "selector": ""} for x in p["baselines"]]
    return rows


def _specs_of(csv: str) -> list:
    return [s for s in PAPER_SCALE if s.paper == f"params/paper/{csv}"]


def _gap(csv: str, line: dict) -> str | None:
    "Why a printed number of a method we run has no cell (None: it must have one). Kept exact by the test below."
    return None


# ------------------------------------------------------------------------------------------------- the files


def test_the_table_files_are_all_here():
    assert {s.name for s in PAPER_SCALE} == set(TABLES)
    assert all(s.notebook == "nbs/run_concord.ipynb" for s in FILES)
    for s in PAPER_SCALE:
        if not check_paper_csv_link(s, TABLES[s.name][0]):
            assert s.plot and s.plot["x"] in s.rows, f"{s.name}: a swept figure without printed numbers is drawn as a plot"
    assert "food101" in DATASETS                                                       # Table 3's dataset
    here = {p.stem for p in (project_root() / "params" / "concord").glob("*.yaml")}
    assert not here & {"table10", "fig1", "fig3"}                                       # see concord_notes.md
    assert (project_root() / "params" / "paper" / "concord_notes.md").exists()


def test_the_known_parameters_are_the_notebooks():
    check_known_parameters(NB, KNOWN_PARAMS)


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_every_parameter_is_a_run_parameter(tab):
    "No key of a CONCORD file (the embedded one too) is silently ignored by the notebook's config cell."
    check_run_parameters(tab, KNOWN_PARAMS, OUT)


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_no_two_cells_share_a_run_folder(tab):
    cells = table_cells(tab)
    assert cells and len({cell_dir(tab, c) for c in cells}) == len(cells), f"{tab.name}: two cells share a run folder"


def test_no_two_files_run_one_cell_into_one_folder():
    dirs = [cell_dir(s, c) for s in FILES for c in table_cells(s)]
    assert len(set(dirs)) == len(dirs)


# ------------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_cells_generate_with_the_papers_models_and_settings(tab):
    _, datasets, students, ipcs = TABLES[tab.name]
    cells = _cells(tab)
    assert sorted({p["dataset"] for _, p in cells}) == sorted(datasets)
    assert sorted({p["ipc"] for _, p in cells}) == ipcs
    assert HUB["clip-vit-l-14-laion2b"] == dict(kind="clip", arch="ViT-L-14", pretrained="laion2b_s32b_b82k")   # supp. B fn. 2
    assert HUB["sd-2.1-unclip-img2img"]["repo"] == "radames/stable-diffusion-2-1-unclip-img2img"              # supp. B fn. 1
    for cell, p in cells:
        d, where = p["dataset"], f"{tab.name} {cell}"
        assert p["students"] == students and p["seed"] == 0 and p["repeats"] == 3, where        # "3 random runs"
        only_unclip = p["objective"] == "cosine" or (tab.name == "concord/table6" and p["objective"] == "classifier")
        assert p["bases"] == (["unclip"] if only_unclip else BASES.get(tab.name, ["unclip"])), where   # Table 6: unCLIP rows
        assert (p["encoder"], p["keep"], p["filter_real_per_class"]) == ("clip-vit-l-14-laion2b", 5, None), where
        assert (p["tau"], p["grad_path"], p["out_size"]) == (0.01, "model", 224), where
        assert p["lam"] == (cell["lam"] if "lam" in cell else 1.0), where                         # §4.1, supp. B
        assert p["num_steps"] == cell.get("num_steps", 50), where                                 # §4.1
        assert p.get("cfg_scale", 4.0) == 4.0 and ("cfg_scale" in p or not {"dit", "minimax"} & set(p["bases"])), where   # Minimax sample.py
        assert p["objective"] == cell.get("objective", "contrastive"), where
        want_neg = cell.get("n_neg", 0 if p["objective"] == "cosine" else 10)                   # Eq. 10 takes none
        assert p["n_neg"] == want_neg, where
        assert p["neg_mode"] == cell.get("neg_mode", "similar" if "similar_range" in cell else "weighted"), where
        assert p.get("similar_range") == cell.get("similar_range"), where
        assert p.get("neg_pool") == ("imagenet1k" if d in SUBSETS else None), where              # 10 of 999 (Food-101: of 100)
        assert p["llm"] == cell.get("llm", GPT4O) and p.get("concepts") is None, where          # supp. B: GPT-4o
        assert p.get("prompt_concepts", False) is cell.get("prompt_concepts", False), where
        assert p["val_split"] == ("imagenet_val50" if d in SUBSETS else "auto") and p.get("val_root") is None, where
        check_val_split(d, p["val_split"], p.get("val_root"))
        if "unclip" in p["bases"]:
            t = p["unclip_templates"]
            assert (p["unclip"], p["unclip_cfg_scale"], p["unclip_noise_level"]) == ("sd-2.1-unclip-img2img", 10.0, 0), where
            assert len(t) == len(set(t)) == TEMPLATES and "a photo of a nice {}" in t, where
        else:
            assert not {"unclip", "unclip_templates", "unclip_cfg_scale"} & set(p), where
        assert all(p.get(f"{b}_weights") is None for b in ("dit", "minimax") if b not in p["bases"]), where   # the config refuses others
        assert set(p["baselines"]) <= set(BASELINE_ROWS), where
        assert p["baselines"] == {"concord/table11": ["random_real", "kcenter", "herding"],            # Table 3: its Random row
                                  "concord/table3": ["random_real"]}.get(tab.name, []), where


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_the_bases_sample_the_right_weights(tab):
    "DiT: the public DiT-XL/2; Minimax: a fine-tune of it on the cell's dataset (names only, nothing loaded)."
    for cell, p in _cells(tab):
        check_pool_weights(p, p["bases"], cell)


def test_the_ablations_vary_only_what_their_tables_vary():
    ax = {name: BY_NAME[name].grid for name in TABLES}
    assert ax["concord/table4"]["llm"] == [GPT35, GPT4O]                                 # Ours-3.5, Ours-4
    assert BY_NAME["concord/table4"].base["concept_prompt"] == "concord"
    assert (BY_NAME["concord/table4_classification"].base["concept_prompt"], BY_NAME["concord/table4_classification"].base["llm"]) \
        == ("classification", GPT4O)                                                     # Classification: Menon & Vondrick on GPT-4o
    assert ax["concord/table5"]["neg_mode"] == ["random", "weighted"]
    assert ax["concord/table5_similar"]["similar_range"] == [10, 25, 50]                # Similar-10 / -25 / -50
    assert ax["concord/table6"]["objective"] == ["contrastive", "cosine", "classifier"]
    assert ax["concord/table7"]["objective"] == ["contrastive", "classifier", "combination"]
    for name in ("concord/table6", "concord/table7"):                # classifier guidance: weight 0.05, the teacher's ResNet-18
        assert (BY_NAME[name].base["cls_weight"], BY_NAME[name].base["guidance_classifier"]) == (0.05, "torchvision:resnet18")
    assert ax["concord/table9"]["prompt_concepts"] == [False, True]
    assert ax["concord/fig4b"]["lam"] == [0.5, 1.0, 2.0, 4.0, 8.0]                      # λ = 0: the base rows
    assert ax["concord/fig4c"]["n_neg"] == [0, 1, 5, 10, 20, 50]                        # 0: Eq. 10
    assert ax["concord/fig5"]["num_steps"] == [25, 50, 100, 200]
    assert ax["concord/fig4a"]["ipc"][-1] == 200                                        # "extend the dataset size to 200 IPC"
    cos = [p for _, p in _cells(BY_NAME["concord/table6"]) if p["objective"] == "cosine"]
    assert cos and all(p["bases"] == ["unclip"] and p["n_neg"] == 0 for p in cos)


# ------------------------------------------------------------------------------------------------- evaluation


RDED = dict(protocol="soft", preset="paper", optimizer="adamw", lr=1e-3, weight_decay=0.01, wd_all_params=False,
            schedule="rded_cosine", epochs=300, temperature=20.0, cutmix_p=1.0, flip=True, jitter=0.0, lighting=0.0,
            shuffle_factor=2, rrc_scale=(0.5, 1.0), eval_every=10, eval_after=0.8, test_resize="rded", repeats=3)


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_every_cell_evaluates_with_the_papers_protocol(tab):
    "Supp. B: RDED's protocol, soft labels, 300 epochs, AdamW 1e-3 / wd 0.01, cosine, mini-batch = IPC, 224 px (ConvNet-5 128)."
    for cell, p in _cells(tab):
        assert p["train_batch_size"] == "ipc" and not p.get("eval_overrides"), cell
        if p["dataset"] == "food101":            # RDED has no Food-101 teacher: the paper trains a ResNet-18 (supp. B)
            food = "data/pretrain_models/food101_resnet18.pth"
            assert (p["teacher"], p.get("teacher_arch"), p["diagnostics_teacher"]) == (food, "resnet18", food), cell
        else:
            teacher = "torchvision:resnet101@IMAGENET1K_V1" if p["students"] == ["resnet101"] else "torchvision:resnet18"
            assert (p["teacher"], p.get("teacher_arch"), p["diagnostics_teacher"]) == (teacher, None, "torchvision:resnet18"), cell
        for st in p["students"]:
            e, where = _eval(p, st), f"{tab.name} {cell} {st}"
            assert {k: getattr(e, k) for k in RDED} == RDED, where
            assert e.batch_size == p["ipc"], where                                   # not RDED's rded_batch_size
            assert e.size == (128 if st == "convnet5" else 224) and e.student == st, where


# ------------------------------------------------------------------------------------------------- through the notebook


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_papermill_hands_the_notebook_the_values_of_the_file(tab):
    "Every -f / -p / -y value arrives with its type (tau 0.01 a float, neg_pool null None, the templates a list)."
    check_papermill_values(tab, OUT)


def _notebook_config():
    "ConcordRunConfig from the run notebook's config cell."
    if not NB.exists(): pytest.skip("nbs/run_concord.ipynb is missing (the run notebook)")
    from run_notebook import config_class
    return config_class(NB, "ConcordRunConfig")


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_every_cell_builds_the_notebooks_config(tab):
    "Through the notebook's own config class (names, values, weights' names checked; nothing loaded)."
    cls = _notebook_config()
    for cell, p in _cells(tab):
        cfg = config_from_namespace(cls, p)
        assert all(getattr(cfg, k) == v for k, v in p.items()), cell
        assert cfg.train_batch() == cfg.ipc and cfg.eval_kwargs()["batch_size"] == cfg.ipc, cell
        if "/embedded/" in tab.name: continue
        pool = "food101" if cfg.dataset == "food101" else "imagenet1k"
        assert cfg.pool_dataset() == pool and len(class_map(cfg.pool_dataset())) - 1 >= cfg.n_neg, cell
        assert cfg.concepts_file().parent == project_root() / "runs" / "cache" / "concord" / "concepts", cell
        assert cfg.concepts_file().name.startswith(f"{pool}_openai-gpt-"), cell         # one file per LLM, shared
        assert cfg.eval_kwargs()["teacher"] == p["teacher"], cell


def test_a_paper_scale_cell_without_concepts_or_llm_stops_in_the_config_naming_both():
    cls = _notebook_config()
    tab = BY_NAME["concord/table1"]
    p = dict(_params(tab, {"ipc": 10}), llm=None)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"concepts=None: no concept file at .*params/concord/concepts/imagenet1k\.json.*-p llm"):
        config_from_namespace(cls, p)
    with pytest.raises(ConfigError, match=r"llm='gpt-4o': expected None or a ddrepro\.llm client spec"):
        config_from_namespace(cls, dict(p, llm="gpt-4o"))
    with pytest.raises(ConfigError, match=r"dataset='imagewoof': expected 'fashion_mnist' with the zoo's models \(encoder"):
        config_from_namespace(cls, dict(_params(tab, {"ipc": 10}), encoder="zoo-attr"))
    with pytest.raises(ConfigError, match=r"pool='minimax' with generator_weights='DiT-XL-2-256'"):   # never the DiT weights
        config_from_namespace(cls, dict(_params(tab, {"ipc": 10}), minimax_weights="DiT-XL-2-256"))
    with pytest.raises(ConfigError, match=r"n_neg=10: expected an integer 0\.\.9"):                   # ImageWoof's own pool
        config_from_namespace(cls, dict(_params(tab, {"ipc": 10}), neg_pool=None))
    assert time.perf_counter() - t0 < 2


def test_the_preflights_llm_probe_fails_fast_naming_the_endpoint_and_model(tmp_path):
    "What the preflight does with no concept file yet (the first class, through the reply cache): nothing serving → named."
    import socket
    from ddrepro.concord import acquire_concepts
    from ddrepro.llm import make_client
    with socket.socket() as s:                                       # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    client = make_client(f"openai:gpt-4o@http://127.0.0.1:{port}/v1", retries=0, timeout=5)
    t0 = time.perf_counter()
    with pytest.raises(AssetError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions \(model 'gpt-4o'\): cannot connect"):
        acquire_concepts("imagenet1k", ["tench"], client, tmp_path / "llm", out=tmp_path / "first_class.json")
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "first_class.json").exists()


# ------------------------------------------------------------------------------------------------- paper numbers


@pytest.mark.parametrize("name", sorted(CSVS))
def test_paper_csvs_are_long_format_with_one_line_per_printed_number(name):
    table, source, datasets = CSVS[name]
    p = check_long_format_csv(name, CSV_HEAD, {table}, datasets, {source})
    assert set(p["method"]) <= RUN_METHODS | LITERATURE and set(p["model"]) <= set(STUDENTS), name
    assert set(p["selector"]) <= {"", "concord"} and (p.loc[p["objective"] != "", "selector"] == "concord").all(), name
    assert (p["ipc"] != "").all() or set(p.loc[p["ipc"] == "", "method"]) == {"full"}, name


def test_the_printed_counts():
    "One line per number the paper prints (Table 1: 72 cells less 10 '-'; Table 11: Full once per student)."
    n = {name: len(paper_csv(name)) for name in CSVS}
    assert n == {"concord_table1.csv": 62, "concord_table2.csv": 42, "concord_table3.csv": 9, "concord_table4.csv": 9,
                 "concord_table5.csv": 15, "concord_table6.csv": 18, "concord_table7.csv": 12, "concord_table8.csv": 4,
                 "concord_table9.csv": 6, "concord_table11.csv": 57}
    t10 = paper_csv("concord_table10.csv")
    assert list(t10.columns) == ["table", "source", "method", "selector", "batch_size", "seconds_per_image"]
    assert list(t10["seconds_per_image"]) == ["2.1", "4.3", "9.7", "20.8"] and set(t10["batch_size"]) == {"1"}
    got = set(CSVS) | {"concord_table10.csv"}
    assert got == {f.name for f in (project_root() / "params" / "paper").glob("concord_*.csv")}


@pytest.mark.parametrize("tab", [s for s in PAPER_SCALE if s.paper], ids=lambda s: s.name)
def test_no_drawn_cell_matches_two_printed_lines(tab):
    p = paper_csv(tab.paper)
    keys = list(tab.paper_match.values()) + ["dataset", "model"]
    assert not p.duplicated(keys).any(), f"{tab.paper}: a drawn cell of {tab.name} would match two lines"


def test_a_cell_behind_every_printed_number_we_run():
    "Every printed DiT / Minimax / unCLIP (± CONCORD) / real-image number has a cell, but the listed gaps."
    missing, gaps = [], []
    for name in sorted(CSVS):
        specs = _specs_of(name)
        matches = {tuple(sorted(s.paper_match.items())) for s in specs}
        assert len(matches) <= 1, f"{name}: its files match it differently"
        keys = sorted({"dataset", "model", *(dict(next(iter(matches))) if matches else {})})
        have = {tuple(match_key(r.get(k)) for k in keys) for s in specs for _, p in _cells(s) for r in _produced(p)}
        for line in paper_csv(name).to_dict("records"):
            if line["method"] not in RUN_METHODS: continue                     # the literature's numbers: not run
            hit, why = tuple(match_key(line[k]) for k in keys) in have, _gap(name, line)
            if why: gaps.append((name, line, hit))
            elif not hit: missing.append((name, {k: line[k] for k in keys}))
    assert not missing, f"printed numbers without a cell: {missing}"
    assert not [g for g in gaps if g[2]], "a listed gap has a cell now; shorten _gap"
    assert not gaps                                    # Food-101 (Table 3) was the last: every printed number we run has a cell


@pytest.mark.parametrize("tab", [s for s in PAPER_SCALE if s.paper], ids=lambda s: s.name)
def test_cells_run_only_the_papers_columns(tab):
    "No cell makes rows for a column its table lacks — but the base sets beside the tables that print only ^c rows."
    paper = {(r["method"], r["selector"]) for r in paper_csv(tab.paper).to_dict("records")}
    ours = {(r["method"], r["selector"]) for _, p in _cells(tab) for r in _produced(p)}
    extra = {"concord/table4": {("unclip", "")}, "concord/table4_classification": {("unclip", "")}, "concord/table5": {("unclip", "")}, "concord/table5_similar": {("unclip", "")},
             "concord/table8": {("minimax", "")},                      # every base is made without and with CONCORD:
             "concord/table1": {("dit", "concord")}, "concord/table2": {("dit", "concord")}}.get(tab.name, set())   # DiT^c: Table 6
    assert ours - paper == extra, f"{tab.name}: {ours - paper}"
    assert {(m, s) for m, s in paper if m in RUN_METHODS} <= ours, tab.name


# ------------------------------------------------------------------------------------------------- drawn beside the paper


@pytest.mark.parametrize("name,expect", [("concord/table9", {("unclip", "", "True", "10"): "37.1 ± 0.7",
                                                            ("unclip", "concord", "False", "50"): "66.1 ± 1.1"}),
                                         ("concord/table4", {("unclip", "concord", GPT35, "1"): "16.8 ± 0.5"}),
                                         ("concord/table4_classification", {("unclip", "concord", GPT4O, "10"): "38.2 ± 1.3"})])
def test_a_drawn_table_shows_the_papers_numbers_beside_ours(tmp_path, name, expect):
    "Fake records of every cell through ddrepro-table's drawing: the printed number lands beside the cell it belongs to."
    from ddrepro.core import RunRecord
    from ddrepro.reports import draw_table
    tab, root = BY_NAME[name], tmp_path / "runs"
    for k, (cell, p) in enumerate(_cells(tab)):
        rows = [dict({kk: r[kk] for kk in ("dataset", "model", "method", "selector", "ipc", "lam", "tau", "objective",
                                           "n_neg", "neg_mode", "similar_range", "neg_pool")},
                     protocol="soft", preset="paper", settings="fake", acc_final_mean=0.5 + 0.001 * (i + 10 * k),
                     acc_final_std=0.01, acc_best_mean=0.6, acc_best_std=0.01, n_runs=3, fingerprint=f"fp{k}-{i}",
                     seeds=[0, 1, 2], finals=[0.5, 0.5, 0.5])
                for i, r in enumerate(_produced(p))]
        rec = RunRecord.start(cell_dir(tab, cell, root), p, kind="concord")
        rec.results["rows"] = rows
        rec.finish()
    draw_table(tab, root, tmp_path / "figures")
    sbs = pd.read_csv(tmp_path / "figures" / f"{name.replace('/', '_')}_vs_paper.csv", dtype=str).fillna("")
    cols = [k for k in ("method", "selector", "prompt_concepts", "llm", "ipc") if k in sbs]
    got = {tuple(r[c] for c in cols): r["paper"] for r in sbs.to_dict("records")}
    for key, paper in expect.items():
        assert got[key] == paper, sbs.to_string()
    shown = {"concord/table4": 6, "concord/table4_classification": 3}              # Table 4's lines split over its two files
    assert (~sbs["paper"].isin(["", "–"])).sum() == shown.get(name, len(paper_csv(tab.paper)))


def test_the_run_notebook_stops_in_its_preflight_naming_the_llm_endpoint(tmp_path):
    """A Table 1 cell through run_concord itself: ImageNet folders present (all 1000 train classes, the negatives' pool;
    ImageWoof's 50 validation images per class), no concept file, an llm endpoint nothing serves → the preflight loads
    the data, asks for the first class's concepts and stops, naming the endpoint and the model."""
    import socket
    fake_image_folders(tmp_path / "imagenet", "imagenet1k", val="imagewoof")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    r, rec, seconds = run_until_preflight(BY_NAME["concord/table1"], {"ipc": 1}, tmp_path / "imagenet", tmp_path,
                                          "-p", "llm", f"openai:gpt-4o@http://127.0.0.1:{port}/v1", timeout=600)
    check_stopped_in_preflight(r, rec, "AssetError", f"127.0.0.1:{port}/v1/chat/completions (model 'gpt-4o'): cannot connect")
    assert rec["params"]["encoder"] == "clip-vit-l-14-laion2b" and rec["params"]["neg_pool"] == "imagenet1k"
    assert seconds < 300                                     # kernel start + imports + listing 1000 folders
