"Tests of ddrepro.reports: mean ± std, tables drawn from run records only, the table runner."
from pathlib import Path
import numpy as np
import pandas as pd
import pytest

from ddrepro.core import ConfigError, RunRecord
from ddrepro.reports import (cell_dir, cell_done, draw_table, fmt_mean_std, load_table_spec, mean_std, table_cells,
                             table_cli)
from ddrepro.sas import selector_label


def test_mean_std_is_population_std():
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and s == pytest.approx(np.sqrt(1.25))   # ddof=0, as np.std in Minimax/IDC
    assert fmt_mean_std(0.5994, 0.0081) == "59.9 ± 0.8"


def _spec_file(tmp_path, paper=None):
    p = tmp_path / "tab.yaml"
    lines = ["dataset: fashion_mnist", "table:", "  notebook: nbs/run_data.ipynb", "  title: Toy table",
             "  grid: {selector: [A, F], ipc: [10, 50]}", "  rows: [selector]", "  cols: [ipc]", "  methods: [sas]"]
    if paper:
        lines += [f"  paper: {paper}", "  paper_match: {selector: selector, ipc: ipc}"]
    p.write_text("\n".join(lines) + "\n")
    return p


def _fake_run(spec, cell, root, acc, status="complete"):
    d = cell_dir(spec, cell, root)
    rec = RunRecord.start(d, {"dataset": "fashion_mnist", **cell})
    rows = [dict(method="sas", student="convnet3", ipc=cell["ipc"], preset="embedded", acc_final_mean=acc,
                 acc_final_std=0.01, acc_best_mean=acc + 0.02, acc_best_std=0.01, n_runs=3),
            dict(method="random_real", student="convnet3", ipc=cell["ipc"], preset="embedded", acc_final_mean=0.1,
                 acc_final_std=0.0, acc_best_mean=0.1, acc_best_std=0.0, n_runs=3)]
    rec.results["rows"] = rows
    rec.finish() if status == "complete" else rec.save()
    return d


def test_draw_table_from_records_only(tmp_path):
    paper = tmp_path / "paper.csv"
    pd.DataFrame([dict(selector="F", ipc=50, mean=59.9, std=0.8)]).to_csv(paper, index=False)
    spec = load_table_spec(str(_spec_file(tmp_path, paper=paper)))
    accs = {("A", 10): 0.30, ("A", 50): 0.50, ("F", 10): 0.40, ("F", 50): 0.60}
    for c in table_cells(spec):
        _fake_run(spec, c, tmp_path / "runs", accs[(c["selector"], c["ipc"])])
    assert all(cell_done(cell_dir(spec, c, tmp_path / "runs")) for c in table_cells(spec))
    t = draw_table(spec, tmp_path / "runs", out=tmp_path / "fig")
    assert t.loc[selector_label("F"), "IPC 50"] == "60.0 ± 1.0" and t.loc[selector_label("A"), "IPC 10"] == "30.0 ± 1.0"
    assert list(t.index) == [selector_label(c) for c in "AF"] and t.index.name == "selection rule"
    md = (tmp_path / "fig" / "tab.md").read_text()
    assert "Toy table" in md and "evaluation preset: embedded" in md
    assert "| selection rule | IPC 10 | IPC 50 |" in md and "| random from pool: no s_rel, s_sep, s_div (A) |" in md
    assert "over 3 training run(s)" in md
    vs = pd.read_csv(tmp_path / "fig" / "tab_vs_paper.csv")
    row = vs[(vs.selector == "F") & (vs.ipc == 50)].iloc[0]
    assert row.paper == "59.9 ± 0.8" and row.delta == pytest.approx(0.1)
    long = pd.read_csv(tmp_path / "fig" / "tab_long.csv")
    assert long.best_mean.max() == pytest.approx(0.62)   # best-epoch number kept beside the final one


def test_incomplete_cells_are_rerun_and_not_drawn(tmp_path):
    spec = load_table_spec(str(_spec_file(tmp_path)))
    c0, *_ = table_cells(spec)
    d = _fake_run(spec, c0, tmp_path / "runs", 0.3, status="running")
    assert not cell_done(d)
    with pytest.raises(ConfigError, match="no complete records"):
        draw_table(spec, tmp_path / "runs", out=tmp_path / "fig")


def test_table_spec_errors(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("ipc: 1\ntable:\n  notebook: nbs/run_data.ipynb\n  grid: {ipc: 5}\n  rows: [a]\n  cols: [b]\n")
    with pytest.raises(ConfigError, match="table.grid.ipc must be a non-empty list"):
        load_table_spec(str(p))
    p.write_text("ipc: 1\ntable:\n  notebook: x\n  grid: {ipc: [1]}\n  rows: [a]\n  colz: [b]\n")
    with pytest.raises(ConfigError, match="lacks \\['cols'\\]"):
        load_table_spec(str(p))


def test_table_cli_runs_cells_through_papermill_and_skips_done(tmp_path, capsys):
    p = tmp_path / "t.yaml"
    p.write_text("dataset: fashion_mnist\ntable:\n  notebook: nbs/run_data.ipynb\n  grid: {ipc: [2]}\n  rows: [dataset]\n  cols: [ipc]\n")
    spec = load_table_spec(str(p))
    d = cell_dir(spec, {"ipc": 2}, tmp_path / "runs")
    with pytest.raises(ConfigError, match="no complete records"):   # run_data writes no result rows to draw
        table_cli([str(p), "--runs", str(tmp_path / "runs")])
    assert cell_done(d) and (d / "run_data.ipynb").exists()
    assert RunRecord.load(d).params["ipc"] == 2
    with pytest.raises(ConfigError):
        table_cli([str(p), "--runs", str(tmp_path / "runs")])
    assert "1 already complete, 0 to run" in capsys.readouterr().out


def test_draw_table_writes_a_records_summary(tmp_path):
    spec = load_table_spec(str(_spec_file(tmp_path)))
    cells = table_cells(spec)
    for c in cells[:3]:
        _fake_run(spec, c, tmp_path / "runs", 0.5)
    draw_table(spec, tmp_path / "runs", out=tmp_path / "fig")
    rec = pd.read_csv(tmp_path / "fig" / "tab_records.csv")
    assert len(rec) == 4 and (rec.status == "complete").sum() == 3 and (rec.status == "missing").sum() == 1
    assert rec.record.dropna().str.endswith("record.json").all() and "git_sha" in rec and "wall_s" in rec




def test_table1_draws_named_columns_cites_idc_and_counts_a_shared_evaluation_once(tmp_path):
    p = tmp_path / "t1.yaml"
    p.write_text("dataset: imagewoof\ntable:\n  notebook: nbs/run_sas.ipynb\n  title: T1\n  grid: {pool: [dit, minimax], ipc: [10]}\n"
                 "  rows: [ipc, model]\n  cols: [method, selector]\n  paper: params/paper/sas_table1.csv\n"
                 "  paper_match: {model: model, method: method, selector: selector, ipc: ipc}\n  cited: [{method: idc}]\n")
    spec = load_table_spec(str(p))
    for cell in table_cells(spec):
        d = cell_dir(spec, cell, tmp_path / "runs")
        rec = RunRecord.start(d, {"dataset": "imagewoof", **cell})
        row = lambda method, selector, finals: dict(method=method, selector=selector, model="resnet_ap10", ipc=10, preset="paper",
                                                    acc_final_mean=float(np.mean(finals)), acc_final_std=float(np.std(finals)),
                                                    n_runs=3, seeds=[0, 1, 2], finals=finals, fingerprint=f"{method}{selector}{cell['pool']}"
                                                    if method not in ("random", "full") else method)   # the real-image sets: one evaluation
        rec.results["rows"] = [row(cell["pool"], "sas", [0.40, 0.41, 0.42]), row(cell["pool"], "kcenter", [0.30, 0.31, 0.32]),
                               row("random", "", [0.27, 0.28, 0.29]), row("full", "", [0.86, 0.87, 0.88])]
        rec.finish()
    t = draw_table(spec, tmp_path / "runs", out=tmp_path / "fig")
    cols = [" / ".join(x for x in c if x) for c in t.columns]
    assert cols == ["Random (real images)", "IDC [21] — cited from the paper, not run", "DiT / K-Center on the pool",
                    "DiT / SAS", "Minimax / K-Center on the pool", "Minimax / SAS", "Full dataset (all real training images)"]
    row = t.loc[("IPC 10", "ResNetAP-10")]
    assert row["IDC [21] — cited from the paper, not run"].iloc[0] == "37.3 ± 0.4"
    assert row["Random (real images)"].iloc[0] == "28.0 ± 0.8"      # the random-real set of both cells counted once, std of its runs
    md = (tmp_path / "fig" / "t1.md").read_text()
    assert "with training seeds 0, 1, 2" in md and "not run here" in md
    vs = pd.read_csv(tmp_path / "fig" / "t1_vs_paper.csv", dtype=str).fillna("")
    assert vs[(vs.method == "full")].paper.iloc[0] == "87.5 ± 0.5"    # our full-data cell beside the paper's Full Dataset


def test_cited_needs_a_paper_csv(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("table:\n  notebook: n\n  grid: {ipc: [1]}\n  rows: [ipc]\n  cols: [method]\n  cited: [{method: idc}]\n")
    with pytest.raises(ConfigError, match="table.cited needs table.paper"):
        load_table_spec(str(p))


def test_the_gallery_lists_every_figure_and_every_entry_has_its_files():
    "figures/README.md is the index of figures/: a file with no entry, or an entry or link with no file, fails."
    import re
    from ddrepro.reports import gallery_entries, GALLERY_NAME
    figures = Path(__file__).resolve().parents[1] / "figures"
    entries = gallery_entries(figures)                       # raises on a file that belongs to no entry
    listed = [f for e in entries for f in e["files"]]
    on_disk = sorted(f.name for f in figures.iterdir() if f.is_file() and f.name != GALLERY_NAME)
    assert sorted(listed) == on_disk and len(listed) == len(set(listed))
    text = (figures / GALLERY_NAME).read_text()
    assert text.startswith("# Figure gallery")
    for f in on_disk:
        assert f"]({f})" in text, f"figures/{GALLERY_NAME} does not list {f}: run `make figures`"
    for link in re.findall(r"\]\(([^)#\s]+)\)", text):
        assert (figures / link).is_file(), f"figures/{GALLERY_NAME} links {link}, which is not in figures/"
    for e in entries:
        assert e["command"] and e["scale"] in ("embedded", "paper") and "commit" in e["records"]


def test_papermill_command_passes_mappings_and_lists_as_yaml_with_their_types(tmp_path):
    import yaml
    from ddrepro.reports import papermill_command
    p = tmp_path / "t.yaml"
    p.write_text("dataset: fashion_mnist\ntable:\n  notebook: nbs/run_dsco.ipynb\n"
                 "  grid: {nopt_overrides: [{lam_align: 5.0e-5}], doping_budgets: [[50, 200]]}\n  rows: [set]\n  cols: [ipc]\n")
    spec = load_table_spec(str(p))
    cell = table_cells(spec)[0]
    cmd = papermill_command(spec, cell, tmp_path / "out")
    ys = [yaml.safe_load(cmd[i + 1]) for i, a in enumerate(cmd) if a == "-y"]
    assert {"nopt_overrides": {"lam_align": 5e-05}} in ys and {"doping_budgets": [50, 200]} in ys
    nopt = next(y["nopt_overrides"] for y in ys if "nopt_overrides" in y)
    assert isinstance(nopt["lam_align"], float)                    # not the string '5e-05'
    assert yaml.safe_load(repr(5e-05)) == "5e-05"                  # why a repr would not do


def test_delta_label_uses_the_baselines_own_set_name_when_rows_have_one():
    from ddrepro.reports import delta_label
    rows = pd.DataFrame([dict(method="dit", selector="", set="DiT†"), dict(method="random", selector="ipc50", set="random real")])
    assert delta_label("dit", rows) == "DiT†" and delta_label("random/ipc50", rows) == "random real (ipc50)"
    assert delta_label("dit") == delta_label("dit", rows.drop(columns="set")) != "DiT†"     # SAS's wording otherwise


def test_paper_item_names_the_method_and_its_table_or_figure():
    "The gallery's 'reproduces' column: the method and item from a table title, one- or two-word method names, supp."
    from ddrepro.reports import _PAPER_ITEM
    got = {t: (m.group(1), m.group(2)) if (m := _PAPER_ITEM.match(t)) else None for t in (
        "SAS Table 2 (embedded): ResNetAP-10", "Patch selection supp. Table 7 (embedded): range", "CONCORD Fig. 3 (embedded)",
        "Patch selection Figs. 6 and 8", "embedded zoo samples")}
    assert list(got.values()) == [("SAS", "Table 2"), ("Patch selection", "supp. Table 7"), ("CONCORD", "Fig. 3"),
                                  ("Patch selection", "Figs. 6 and 8"), None]
