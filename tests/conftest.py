"""Shared pytest setup: offline, quiet, deterministic; `gpu` / `hub` / `slow` markers."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["DDREPRO_PROGRESS"] = "0"             # quiet even where a shell exports DDREPRO_PROGRESS=log
os.environ["DDREPRO_EVAL_CACHE"] = "off"         # every test trains what it evaluates (tests of the cache set their own)

import pytest
import torch



@pytest.fixture(autouse=True)
def one_thread():
    """Tests run tiny models: one intra-op thread is fastest, and on a shared 2-core machine two threads
    oversubscribe the CPU (measured: up to ~100x slower). Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped on CPU)")
    config.addinivalue_line("markers", "hub: needs model downloads from a hub (skipped offline)")
    config.addinivalue_line("markers", "slow: longer than ~30 s on 2 CPU cores (run with --runslow)")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    skip_hub = pytest.mark.skip(reason="HF_HUB_OFFLINE=1: hub downloads disabled")
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "hub" in item.keywords and os.environ.get("HF_HUB_OFFLINE") == "1":
            item.add_marker(skip_hub)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)


@pytest.fixture
def papermill():
    """Run `nbs/<notebook>` through papermill in a subprocess (project root as cwd, offline, no bars):
    `papermill("run_pool.ipynb", tmp_path / "out.ipynb", "-p", "ipc", "1")` → CompletedProcess (text)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    exe = str(Path(sys.executable).parent / "papermill")
    env = dict(os.environ, DDREPRO_PROGRESS="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def run(notebook, output, *args, timeout=600):
        return subprocess.run([exe, str(root / "nbs" / notebook), str(output), "--cwd", str(root), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    return run
