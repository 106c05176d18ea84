"""The pool run notebook (`nbs/run_pool.ipynb`) end to end through papermill on the embedded zoo DiT with a tiny
budget: the pool it promises (pool_factor × IPC PNGs per class, a grid, a complete record), a rerun that fills in
only what is missing with the same bytes, and a bad parameter that stops at the configuration cell."""
import json

import pytest
import torch

from ddrepro import zoo
from ddrepro.core import RunRecord, file_sha256
from ddrepro.data import class_map, read_image

CM = class_map("fashion_mnist")
TINY = ["-p", "generator", "dit", "-p", "ipc", "1", "-p", "pool_factor", "2", "-p", "num_steps", "3", "-p", "batch_size", "4"]


@pytest.mark.slow
def test_run_pool_embedded_dit_smoke_and_resume(tmp_path, papermill):
    out = tmp_path / "pool"
    r = papermill("run_pool.ipynb", tmp_path / "out.ipynb", *TINY, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    # pool_factor × IPC = 2 images per class, k = 0, 1, in every class folder of the ClassMap
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(CM.folders)
    for folder in CM.folders:
        assert sorted(p.name for p in (out / folder).iterdir()) == ["0.png", "1.png"], folder
    img = read_image(out / CM.folders[3] / "1.png")
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 32, 32) and int(img.max()) > int(img.min())
    assert (out / "pool_grid.png").stat().st_size > 0
    rec = RunRecord.load(out)
    assert rec.status == "complete" and rec.params["generator"] == "dit" and rec.params["num_steps"] == 3
    assert rec.results["images"] == 20 and rec.results["generated_now"] == 20 and rec.results["resumed_with"] == 0
    assert rec.results["per_class"] == 2 and rec.results["out_dir"] == str(out)
    assert {"load_generator", "generate"} <= set(rec.stages) and rec.stages["generate"]["images"] == 20
    # the weights it used are the shipped zoo files, by hash
    assert {"dit", "vae", "pool_grid"} <= set(rec.assets)
    for name in ("dit", "vae"):
        assert rec.assets[name]["sha256"] == file_sha256(zoo.zoo_dir() / f"{name}.safetensors"), name
    # an interrupted pool: the rerun of the same command makes only the missing image, byte-identical
    lost = out / CM.folders[7] / "0.png"
    before = lost.read_bytes()
    lost.unlink()
    r = papermill("run_pool.ipynb", tmp_path / "out2.ipynb", *TINY, "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = RunRecord.load(out)
    assert rec.results["generated_now"] == 1 and rec.results["resumed_with"] == 19 and rec.results["images"] == 20
    assert lost.read_bytes() == before


def test_run_pool_bad_generator_fails_at_the_config_cell(tmp_path, papermill):
    out = tmp_path / "pool"
    r = papermill("run_pool.ipynb", tmp_path / "out.ipynb", "-p", "generator", "dalle", "-p", "out_dir", str(out))
    assert r.returncode != 0
    assert "ConfigError: generator='dalle': expected one of ['dit', 'minimax', 'ddpm']" in r.stderr + r.stdout
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    status = [c["metadata"]["papermill"]["status"] for c in nb["cells"] if c["cell_type"] == "code"]
    # parameters, injected parameters, then the config cell fails: no generator is loaded, nothing is written
    assert status[:3] == ["completed", "completed", "failed"] and set(status[3:]) == {"pending"}, status
    assert not out.exists()
