"""Every shipped patch-selection table grid runs what its paper column says ("Efficient Dataset Distillation via
Diffusion-Driven Patch Selection for Improved Generalization", Zhong et al.: Tables 1, 2, 4, 5 and supplementary
Tables 7, 8, 9, Figs. 6-8). Each cell's run parameters — what run_patchsel.ipynb gets from `-f <table file>` + the
cell's `-p` / `-y` values — are parameters of the notebook, build the notebook's own config (DPSConfig and RDEDConfig
checked) with the paper's backbone, scoring, clustering and assembly settings per table, and resolve through
`eval_config`, without loading any data or weights, to the RDED soft-label protocol the paper follows. The paper-number
CSVs are checked for format and for a cell behind every printed DPS / RDED number we claim to run; the ones that cannot
run are listed (and the list is kept exact)."""
from functools import partial

import pandas as pd
import pytest

from ddrepro.backbones import torchvision_weights
from ddrepro.core import config_from_namespace, project_root
from ddrepro.data import DATASETS, check_val_split, class_map
from ddrepro.evaluate import EvalConfig, eval_config, rded_batch_size
from ddrepro.patchsel import DPSConfig
from ddrepro.rded import RDEDConfig
from ddrepro.reports import cell_dir, match_key, table_cells
from ddrepro.students import STUDENTS
from grid_checks import (cell_params, check_known_parameters, check_long_format_csv, check_paper_csv_link,
                         check_papermill_values, check_run_parameters, check_stopped_in_preflight, fake_image_folders,
                         method_specs, paper_csv, run_until_preflight)
from run_notebook import config_class

FILES, PAPER_SCALE, BY_NAME = method_specs("patchsel/")
NB = project_root() / "nbs" / "run_patchsel.ipynb"
OUT = "/tmp/ddrepro-patchsel-grid-test"
_params = partial(cell_params, out_root=OUT)

# the parameters of nbs/run_patchsel.ipynb (its papermill parameters cell); a key outside this set would be silently
# ignored by the notebook's config cell, which picks PatchselRunConfig fields only
KNOWN_PARAMS = {
    "dataset", "ipc", "seed", "out_dir", "device", "data_root", "val_split", "val_root",
    "methods", "backbone", "per_class", "n_draws", "t_lo", "t_hi", "score_sign", "assembly", "short_side", "window",
    "dift_t", "dift_block", "dift_ensemble", "cluster_features", "clip_encoder", "n_clusters", "n_top",
    "rded_num_crops", "rded_factor", "rded_crop_scale", "dps_overrides", "rded_overrides", "observer",
    "protocol", "preset", "repeats", "students", "teacher", "teacher_arch", "eval_overrides", "eval_workers",
    "baselines", "batch_size", "threads", "figures", "figure_classes", "focus_class", "compare_sets",
}
RUN_METHODS = {"dps", "rded", "random"}                                  # run_patchsel's result rows
LITERATURE = {"sre2l", "minimax", "d4m", "dsa", "idm", "tesla", "datm"}   # printed, never run here
NOT_STUDENTS = {"swin_t", "vit_b_16"}          # printed student columns (Tables 4, 8) ddrepro.students lacks
CSV_HEAD = ["table", "source", "dataset", "model", "method", "ipc", "assembly", "teacher", "cluster_features", "t_lo",
            "t_hi", "short_side", "window", "mean", "std"]
IN1K = ["imagenet1k"]
TEACHERS = ["torchvision:resnet18", "torchvision:resnet50@IMAGENET1K_V1", "torchvision:resnet101@IMAGENET1K_V1", "torchvision:mobilenet_v2@IMAGENET1K_V1",
            "torchvision:efficientnet_b0", "torchvision:swin_t", "torchvision:vit_b_16"]
CROSS = ["resnet18", "resnet50", "resnet101", "mobilenet_v2", "efficientnet_b0"]   # Tables 4 / 8 students we run

# what each paper-scale file reproduces: (its CSV or None, datasets, IPCs, students)
TABLES = {
    "patchsel/table1": ("patchsel_table1.csv", ["imagenette", "imagewoof", "imagenet100", "imagenet1k"], [10, 50, 100],
                        ["resnet18", "resnet101"]),
    "patchsel/table2": ("patchsel_table2.csv", ["cifar10", "cifar100"], [10, 50], None),     # per teacher: see below
    "patchsel/table4": ("patchsel_table4.csv", IN1K, [50], CROSS),
    "patchsel/table5": ("patchsel_table5.csv", ["imagewoof", "imagenet1k"], [10, 50, 100], ["resnet18"]),
    **{f"patchsel/table7_start{t}": ("patchsel_table7.csv", IN1K, [50], ["resnet18"]) for t in ("01", "03", "05", "07")},
    "patchsel/table8": ("patchsel_table8.csv", IN1K, [10], CROSS),
    **{f"patchsel/table9_image{s}": ("patchsel_table9.csv", ["imagewoof"], [10, 50, 100], ["resnet18"]) for s in (128, 256, 512)},
    "patchsel/fig6": (None, IN1K, [50], ["resnet18"]),
    "patchsel/fig7": (None, IN1K, [50], ["resnet18"]),
    "patchsel/fig8_clusters": (None, IN1K, [50], ["resnet18"]),
    "patchsel/fig8_top": (None, IN1K, [50], ["resnet18"]),
}
# every patchsel_*.csv: its `table` value, `source` and dataset(s)
CSVS = {
    "patchsel_table1.csv": ("table1", "main", {"imagenette", "imagewoof", "imagenet100", "imagenet1k"}),
    "patchsel_table2.csv": ("table2", "main", {"cifar10", "cifar100", "tiny_imagenet"}),
    "patchsel_table4.csv": ("table4", "main", {"imagenet1k"}),
    "patchsel_table5.csv": ("table5", "main", {"imagewoof", "imagenet1k"}),
    "patchsel_table7.csv": ("table7", "supp", {"imagenet1k"}),
    "patchsel_table8.csv": ("table8", "supp", {"imagenet1k"}),
    "patchsel_table9.csv": ("table9", "supp", {"imagewoof"}),
}
SUBSETS = {"imagenette", "imagewoof", "imagenet100"}
RDED_OBSERVER = {"imagenette": "imagenet-nette", "imagewoof": "imagenet-woof", "imagenet100": "imagenet-100"}   # RDED's file names
LR = {"mobilenet_v2": 2.5e-3, "efficientnet_b0": 2e-3}                    # RDED argument.py; 1e-3 for the others


@pytest.fixture(scope="module")
def Config():
    "The notebook's `PatchselRunConfig`, from its own config cell (run alone, as the notebook runs it)."
    return config_class(NB, "PatchselRunConfig")


def _cells(tab, Config):
    return [(cell, _params(tab, cell), config_from_namespace(Config, _params(tab, cell))) for cell in table_cells(tab)]


def _side(cfg) -> int:
    "The image side the preflight resolves the assembly for: 32 for CIFAR (in memory), else DPS's short side."
    return 32 if cfg.dataset.startswith("cifar") else cfg.dps.short_side


def _eval(cfg, student) -> EvalConfig:
    "The EvalConfig one evaluation of a cell trains `student` with (as evaluate_sets → evaluate_set builds it)."
    return eval_config(cfg.protocol, cfg.preset, cfg.dataset, cfg.ipc, None, student, repeats=cfg.repeats, **cfg.eval_overrides)


# ------------------------------------------------------------------------------------------------- the files


def test_the_table_files_are_all_here():
    assert {s.name for s in PAPER_SCALE} == set(TABLES)
    assert all(s.notebook == "nbs/run_patchsel.ipynb" for s in FILES)
    for s in PAPER_SCALE:
        if not check_paper_csv_link(s, TABLES[s.name][0]):
            assert s.plot and s.plot["x"] in s.grid, s.name                  # a figure: a curve over its grid axis
    assert "tiny_imagenet" not in DATASETS and not [d for d in DATASETS if "tiny" in d]    # hence no cell for it
    # Table 3 (qualitative ticks) and supp. Table 6 (timings: benchmarks/patchsel_speed.py) have no grid
    assert not [s for s in PAPER_SCALE if s.name.startswith(("patchsel/table3", "patchsel/table6"))]
    assert (project_root() / "benchmarks" / "patchsel_speed.py").exists()
    assert (project_root() / "params" / "paper" / "patchsel_notes.md").exists()


def test_the_known_parameters_are_the_notebooks():
    check_known_parameters(NB, KNOWN_PARAMS, skip_missing=False)


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_every_parameter_is_a_run_parameter(tab):
    "No key of a patchsel file is silently ignored by the notebook's config cell; every override names a config field."
    check_run_parameters(tab, KNOWN_PARAMS, OUT, dps_overrides=DPSConfig, rded_overrides=RDEDConfig)


@pytest.mark.parametrize("tab", FILES, ids=lambda s: s.name)
def test_every_cell_builds_the_notebooks_config(tab, Config):
    "Through the notebook's own config class (names, types and ranges checked; DPSConfig and RDEDConfig built)."
    cells = _cells(tab, Config)
    assert cells
    assert len({cell_dir(tab, c) for c, _, _ in cells}) == len(cells), f"{tab.name}: two cells share a run folder"
    for cell, p, cfg in cells:
        assert all(getattr(cfg, k) == v for k, v in p.items()), cell
        assert isinstance(cfg.dps, DPSConfig) and isinstance(cfg.rded, RDEDConfig), cell
        assert (cfg.dps.ipc, cfg.rded.ipc) == (cfg.ipc, cfg.ipc), cell


def test_no_two_cells_of_any_file_share_a_run_folder():
    dirs = [cell_dir(s, c) for s in FILES for c in table_cells(s)]
    assert len(set(dirs)) == len(dirs)


# ------------------------------------------------------------------------------------------------- DPS and RDED


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_cells_select_with_the_papers_models_and_settings(tab, Config):
    _, datasets, ipcs, students = TABLES[tab.name]
    cells = _cells(tab, Config)
    assert sorted({cfg.dataset for _, _, cfg in cells}) == sorted(datasets)
    assert sorted({cfg.ipc for _, _, cfg in cells}) == ipcs
    for cell, p, cfg in cells:
        d, s = cfg.dps, cfg.dataset
        where = f"{tab.name} {cell}"
        assert (cfg.seed, cfg.repeats, cfg.protocol, cfg.preset) == (0, 5, "soft", "paper"), where    # "five ... networks"
        assert cfg.baselines == ["random_real"] and cfg.observer == "teacher", where
        assert (d.backbone, d.label_prompt, d.null_prompt) == ("sd-1.5", "An image of {}", "An image of ."), where   # §3.2
        assert (d.n_draws, d.score_sign, d.stride, d.dift_block, d.dift_ensemble, d.factor) == (16, "neg", 8, 1, 8, 2), where
        assert d.t_range == ((cfg.t_lo, cfg.t_hi) if tab.name.startswith("patchsel/table7") else (0.1, 0.7)), where
        assert d.dift_t == (cfg.dift_t if tab.name == "patchsel/fig7" else 160), where          # "1.60"
        assert d.n_clusters == (cfg.n_clusters if tab.name == "patchsel/fig8_clusters" else 32), where
        assert d.n_top == (cfg.n_top if tab.name == "patchsel/fig8_top" else 10), where
        assert d.cluster_features == (cfg.cluster_features if tab.name == "patchsel/table5" else "dift"), where
        if s.startswith("cifar"):         # Table 2: the whole 32-px image, upsampled to 256 px for the diffusion model
            assert (d.assembly, d.short_side, d.window, d.out_size) == ("single", 256, 256, 32), where
        elif tab.name.startswith("patchsel/table9"):
            assert (d.short_side, d.window, d.out_size) == (cfg.short_side, cfg.window, 224) and d.window <= d.short_side, where
        else:
            assert (d.short_side, d.window, d.out_size) == (256, 224, 224), where               # §4.1-§4.2
        asm = d.assembly_for(_side(cfg))
        if tab.name == "patchsel/table1":
            assert asm == cfg.assembly in ("stitch", "single"), where                          # Ours^C and Ours^S
        elif not s.startswith("cifar"):
            assert cfg.assembly == "auto" and asm == ("stitch" if cfg.ipc <= 10 else "single"), where   # §3.4, §4.2
        if tab.name == "patchsel/fig6":
            assert d.per_class == cfg.per_class <= 1300, where          # 1300: the largest ImageNet-1K class, i.e. all
        elif s == "imagenet1k":           # 300 (Fig. 6's text); Ours^C at IPC 100 needs 400 candidates, one per image
            assert d.per_class == (400 if cfg.ipc * 4 > 300 and asm == "stitch" else 300), where
        else:
            assert d.per_class is None, where                                                     # every image
        if students: assert cfg.students == students, where
        check_val_split(s, cfg.val_split, cfg.val_root)
        assert cfg.val_split == ("imagenet_val50" if s in SUBSETS else "auto"), where
        # the image figures draw 10 classes (Table 1: every cell, Figs. 4, 5, 11-15); elsewhere 10-class sets only
        assert cfg.figures == (tab.name == "patchsel/table1" or len(class_map(s)) <= 10), where
        assert cfg.focus_class == ("n02099601" if tab.name == "patchsel/table1" and s == "imagewoof" else None), where   # Figs. 3, 15
        if "rded" in cfg.methods:     # RDED: factor 2 at 224 px, 1 at 32 px; 5 crops; mipc 300 (600 at IPC 100)
            r = cfg.rded
            assert (r.factor, r.num_crops, r.crop_scale, r.mipc, r.out_size) == (
                1 if s.startswith("cifar") else 2, 5, (0.08, 1.0), 600 if cfg.ipc == 100 else 300, d.out_size), where
        assert set(cfg.methods) <= {"dps", "rded"} and "dps" in cfg.methods, where


def test_rded_runs_where_the_paper_prints_it():
    "RDED: Table 1's stitch cells (RDED's own factor-2 images and evaluation) and Table 2's ResNet-18 cells only."
    for tab in PAPER_SCALE:
        for cell in table_cells(tab):
            p = _params(tab, cell)
            want = {"patchsel/table1": cell.get("assembly") == "stitch",
                    "patchsel/table2": cell.get("teacher_arch") == "resnet18"}.get(tab.name, False)
            assert ("rded" in p["methods"]) == want, f"{tab.name} {cell}"


def test_the_table_axes_are_the_papers():
    t1 = BY_NAME["patchsel/table1"]
    assert t1.grid["assembly"] == ["stitch", "single"]
    t2 = BY_NAME["patchsel/table2"]
    for cell in table_cells(t2):             # each column's teacher is its student's architecture (§4.2, Table 2)
        p = _params(t2, cell)
        assert p["students"] == [cell["teacher_arch"]] and p["teacher_arch"] == cell["teacher_arch"]
        arch = {"convnet3": "conv3", "resnet18": "resnet18_modified"}[cell["teacher_arch"]]
        assert p["teacher"] == f"data/pretrain_models/{cell['dataset']}_{arch}.pth"          # RDED's release names
    for name in ("patchsel/table4", "patchsel/table8"):
        assert BY_NAME[name].grid == {"teacher": TEACHERS}
    assert BY_NAME["patchsel/table5"].grid["cluster_features"] == ["none", "clip", "dift"]
    assert BY_NAME["patchsel/table5"].base["clip_encoder"] == "open_clip:ViT-L-14:openai"            # the paper names no CLIP
    ranges = sorted((BY_NAME[n].base["t_lo"], hi) for n in TABLES if n.startswith("patchsel/table7")
                    for hi in BY_NAME[n].grid["t_hi"])
    printed = sorted((float(r["t_lo"]), float(r["t_hi"])) for r in paper_csv("patchsel_table7.csv").to_dict("records"))
    assert ranges == [x for x in printed if x[0] < x[1]] and len(ranges) == 10
    sizes = sorted((BY_NAME[n].base["short_side"], w) for n in TABLES if n.startswith("patchsel/table9")
                   for w in BY_NAME[n].grid["window"])
    assert sizes == sorted({(int(r["short_side"]), int(r["window"])) for r in paper_csv("patchsel_table9.csv").to_dict("records")})
    assert BY_NAME["patchsel/fig6"].grid == {"per_class": [50, 100, 200, 300, 500, 1300]}
    assert 160 in BY_NAME["patchsel/fig7"].grid["dift_t"]
    assert 32 in BY_NAME["patchsel/fig8_clusters"].grid["n_clusters"] and BY_NAME["patchsel/fig8_clusters"].base["n_top"] == 10
    assert 10 in BY_NAME["patchsel/fig8_top"].grid["n_top"] and BY_NAME["patchsel/fig8_top"].base["n_clusters"] == 32


# ------------------------------------------------------------------------------------------------- evaluation


RDED = dict(protocol="soft", preset="paper", optimizer="adamw", weight_decay=0.01, wd_all_params=False,
            schedule="rded_cosine", epochs=300, temperature=20.0, cutmix_p=1.0, cutmix_beta=1.0, jitter=0.0, lighting=0.0,
            flip=True, eval_every=10, eval_after=0.8, test_resize="rded", repeats=5, augment="rrc", width=128)


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_every_cell_evaluates_with_the_papers_protocol(tab, Config):
    for cell, p, cfg in _cells(tab, Config):
        s = cfg.dataset
        small = s.startswith("cifar")
        asm = cfg.dps.assembly_for(_side(cfg))
        for st in cfg.students:
            e, where = _eval(cfg, st), f"{tab.name} {cell} {st}"
            assert {k: getattr(e, k) for k in RDED} == RDED, where
            special = s == "cifar100" and st == "convnet3"                     # RDED argument.py: conv3 → conv3
            assert e.lr == (2e-3 if special else LR.get(st, 1e-3)), where
            assert e.batch_size == (25 if special else rded_batch_size(cfg.ipc, len(class_map(s)))), where
            assert e.size == (32 if small else 224), where
            # RDED's augmentation by image kind: factor 2 for stitched images, factor 1 for single patches and 32 px
            assert (e.shuffle_factor, e.rrc_scale) == ((2, (0.5, 1.0)) if asm == "stitch" and not small else (1, (1.0, 1.0))), where
        if s in SUBSETS:                          # RDED's observers trained on the subset
            assert (cfg.teacher, cfg.teacher_arch) == (f"data/pretrain_models/{RDED_OBSERVER[s]}_resnet18.pth", "resnet18"), cell
        elif s == "imagenet1k":
            assert cfg.teacher_arch is None and cfg.teacher == (cell["teacher"] if "teacher" in cell else "torchvision:resnet18"), cell
            # RDED's code: torchvision pretrained=True, i.e. the V1 weights file of every teacher (DEFAULT is V2 for three)
            assert torchvision_weights(cfg.teacher).name == "IMAGENET1K_V1", cell
        else:
            assert cfg.teacher.startswith(f"data/pretrain_models/{s}_"), cell


@pytest.mark.parametrize("tab", PAPER_SCALE, ids=lambda s: s.name)
def test_papermill_hands_the_notebook_the_values_of_the_file(tab):
    "Every -f / -p / -y value arrives with its type (t_lo 0.1 a float, rrc_scale a list, per_class null as None)."
    check_papermill_values(tab, OUT)


# ------------------------------------------------------------------------------------------------- paper numbers


@pytest.mark.parametrize("name", sorted(CSVS))
def test_paper_csvs_are_long_format_with_one_line_per_printed_number(name):
    table, source, datasets = CSVS[name]
    p = check_long_format_csv(name, CSV_HEAD, {table}, datasets, {source}, blank_std=True)
    assert set(p["method"]) <= RUN_METHODS | LITERATURE and set(p["model"]) <= set(STUDENTS) | NOT_STUDENTS, name
    assert (p["ipc"] != "").all() and set(p["assembly"]) <= {"", "stitch", "single"}, name
    for s in PAPER_SCALE:
        if s.paper and s.paper.endswith(name):
            assert not p.duplicated(list(s.paper_match.values()) + ["model"]).any(), f"{name}: a drawn cell would match twice"
    assert set(CSVS) == {f.name for f in (project_root() / "params" / "paper").glob("patchsel_*.csv")}


def test_the_csvs_agree_where_the_paper_repeats_a_number():
    "Tables 4 / 8 (ResNet-18 teacher), 5 (DIFT) and 9 (256 / 224) repeat Table 1's Ours^S / Ours^C numbers."
    t1 = {(r["dataset"], r["model"], r["ipc"], r["assembly"]): r["mean"] for r in paper_csv("patchsel_table1.csv").to_dict("records")
          if r["method"] == "dps"}
    for name, ipc, asm in (("patchsel_table4.csv", "50", "single"), ("patchsel_table8.csv", "10", "stitch")):
        for r in paper_csv(name).to_dict("records"):
            if r["teacher"] == "torchvision:resnet18" and r["model"] in ("resnet18", "resnet101"):
                assert r["mean"] == t1[("imagenet1k", r["model"], ipc, asm)], (name, r)
    for r in paper_csv("patchsel_table5.csv").to_dict("records"):
        if r["cluster_features"] == "dift":
            assert r["mean"] == t1[(r["dataset"], "resnet18", r["ipc"], "stitch" if r["ipc"] == "10" else "single")], r
    for r in paper_csv("patchsel_table9.csv").to_dict("records"):
        if (r["short_side"], r["window"]) == ("256", "224"):
            assert r["mean"] == t1[("imagewoof", "resnet18", r["ipc"], "stitch" if r["ipc"] == "10" else "single")], r


def _produced(cfg) -> list[dict]:
    """The result rows a cell's run writes (run_patchsel's evaluation cell): one per set (its methods and random real)
    per student, with the run's scalar parameters beside them (reports.record_rows adds those to every row)."""
    ctx = {k: v for k, v in cfg.to_dict().items() if isinstance(v, (str, int, float, bool)) or v is None}
    sets = list(cfg.methods) + (["random"] if "random_real" in cfg.baselines else [])
    return [dict(ctx, dataset=cfg.dataset, model=st, method=m, ipc=cfg.ipc) for st in cfg.students for m in sets]


def _gap(csv: str, line: dict) -> str | None:
    "Why a printed number of a method we run has no cell (None: it must have one). Kept exact by the test below."
    if line["dataset"] == "tiny_imagenet":
        return "Tiny-ImageNet is not a ddrepro dataset (ddrepro.data.DATASETS)"
    if line["model"] in NOT_STUDENTS:
        return f"student {line['model']} is not in ddrepro.students.STUDENTS"
    if csv == "patchsel_table7.csv" and line["t_lo"] == line["t_hi"]:
        return "the printed 0.5-0.5 range: DPSConfig needs t_lo < t_hi (a single timestep, or a misprint)"
    return None


GAPS = sorted(
    [("patchsel_table2.csv", "tiny_imagenet", m, meth, ipc, "") for ipc in ("10", "50")
     for m, meth in (("convnet4", "dps"), ("resnet18", "dps"), ("resnet18", "rded"))]
    + [(csv, "imagenet1k", st, "dps", ipc, t) for csv, ipc in (("patchsel_table4.csv", "50"), ("patchsel_table8.csv", "10"))
       for st in ("swin_t", "vit_b_16") for t in TEACHERS]
    + [("patchsel_table7.csv", "imagenet1k", "resnet18", "dps", "50", "")])


def test_a_cell_behind_every_printed_number_we_run(Config):
    "Every printed DPS / RDED number has a cell (its dataset, student and the table's keys), but the listed gaps."
    missing, gaps = [], []
    for name in sorted(CSVS):
        specs = [s for s in PAPER_SCALE if s.paper == f"params/paper/{name}"]
        assert specs and len({tuple(sorted(s.paper_match.items())) for s in specs}) == 1, name
        keys = sorted(set(specs[0].paper_match) | {"dataset", "model"})
        inv = {"dataset": "dataset", "model": "model", **specs[0].paper_match}
        have = {tuple(match_key(r.get(k)) for k in keys) for s in specs for _, _, cfg in _cells(s, Config) for r in _produced(cfg)}
        for line in paper_csv(name).to_dict("records"):
            if line["method"] not in RUN_METHODS: continue                    # the literature's numbers: not run
            hit, why = tuple(match_key(line[inv[k]]) for k in keys) in have, _gap(name, line)
            if why: gaps.append((name, line, hit))
            elif not hit: missing.append((name, {k: line[inv[k]] for k in keys}))
    assert not missing, f"printed numbers without a cell: {missing}"
    assert not [g for g in gaps if g[2]], "a listed gap has a cell now; shorten _gap"
    assert sorted((n, l["dataset"], l["model"], l["method"], l["ipc"], l["teacher"]) for n, l, _ in gaps) == GAPS
    assert len(GAPS) == 6 + 28 + 1


@pytest.mark.parametrize("tab", [s for s in PAPER_SCALE if s.paper], ids=lambda s: s.name)
def test_cells_run_only_the_papers_columns(tab, Config):
    "No cell makes rows for a method the table lacks but the paired random baseline; the students are the table's."
    paper = paper_csv(tab.paper)
    ours = [r for _, _, cfg in _cells(tab, Config) for r in _produced(cfg)]
    assert {r["method"] for r in ours} - set(paper["method"]) == {"random"}, tab.name
    assert {r["model"] for r in ours} <= set(paper["model"]), tab.name


# ------------------------------------------------------------------------------------------------- drawn beside the paper


def _fake_records(tab, root, Config):
    "A complete record per cell with the rows run_patchsel writes (made-up accuracies), its config as the params."
    from ddrepro.core import RunRecord
    for k, cell in enumerate(table_cells(tab)):
        out = cell_dir(tab, cell, root)
        cfg = config_from_namespace(Config, cell_params(tab, cell, root))
        rows = [dict(dataset=r["dataset"], method=r["method"], selector="", model=r["model"], ipc=r["ipc"], protocol=cfg.protocol,
                     preset=cfg.preset, settings="fake", acc_final_mean=0.5 + 0.001 * (i + 10 * k), acc_final_std=0.01,
                     acc_best_mean=0.6, acc_best_std=0.01, n_runs=5, fingerprint=f"fp{k}-{i}", finals=[0.5] * 5,
                     seeds=[0, 1, 2, 3, 4], set=r["method"])
                for i, r in enumerate(_produced(cfg))]
        rec = RunRecord.start(out, cfg, kind="patchsel")
        rec.results["rows"] = rows
        rec.finish()


@pytest.mark.parametrize("name,where,want", [
    ("patchsel/table1", dict(dataset="imagewoof", model="resnet18", method="dps", ipc="50", assembly="single"), "73.5 ± 1.4"),
    ("patchsel/table7_start01", dict(method="dps", t_hi="0.7"), "59.4"),
])
def test_a_drawn_table_shows_the_papers_numbers_beside_ours(name, where, want, tmp_path, Config):
    from ddrepro.reports import draw_table
    tab = BY_NAME[name]
    _fake_records(tab, tmp_path / "runs", Config)
    draw_table(tab, tmp_path / "runs", tmp_path / "figures")
    sbs = pd.read_csv(tmp_path / "figures" / f"{name.replace('/', '_')}_vs_paper.csv", dtype=str).fillna("")
    hit = sbs[(sbs[list(where)] == pd.Series(where)).all(axis=1)]
    assert list(hit["paper"]) == [want], sbs.to_string()
    assert list(hit["n"]) == ["5"]                                   # one record, its 5 training runs
    printed = {"patchsel/table1": 4 * 3 * 2 * 3, "patchsel/table7_start01": 4}[name]   # DPS C, DPS S, RDED; one row of Table 7
    assert (~sbs["paper"].isin(["", "–"])).sum() == printed
    if name == "patchsel/table1":                # the random real images of a stitch and a single cell stay apart
        rnd = sbs[(sbs.method == "random") & (sbs.dataset == "imagewoof") & (sbs.ipc == "50") & (sbs.model == "resnet18")]
        assert sorted(rnd["assembly"]) == ["single", "stitch"]


# ------------------------------------------------------------------------------------------------- fails fast offline


def test_the_run_notebook_stops_in_its_preflight_naming_sd15(tmp_path):
    "A Table 1 ImageNette cell through run_patchsel itself: data folders present, no weights cached → the preflight names SD-1.5."
    cell = {"dataset": "imagenette", "ipc": 10, "assembly": "stitch"}
    fake_image_folders(tmp_path / "imagenet", "imagenette", train_per_class=40)
    r, rec, seconds = run_until_preflight(BY_NAME["patchsel/table1"], cell, tmp_path / "imagenet", tmp_path)
    check_stopped_in_preflight(r, rec, "AssetError", "benjamin-paine/stable-diffusion-v1-5")
    assert (rec["params"]["backbone"], rec["params"]["assembly"], rec["params"]["dift_block"]) == ("sd-1.5", "stitch", 1)
    assert seconds < 150                                     # kernel start + imports; the preflight itself is seconds
