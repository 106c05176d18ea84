import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrepro.core import (ConfigError, RunConfig, RunRecord, atomic_write, config_from_namespace, derive_seed,
                          file_sha256, load_config, pick_device, read_json, seed_everything, write_json, DataError)


def test_atomic_write_keeps_old_file_on_interrupt(tmp_path):
    p = write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write('{"a": 2, "trunc')
            raise RuntimeError("killed")
    assert read_json(p) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_atomic_write_survives_sigkill(tmp_path):
    """A process killed mid-write leaves the previous file intact (only a stray temp file at most)."""
    target = tmp_path / "big.json"
    write_json(target, {"v": "old"})
    code = f"""
import os, signal
from ddrepro.core import atomic_write
with atomic_write({str(target)!r}) as f:
    f.write('x' * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code])
    assert r.returncode != 0
    assert read_json(target) == {"v": "old"}


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.json: file not found"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_seed_everything_reproduces_all_rngs():
    import random
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "pool", 1, 2) == derive_seed(0, "pool", 1, 2)
    seeds = {derive_seed(0, "pool", c, k) for c in range(10) for k in range(100)}
    assert len(seeds) == 1000
    assert 0 <= derive_seed(5, "x") < 2**63
    # pinned: changing the derivation would silently change every pool
    assert derive_seed(0, "pool", 0, 0) == derive_seed(0, "pool", "0", "0")


def test_config_priority_yaml_then_overrides(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("dataset: imagewoof\nipc: 10\nseed: 3\n")
    cfg = load_config(RunConfig, p, ipc=50)
    assert (cfg.dataset, cfg.ipc, cfg.seed) == ("imagewoof", 50, 3)
    assert cfg.out_dir.endswith("runs/run/imagewoof_ipc50_seed3")


@pytest.mark.parametrize("content,msg", [
    ("ipc: [1, 2]\n", "ipc=[1, 2] is not a valid int"),
    ("ipc: 2.5\n", "ipc=2.5 is not a valid int"),
    ("foo: 1\n", "unknown parameter(s) ['foo']"),
    ("- a\n- b\n", "expected a mapping"),
    ("ipc: [\n", "not valid YAML"),
    ("ipc: -3\n", "ipc=-3: expected a positive number"),
])
def test_config_errors_name_file_value_and_expectation(tmp_path, content, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(content)
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, p)
    assert msg in str(e.value)


def test_config_from_namespace_ignores_other_variables():
    cfg = config_from_namespace(RunConfig, {"ipc": "20", "table": {"grid": 1}, "pd": object()})
    assert cfg.ipc == 20


def test_pick_device():
    assert pick_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")


def test_run_record_roundtrip_and_stages(tmp_path):
    rec = RunRecord.start(tmp_path / "r", {"ipc": 10, "seed": 7})
    assert rec.path.exists() and rec.seeds == {"seed": 7}
    with rec.stage("gen", verbose=False) as st:
        st["images_per_s"] = 10.0
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    rec.add_asset("weights", path=weights, id="local")
    rec.finish(acc=0.25)
    d = json.loads(rec.path.read_text())
    assert d["status"] == "complete" and d["results"] == {"acc": 0.25}
    assert d["stages"]["gen"]["images_per_s"] == 10.0 and d["stages"]["gen"]["wall_s"] >= 0
    assert d["assets"]["weights"]["sha256"] == file_sha256(weights)
    assert set(d["git"]) == {"sha", "dirty"} and d["packages"]["torch"]
    assert "cpu_rss_mb" in d["stages"]["gen"]
    assert RunRecord.load(tmp_path / "r").results == {"acc": 0.25}
