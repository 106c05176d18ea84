"""The DsCo run notebook end to end through papermill (embedded zoo, tiny budget) and its fail-fast config cell
(its parameters cell against `DsCoConfig` is checked in test_notebooks.py with the other run notebooks)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ddrepro.core import ConfigError
from ddrepro.data import class_map, load_distilled
from ddrepro.dsco import DsCoConfig, NOptConfig

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = [str(Path(sys.executable).parent / "papermill")]
NB = ROOT / "nbs" / "run_dsco.ipynb"


def _papermill(tmp_path, *args, timeout=900):
    env = dict(os.environ, DDREPRO_PROGRESS="0", HF_HUB_OFFLINE="1")
    return subprocess.run(PAPERMILL + [str(NB), str(tmp_path / "out.ipynb"), "--cwd", str(ROOT), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_run_dsco_embedded_smoke(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = _papermill(tmp_path, "-p", "ipc", "2", "-p", "num_steps", "4", "-p", "iters", "2", "-p", "n_temp", "4",
                   "-p", "real_per_class", "20", "-p", "repeats", "1", "-y", "eval_overrides: {epochs: 2}",
                   "-y", "doping_budgets: [3]", "-p", "doping_real_per_class", "30",
                   "-p", "template_dir", str(tmp_path / "templates"), "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    print(f"smoke run: {time.perf_counter() - t0:.0f} s")
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and rec["params"]["ipc"] == 2 and rec["params"]["iters"] == 2
    assert set(rec["stages"]) >= {"preflight", "synthesize_dsco", "synthesize_dfdsco", "synthesize_dit", "doping", "evaluate"}
    cm = class_map("fashion_mnist")
    for name in ("dsco", "dfdsco", "dit"):                  # exactly IPC per class, readable as distilled sets
        assert load_distilled(out / "distilled" / name, cm, 2, exact=True).per_class() == [2] * 10
    assert list((tmp_path / "templates").glob("template_c*_s4_*.pt"))   # DFDsCo's template statistics, cached
    rows = pd.DataFrame(rec["results"]["rows"])
    main = rows[rows.selector == ""]
    assert sorted(main.set) == ["DFDsCo", "DiT†", "DsCo", "random real"]
    assert (main.delta_vs == "random").all() and (main.ipc == 2).all() and (rows.n_runs == 1).all()
    # Doping: budget 3 over base 2 → 10 real images (global ranking, unbalanced) + the 20 DsCo images
    doped = load_distilled(out / "doped" / "ipc3", cm)
    assert sum(doped.per_class()) == 30 and min(doped.per_class()) >= 2
    meta = json.loads((out / "doped" / "ipc3" / "doping.json").read_text())
    assert meta["real"] == 10 and meta["base_ipc"] == 2 and len(meta["real_indices"]) == 10
    assert rec["stages"]["doping"]["scored"] == 300 and rec["stages"]["doping"]["from_cache"] is False
    dr = rows[rows.selector == "ipc3"]
    assert sorted(dr.set) == ["DsCo + Doping", "random real"] and (dr.delta_vs == "random/ipc3").all() and (dr.budget == 3).all()
    assert rec["results"]["dope_trigger_point"] == dict(ipc=2, n_recognized=rec["results"]["dope_trigger_point"]["n_recognized"], n_scored=300)
    assert rec["results"]["doping"]["base"] == "dsco" and rec["results"]["doping"]["select"] == "confusion"
    # a rerun into the same folder resumes: the three finished sets are reused, not synthesised again. It dopes with
    # Table 8's Doping × (doping_select random): the DsCo set + 10 random real images, no φ_S, no teacher
    r = _papermill(tmp_path, "-p", "ipc", "2", "-p", "num_steps", "4", "-p", "iters", "2", "-p", "n_temp", "4",
                   "-p", "real_per_class", "20", "-p", "repeats", "1", "-y", "eval_overrides: {epochs: 2}",
                   "-y", "doping_budgets: [3]", "-p", "doping_real_per_class", "30", "-p", "doping_select", "random",
                   "-p", "template_dir", str(tmp_path / "templates"), "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec2 = json.loads((out / "record.json").read_text())
    assert all(rec2["stages"][f"synthesize_{n}"].get("from_cache") for n in ("dsco", "dfdsco", "dit"))
    rf = load_distilled(out / "doped" / "ipc3", cm)
    assert sum(rf.per_class()) == 30 and min(rf.per_class()) >= 2
    assert rec2["results"]["doping"] == dict(base="dsco", select="random", method="dsco_randfill", phi_s_overrides=None,
                                             budgets={"3": dict(per_class=rf.per_class(), real=10)})
    assert "dope_trigger_point" not in rec2["results"] and "scored" not in rec2["stages"]["doping"]
    assert "doping_teacher" not in rec2["assets"]                     # a random fill needs no φ_T
    meta = json.loads((out / "doped" / "ipc3" / "doping.json").read_text())
    assert meta["synthetic"] == 20 and meta["real"] == 10 and meta["conf"] is None
    assert len(set(meta["real_indices"])) == 10 and max(meta["real_indices"]) < 300    # positions in the 300-image pool
    assert sorted(p.name for p in (out / "doped" / "ipc3").rglob("syn_*.png")) == sorted(f"syn_{k}.png" for k in (0, 1) for _ in range(10))
    dr = pd.DataFrame(rec2["results"]["rows"]).query("selector == 'ipc3'")
    assert sorted(dr.set) == ["DsCo + random real", "random real"] and (dr.delta_vs == "random/ipc3").all()
    lam = dr.set_index("method").lam_align                            # an NOpt set: it carries the NOpt weights
    assert lam["dsco_randfill"] == NOptConfig().lam_align and pd.isna(lam["random"])
    assert {"dit", "vae", "doping_teacher"} <= set(rec["assets"])
    for f in ("fig5_class_grids.png", "fig6_latent_tsne.png", "fig7_confusion_ordered.png", "fig8_group_distances.png"):
        assert (out / f).stat().st_size > 1000, f                  # the paper's Figs. 5-8 drawn from this run


@pytest.mark.slow
def test_run_dsco_random_real_base_with_confusion_doping(tmp_path):
    """Table 8's NOpt ×, Doping ✓ (doping_base random_real): the base is the random real set at IPC 2, φ_S is trained on
    it, and the 10 confusion-picked real images come from the pool without the base's 20 (no image twice). DiT† only
    (modes [off]): a random-real base needs no DsCo set."""
    out = tmp_path / "run"
    r = _papermill(tmp_path, "-p", "ipc", "2", "-p", "num_steps", "4", "-y", "modes: ['off']", "-p", "repeats", "1",
                   "-y", "eval_overrides: {epochs: 2}", "-y", "doping_budgets: [3]", "-p", "doping_real_per_class", "30",
                   "-p", "doping_base", "random_real", "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and "synthesize_dsco" not in rec["stages"]
    cm = class_map("fashion_mnist")
    doped = load_distilled(out / "doped" / "ipc3", cm)
    assert sum(doped.per_class()) == 30 and min(doped.per_class()) >= 2
    meta = json.loads((out / "doped" / "ipc3" / "doping.json").read_text())
    assert (meta["synthetic"], meta["real"], meta["base_prefix"]) == (20, 10, "base")
    assert len(list((out / "doped" / "ipc3").rglob("base_*.png"))) == 20 and len(list((out / "doped" / "ipc3").rglob("real_*.png"))) == 10
    # the scored pool: the 300 images of doping_real_per_class 30 without the base's 20; picks are positions in it
    pool_file = Path(rec["results"]["doping_pool"]["indices_file"])
    pool_meta = json.loads(pool_file.read_text())
    pool, base = pool_meta["indices"], json.loads(Path(pool_meta["without"]).read_text())["indices"]   # training-set indices
    assert len(pool) == 280 == len(set(pool)) and len(base) == 20 and not set(pool) & set(base)
    picked = [pool[i] for i in meta["real_indices"]]
    assert len(set(picked)) == 10 and not set(picked) & set(base)          # no image in the base and picked as well
    assert rec["stages"]["doping"]["scored"] == 280 and rec["results"]["doping_pool"]["without_base"] is True
    assert rec["results"]["doping"]["method"] == "random_doped" and rec["results"]["doping"]["phi_s_overrides"] == {"epochs": 2}
    assert rec["results"]["dope_trigger_point"]["n_scored"] == 280
    rows = pd.DataFrame(rec["results"]["rows"])
    dr = rows[rows.selector == "ipc3"]
    assert sorted(dr.set) == ["random real", "random real + Doping"] and (dr.delta_vs == "random/ipc3").all()
    assert dr[dr.method == "random_doped"].lam_align.isna().all()         # not an NOpt set: no NOpt weights
    assert sorted(rows[rows.selector == ""].set) == ["DiT†", "random real"]


def test_bad_parameters_fail_in_milliseconds_naming_them():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"modes=\['xyz'\]: expected distinct names from \['da', 'df', 'off'\]"):
        DsCoConfig(modes=["xyz"], out_dir="/tmp/ddrepro-unused")
    with pytest.raises(ConfigError, match=r"doping_budgets=\[1\]: expected budgets above the base IPC ipc = 2"):
        DsCoConfig(ipc=2, doping_budgets=[1], out_dir="/tmp/ddrepro-unused")
    assert time.perf_counter() - t0 < 1


def test_run_dsco_rejects_a_bad_mode_in_the_config_cell(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = _papermill(tmp_path, "-y", "modes: [xyz]", "-p", "out_dir", str(out), timeout=300)
    assert r.returncode != 0
    assert "ConfigError: modes=['xyz']" in r.stderr + r.stdout
    assert not (out / "record.json").exists()                 # nothing started: no record, no data, no zoo
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    failed = [c for c in nb["cells"] if c["cell_type"] == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "config_from_namespace(DsCoConfig" in "".join(failed[0]["source"])
    assert time.perf_counter() - t0 < 120


def test_a_count_above_the_smallest_class_stops_in_the_preflight(tmp_path):
    "real_per_class / doping budgets above Fashion-MNIST's 6,000 per class: a DataError naming them, before any synthesis."
    r = _papermill(tmp_path, "-p", "real_per_class", "7000", "-y", "doping_budgets: [20, 6500]", "-p", "out_dir", str(tmp_path / "run"),
                   timeout=300)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "DataError" in err and "6000 training images" in err and "'real_per_class': 7000" in err and "doping budget 6500" in err, err[-3000:]
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert list(rec["stages"]) == ["preflight"]


def test_run_dsco_takes_the_synthesis_cache_from_the_library():
    "The shared synthesis cache (key, reuse, share, where) is ddrepro.dsco's, tested there; the run notebook only calls it."
    code = "\n".join("".join(c["source"]) for c in json.loads(NB.read_text())["cells"] if c["cell_type"] == "code")
    for name in ("synthesis_key", "reuse_set", "share_set", "shared_synthesis_dir"):
        assert f"def {name}" not in code and f"{name}(" in code, name
    assert "UNUSED_BY" not in code and "_DF_ONLY" not in code and "hashlib" not in code
    assert "from ddrepro.dsco import class_latents, reuse_set, share_set, shared_synthesis_dir, synthesis_key, synthesize_set" in code
