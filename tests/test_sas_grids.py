"""Every shipped SAS table grid runs what its paper column says: each cell's run config (what run_sas.ipynb builds from
`-f <table file>` + the cell's `-p` values) resolves — without loading any weights — to the generator, weights,
encoder, students and test split of the paper's column. A DiT column samples the public DiT-XL/2, a Minimax column a
Minimax checkpoint (never the DiT one; per subset in Table 2)."""
import dataclasses

import pytest

from ddrepro.core import AssetError, config_from_namespace
from ddrepro.pools import POOLS
from ddrepro.reports import cell_extra_params, cell_run_params, table_cells
from ddrepro.sas import SASConfig
from grid_checks import method_specs, paper_csv

SPECS, PAPER_SCALE, _ = method_specs("sas/")


def _cells(spec):
    "(cell, SASConfig, resolved generator sources, PoolConfig) for every cell of `spec`, as the run notebook builds them."
    out = []
    for cell in table_cells(spec):
        params = {**cell_run_params(spec, cell), "table": {"ignored": True}, "out_dir": "/tmp/ddrepro-grid-test"}
        cfg = config_from_namespace(SASConfig, params)          # exactly the run notebook's config cell
        out.append((cell, cfg, cfg.generator_sources(), cfg.pool_config()))
    return out


def test_the_specs_are_all_here():
    names = {s.name for s in SPECS}
    assert {f"sas/table{i}" for i in (2, 3, 4, 5, 6)} | {"sas/table1_imagewoof", "sas/fig3", "sas/fig5"} <= names
    assert {f"sas/embedded/table{i}" for i in (1, 2, 3, 4, 5, 6)} | {"sas/embedded/fig3", "sas/embedded/fig5"} <= names
    assert all(s.notebook == "nbs/run_sas.ipynb" for s in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_cell_resolves_to_its_column(spec):
    paper_scale = "/embedded/" not in spec.name
    for cell, cfg, src, pc in _cells(spec):
        assert pc.generator == cfg.pool == src["pool"] and pc.generator_weights == cfg.generator_weights, cell
        assert cfg.pool in POOLS and pc.dataset == cfg.dataset
        if not paper_scale:                                  # embedded: the zoo's DiT / Minimax fine-tune of it
            assert cfg.dataset == "fashion_mnist" and cfg.encoder == "zoo" and cfg.val_split == "auto"
            assert src["weights_kind"] == {"dit": "zoo", "minimax": "zoo-minimax"}[cfg.pool], cell
            continue
        if cfg.pool == "dit":                                # "DiT [37]": the public DiT-XL/2 weights
            assert (src["weights_kind"], src["weights"]) == ("hub", "DiT-XL-2-256"), cell
        elif cfg.pool == "minimax":                          # "Minimax [13]": DiT-XL/2 fine-tuned on this subset
            assert src["weights_kind"] == "local" and "DiT-XL-2-256" != src["weights"], cell
            assert f"/{cfg.dataset}_" in f"/{src['weights']}", f"{spec.name} {cell}: {src['weights']} is not a {cfg.dataset} checkpoint"
        else:                                                # Table 3 "Diffusion [20]": the CIFAR-10 pixel DDPM
            assert (cfg.pool, cfg.dataset, src["weights"]) == ("ddpm", "cifar10", "cifar10-ddpm"), cell
        assert src["vae"] in (None, "sd-vae-ft-mse")                               # Minimax sample.py's decoder
        assert cfg.encoder == "open_clip:ViT-B-32:openai"                           # CLIP ViT-B/32, OpenAI weights
        assert cfg.val_split == ("auto" if cfg.dataset == "cifar10" else "imagenet_val50"), cell   # ImageNet's 50 val images per class
        assert (cfg.protocol, cfg.preset, cfg.repeats) == ("hard", "paper", 3)


@pytest.mark.parametrize("spec", [s for s in PAPER_SCALE if s.paper], ids=lambda s: s.name)
def test_cells_cover_the_papers_generative_columns_with_its_students(spec):
    paper = paper_csv(spec.paper)
    cells = _cells(spec)
    models = sorted(set(paper["model"]) - {""})
    for _, cfg, _, _ in cells:
        assert sorted(cfg.students) == models, f"{spec.name}: students {cfg.students}, paper columns {models}"
    have = {(cfg.dataset, cfg.pool, str(cfg.ipc)) for _, cfg, _, _ in cells}
    want = {(r["dataset"], r["method"], r["ipc"]) for r in paper.to_dict("records") if r["method"] in POOLS}
    assert want and want <= have, f"{spec.name}: paper columns without a cell: {sorted(want - have)}"
    ours = {cfg.pool for _, cfg, _, _ in cells}
    assert ours <= set(paper["method"]), f"{spec.name}: cells for pools {ours - set(paper['method'])} the paper has no column for"


def test_table1_dit_and_minimax_columns_sample_different_weights():
    spec = next(s for s in SPECS if s.name == "sas/table1_imagewoof")
    by_pool = {}
    for cell, cfg, src, _ in _cells(spec):
        by_pool.setdefault(cfg.pool, set()).add(src["weights"])
    assert by_pool == {"dit": {"DiT-XL-2-256"}, "minimax": {"runs/minimax/imagewoof_DiT-XL-2-256_seed0/ema"}}
    dit = next(c for c in table_cells(spec) if c["pool"] == "dit")
    assert cell_extra_params(spec, dit) == {"generator_weights": "DiT-XL-2-256"}


def test_table2_minimax_checkpoints_are_per_subset():
    spec = next(s for s in SPECS if s.name == "sas/table2")
    w = {(cfg.dataset, cfg.pool): src["weights"] for _, cfg, src, _ in _cells(spec)}
    assert w[("imagenette", "dit")] == w[("imageidc", "dit")] == "DiT-XL-2-256"
    assert len({w[("imagenette", "minimax")], w[("imageidc", "minimax")], "DiT-XL-2-256"}) == 3
    # pools are keyed by generator and weights: four different pool folders, shared across IPC
    dirs = {(cfg.dataset, cfg.pool): pc.out_dir for _, cfg, _, pc in _cells(spec)}
    assert len(set(dirs.values())) == 4


def test_embedded_dit_and_minimax_columns_differ():
    for spec in [s for s in SPECS if "/embedded/" in s.name and "pool" in s.grid]:
        srcs = {cfg.pool: src["weights"] for _, cfg, src, _ in _cells(spec)}
        assert srcs["dit"] == "zoo" and srcs["minimax"].startswith("zoo-minimax:"), spec.name


def test_a_missing_minimax_checkpoint_fails_fast_naming_generator_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                              # relative checkpoint paths are read from the cwd
    spec = next(s for s in SPECS if s.name == "sas/table2")
    cell = {"dataset": "imageidc", "pool": "minimax", "ipc": 10}
    cfg = config_from_namespace(SASConfig, {**cell_run_params(spec, cell), "out_dir": str(tmp_path / "run")})
    with pytest.raises(AssetError, match=r"generator_weights=runs/minimax/imageidc_DiT-XL-2-256_seed0/ema: no such file"
                                         r".*--dataset imageidc .*--dit DiT-XL-2-256"):
        cfg.check_assets()
    (tmp_path / "runs/minimax/imageidc_DiT-XL-2-256_seed0/ema").mkdir(parents=True)
    assert cfg.check_assets()["weights_kind"] == "local"    # present: the names and files check out (nothing loaded)


def test_cell_params_never_shadow_grid_values():
    for spec in SPECS:
        for rule in spec.cell_params:
            assert not set(rule["set"]) & set(spec.grid), spec.name
            assert set(rule["set"]) <= {f.name for f in dataclasses.fields(SASConfig)}, spec.name
