"""The DD-Ranking cross-check (benchmarks/ddranking_crosscheck.py + ddranking_worker.py): .pt export, CSV resume,
error messages, and (slow, needs .venv-ddranking) one tiny worker run end to end."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DDR_PYTHON = ROOT / ".venv-ddranking" / "bin" / "python"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cc():
    return _load("ddranking_crosscheck")


class _Set:
    "A stand-in for ddrepro.data.ImageSet: images, labels, class_map.names."
    def __init__(self, n_per_class=2, classes=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(classes).repeat_interleave(n_per_class)
        self.images = torch.randint(0, 256, (len(self.labels), 3, 32, 32), dtype=torch.uint8, generator=g)
        self.class_map = type("CM", (), {"names": tuple(f"c{i}" for i in range(classes))})()


def test_pt_export_round_trips_exactly(cc, tmp_path):
    s = _Set(3, seed=1)
    p = cc.save_image_set(tmp_path / "d" / "a set.pt", s, "DiT pool CFG 4")
    d = torch.load(p, weights_only=True)                       # what the worker reads
    assert d["images"].dtype == torch.uint8 and torch.equal(d["images"], s.images)
    assert d["labels"].dtype == torch.long and torch.equal(d["labels"], s.labels)
    assert d["name"] == "DiT pool CFG 4" and d["class_names"] == [f"c{i}" for i in range(10)]
    assert [q.name for q in p.parent.iterdir()] == ["a set.pt"]          # no temp file left behind
    # the worker's own loader accepts it and applies the documented normalisation
    w = _load("ddranking_worker")
    x, y, name = w.load_pt(p)
    assert torch.equal(x, s.images) and torch.equal(y, s.labels) and name == "DiT pool CFG 4"
    z = w.normalise(x[:1], "imagenet")
    mean, std = torch.tensor(w.NORMS["imagenet"][0]).view(1, 3, 1, 1), torch.tensor(w.NORMS["imagenet"][1]).view(1, 3, 1, 1)
    assert torch.allclose(z * std + mean, x[:1].float() / 255, atol=1e-6)


def test_pt_export_rejects_float_images(cc, tmp_path):
    with pytest.raises(cc.CrossCheckError, match="uint8"):
        cc.save_pt(tmp_path / "x.pt", torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), "bad")


def test_worker_does_not_import_ddrepro():
    src = (ROOT / "benchmarks" / "ddranking_worker.py").read_text()
    assert "import ddrepro" not in src and "from ddrepro" not in src


def test_resume_skips_done_rows(cc, tmp_path):
    sets = {2: {"random real s0": _Set(2, seed=0), "shuffled labels": _Set(2, seed=1)}}
    test = _Set(5, seed=2)
    calls = []

    def fake_runner(python, set_pt, test_pt, seed, epochs, threads=1, extra=None, echo=print, log_path=None):
        name = torch.load(set_pt, weights_only=True)["name"]
        assert Path(test_pt).exists() and threads == 1 and epochs == 2 and extra[-2:] == ["--test-interval", "10"]
        calls.append((name, seed))
        return dict(best=0.5 + seed / 100, final=0.4 + seed / 100, seconds=1.0)

    cc.append_row(tmp_path / "ddranking_long.csv", dict(ipc=2, set="random real s0", seed=0, best=0.9, final=0.8,
                                                         seconds=3.0, epochs=2, test_interval=10))
    long = cc.run_crosscheck(sets, test, tmp_path, "py", repeats=2, epochs=2, runner=fake_runner, echo=lambda s: None)
    assert calls == [("random real s0", 1), ("shuffled labels", 0), ("shuffled labels", 1)]
    assert list(long.columns) == cc.COLUMNS and len(long) == 4
    row = long[(long.set == "random real s0") & (long.seed == 0)].iloc[0]
    assert row.final == 0.8 and row.best == 0.9                     # the existing row is kept, not recomputed
    again = cc.run_crosscheck(sets, test, tmp_path, "py", repeats=2, epochs=2, runner=fake_runner, echo=lambda s: None)
    assert len(calls) == 3 and len(again) == 4                      # all done: nothing rerun
    assert pd.read_csv(tmp_path / "ddranking_long.csv").equals(again)
    with pytest.raises(cc.CrossCheckError, match="epochs"):         # a different protocol must not resume these rows
        cc.run_crosscheck(sets, test, tmp_path, "py", repeats=2, epochs=5, runner=fake_runner, echo=lambda s: None)
    with pytest.raises(cc.CrossCheckError, match="test_interval"):
        cc.run_crosscheck(sets, test, tmp_path, "py", repeats=2, epochs=2, runner=fake_runner, echo=lambda s: None,
                          test_interval=1)


def test_summary_mean_and_sd(cc):
    long = pd.DataFrame([dict(ipc=10, set="a", seed=k, best=b, final=f, seconds=2.0, epochs=1, test_interval=1)
                         for k, (f, b) in enumerate([(0.70, 0.75), (0.72, 0.77), (0.74, 0.76)])])
    s = cc.summarise(long).iloc[0]
    assert s.runs == 3 and abs(s.final_mean - 0.72) < 1e-12 and abs(s.final_sd - 0.02) < 1e-12
    assert abs(s.best_mean - 0.76) < 1e-12
    assert "72.0 ±  2.0" in cc.format_summary(cc.summarise(long))


def test_missing_python_error_names_the_path(cc, tmp_path):
    missing = tmp_path / "nowhere" / "bin" / "python"
    with pytest.raises(cc.CrossCheckError, match=str(missing)):
        cc.check_ddranking_python(missing)
    with pytest.raises(SystemExit, match=str(missing)):
        cc.main(["--ddranking-python", str(missing), "--smoke"])


def test_python_without_ddranking_error_names_the_path(cc, tmp_path):
    fake = tmp_path / "python"                          # a python that exists but has no ddranking
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ddranking'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(cc.CrossCheckError, match=rf"import ddranking.*{fake}"):
        cc.check_ddranking_python(fake)


def test_parse_result_takes_the_tagged_line(cc):
    assert cc.parse_result(["noise", 'DDRANKING_RESULT {"best": 0.5, "final": 0.25}', "tail"])["final"] == 0.25
    with pytest.raises(cc.CrossCheckError, match="no result"):
        cc.parse_result(["noise"])


@pytest.mark.slow
def test_worker_end_to_end_smoke(cc, tmp_path):
    if not DDR_PYTHON.exists():
        pytest.skip(f"{DDR_PYTHON} does not exist (create it as in benchmarks/ddranking_crosscheck.py's docstring)")
    from ddrepro.data import load_real
    from ddrepro.evaluate import random_real_subset
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    test = test.subset(torch.arange(500))               # a small test set keeps this test short
    sets = {2: {"random real s0": random_real_subset(train, 2, 0, cache_dir=tmp_path / "cache")}}
    lines = []
    long = cc.run_crosscheck(sets, test, tmp_path, cc.check_ddranking_python(DDR_PYTHON), repeats=1, epochs=2,
                             test_interval=1, extra=["--norm", "imagenet", "--device", "cpu"], echo=lines.append)
    assert len(long) == 1
    r = long.iloc[0]
    assert r.set == "random real s0" and r.seed == 0 and r.ipc == 2 and r.epochs == 2 and r.test_interval == 1
    assert 0.0 <= r.final <= 1.0 and 0.0 <= r.best <= 1.0 and r.best >= r.final and r.seconds > 0
    assert sum("epoch 1/2" in s or "epoch 2/2" in s for s in lines) == 2   # progress streamed, one line per test
    assert (tmp_path / "logs" / "ipc2_random_real_s0_seed0.log").read_text().count("Test Acc@1") == 2
