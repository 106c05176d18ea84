"""Independent cross-check of our evaluator with DD-Ranking (PyPI `ddranking` 0.2.0, "DD-Ranking: Rethinking the
Evaluation of Dataset Distillation") on the evaluation-sensitivity panel (benchmarks/eval_sensitivity.py `panel`).

DD-Ranking pins numpy < 2 (and scipy < 1.16), so it lives in its own virtualenv; create it once (from the repo
root; torch 2.14.1 / torchvision 0.29.1 and their CUDA wheels resolve from the machine's local package index, ~6 GB):

    python3 -m venv .venv-ddranking
    .venv-ddranking/bin/pip install ddranking==0.2.0 'numpy<2' torch==2.14.1 torchvision==0.29.1

(resolves numpy 1.26.4, scipy 1.15.3, kornia, timm, pandas). Then, in the main venv:

    .venv/bin/python benchmarks/ddranking_crosscheck.py [--ddranking-python .venv-ddranking/bin/python]
        [--ipcs 10] [--repeats 3] [--epochs 1000] [--sets "random real s0,DiT pool CFG 4"] [--threads 1]
        [--norm imagenet|fmnist] [--test-interval 10] [--device cpu|cuda] [--smoke] [--out runs/study/ddranking]

`--ddranking-python` defaults to $DDRANKING_PYTHON, else `.venv-ddranking/bin/python` of this checkout. Per IPC the
script builds the panel (`panel(ipc, train, smoke)`), writes each selected set and the Fashion-MNIST test set as
torch .pt files (`out/data/…`, dicts of uint8 images N×3×32×32, int64 labels, name; atomic temp + os.replace), and
runs benchmarks/ddranking_worker.py under the DD-Ranking python once per (set, seed), streaming its progress lines
(DD-Ranking's own chatter goes to `out/logs/ipc<IPC>_<set>_seed<seed>.log`). Each finished run appends a row to
`out/ddranking_long.csv` (ipc, set, seed, best, final, seconds, epochs, test_interval; accuracies in [0, 1];
seconds = the worker's wall time of the training + test loop); rows whose (ipc, set, seed) are already there are skipped, so an
interrupted run resumes. At the end it prints mean ± sd (sample sd, ddof 1) of final and best per set.

Protocol (see the worker's docstring for the exact DD-Ranking functions called): DD-Ranking's hard-label evaluation
`LabelRobustScoreHard._compute_hard_label_metrics` with the settings of its repo's DC/DSA/DM hard-label configs
(`DM/CIFAR10/IPC10.yaml`, `configs/Demo_LRS_Hard_Label.yaml`): ConvNet-3 (width 128, instance norm, avg pooling),
SGD lr 0.01 momentum 0.9 wd 5e-4, StepLR ×0.1 at epochs/2, batch 256, DSA (flip 0.5, rotate 15, saturation 2,
brightness 1, contrast 0.5, scale 1.2, crop 0.125, cutout 0.5; one random op group per batch), test every 10 epochs,
fixed lr (no lr search). `--epochs` default 1000: the `num_epochs` of all those configs (the evaluator classes'
keyword default is 300, but paired with CutMix, not DSA). `best` is DD-Ranking's reported number (max test accuracy
over the evaluations every 10 epochs — chosen on the test set); `final` is the test accuracy after the last epoch.

Normalisation: DD-Ranking uses dataset mean/std for CIFAR and ImageNet mean/std for every other dataset it knows
(TinyImageNet, ImageNet subsets, ImageNet1K); it has no Fashion-MNIST. Default `--norm imagenet`: both the set and
the test set are normalised with ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) in the worker;
`--norm fmnist` uses the DC/DSA/DM FashionMNIST constants 0.2861 / 0.3530 instead.

`--smoke`: IPC 2, 2 epochs (tested every epoch), 1 repeat, output under runs/study/ddranking_smoke by default.

Cost (measured, 1 torch thread on the shared 2-core machine, IPC 10, 1000 epochs): ~0.7 s per training epoch plus
~37 s per test pass over the 10,000 test images, i.e. ~4.4 s per epoch with DD-Ranking's test every 10 epochs —
about 74 min per evaluation (stopped after 140 epochs / 618 s; extrapolated). `--test-interval 1000` (final model
only, `best` = `final`) brings that to ~12–13 min. Run the full study on a GPU or with several processes.
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKER = BENCH / "ddranking_worker.py"
RESULT_TAG = "DDRANKING_RESULT"          # the worker's last stdout line: f"{RESULT_TAG} {json}"
COLUMNS = ["ipc", "set", "seed", "best", "final", "seconds", "epochs", "test_interval"]
DEFAULT_EPOCHS = 1000                    # num_epochs of DD-Ranking's DC/DSA/DM hard-label configs


class CrossCheckError(RuntimeError):
    pass


def default_python() -> str:
    return os.environ.get("DDRANKING_PYTHON") or str(ROOT / ".venv-ddranking" / "bin" / "python")


def check_ddranking_python(python: str | os.PathLike) -> str:
    "The path, if it exists and `import ddranking` works there; else CrossCheckError naming the path."
    p = Path(python)
    if not p.exists():
        raise CrossCheckError(f"DD-Ranking python {p} does not exist: create the venv (python3 -m venv .venv-ddranking && "
                              ".venv-ddranking/bin/pip install ddranking==0.2.0 'numpy<2' torch==2.14.1 "
                              "torchvision==0.29.1) or pass --ddranking-python / set DDRANKING_PYTHON")
    try:
        r = subprocess.run([str(p), "-c", "import ddranking"], capture_output=True, text=True, timeout=300,
                           env=worker_env(1))
    except OSError as e:
        raise CrossCheckError(f"DD-Ranking python {p} cannot be run: {e}") from None
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise CrossCheckError(f"`import ddranking` fails under {p} (exit {r.returncode}):\n{tail}")
    return str(p)


def worker_env(threads: int, device: str = "cpu") -> dict:
    "The worker's environment: n intra-op threads, no user site, no PYTHONPATH into this venv; no GPU unless asked."
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    t = str(threads)
    env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
    if device == "cpu": env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def slug(name: str) -> str:
    "A file-name-safe form of a set name ('random real s0' → 'random_real_s0')."
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def save_pt(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, name: str, class_names=None) -> Path:
    "Write {images uint8 N×3×H×W, labels int64 N, name, class_names} atomically (temp file + os.replace)."
    from ddrepro.core import atomic_write
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise CrossCheckError(f"{name}: images must be uint8 N×3×H×W, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise CrossCheckError(f"{name}: {len(images)} images but labels of shape {tuple(labels.shape)}")
    d = dict(images=images.contiguous().clone(), labels=labels.to(torch.long).contiguous().clone(), name=str(name),
             class_names=[str(c) for c in (class_names or [])])
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(d, f)
    return path


def save_image_set(path, s, name: str) -> Path:
    "An ImageSet (in memory) as a worker .pt file."
    return save_pt(path, s.images, s.labels, name, list(getattr(s.class_map, "names", []) or []))


def read_long(csv: str | os.PathLike) -> pd.DataFrame:
    p = Path(csv)
    if not p.exists() or p.stat().st_size == 0: return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(p)


def done_keys(long: pd.DataFrame) -> set:
    "{(ipc, set, seed)} already in the long table."
    return {(int(r.ipc), str(r.set), int(r.seed)) for r in long.itertuples(index=False)}


def append_row(csv: str | os.PathLike, row: dict) -> pd.DataFrame:
    "Add one result row to the long CSV (rewritten atomically); returns the new table."
    from ddrepro.core import atomic_write
    long = read_long(csv)
    long = pd.concat([long, pd.DataFrame([{k: row[k] for k in COLUMNS}])], ignore_index=True) if len(long) else \
        pd.DataFrame([{k: row[k] for k in COLUMNS}])
    with atomic_write(csv, "w") as f:
        long.to_csv(f, index=False)
    return long


def parse_result(lines: list[str]) -> dict:
    import json
    for line in reversed(lines):
        if line.startswith(RESULT_TAG + " "):
            return json.loads(line[len(RESULT_TAG) + 1:])
    raise CrossCheckError("the worker printed no result line")


def run_worker(python: str, set_pt, test_pt, seed: int, epochs: int, threads: int = 1, log_path=None,
               extra: list[str] | None = None, echo=print) -> dict:
    """Run benchmarks/ddranking_worker.py under `python` on one set and seed; stream its stdout lines through
    `echo`, its stderr (DD-Ranking's chatter) into `log_path`; returns the worker's result dict."""
    cmd = [str(python), str(WORKER), str(set_pt), str(test_pt), "--seed", str(seed), "--epochs", str(epochs),
           "--threads", str(threads), *(extra or [])]
    log_path = Path(log_path) if log_path else None
    if log_path: log_path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with open(log_path, "w") if log_path else open(os.devnull, "w") as err:
        device = (extra or [])[(extra or []).index("--device") + 1] if "--device" in (extra or []) else "cpu"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=worker_env(threads, device),
                                cwd=str(log_path.parent if log_path else BENCH))
        try:
            for line in proc.stdout:
                line = line.rstrip("\n"); lines.append(line)
                if not line.startswith(RESULT_TAG): echo(line)
            rc = proc.wait()
        except BaseException:
            proc.kill(); proc.wait(); raise
    if rc != 0:
        tail = "\n".join(log_path.read_text().strip().splitlines()[-15:]) if log_path and log_path.exists() else ""
        raise CrossCheckError(f"worker failed (exit {rc}): {' '.join(cmd)}\nlog {log_path}:\n{tail}")
    return parse_result(lines)


def run_crosscheck(sets_by_ipc: dict, test, out, python: str, repeats: int, epochs: int, threads: int = 1,
                   extra: list[str] | None = None, runner=run_worker, echo=print, test_interval: int = 10) -> pd.DataFrame:
    """Evaluate every {ipc: {set name: ImageSet}} set with seeds 0..repeats−1 under DD-Ranking (tested every
    `test_interval` epochs), skipping the (ipc, set, seed) rows already in out/ddranking_long.csv; returns the long
    table. Rows of another epochs / test_interval in that CSV are an error (another protocol: use another `out`)."""
    out = Path(out)
    csv = out / "ddranking_long.csv"
    long = read_long(csv)
    for col, v in (("epochs", epochs), ("test_interval", test_interval)):
        if len(long) and col in long and (long[col] != v).any():
            raise CrossCheckError(f"{csv} holds rows with {col} {sorted(set(long[col]))}, not {v}: use another --out")
    extra = [*(extra or []), "--test-interval", str(test_interval)]
    done = done_keys(long)
    test_pt = out / "data" / "fashion_mnist_test.pt"
    if not test_pt.exists():
        save_image_set(test_pt, test, "fashion_mnist test")
    for ipc, sets in sets_by_ipc.items():
        for name, s in sets.items():
            todo = [k for k in range(repeats) if (int(ipc), name, k) not in done]
            if not todo:
                echo(f"IPC {ipc} {name}: {repeats} seed(s) already in {csv}"); continue
            set_pt = save_image_set(out / "data" / f"ipc{ipc}" / f"{slug(name)}.pt", s, name)
            for seed in todo:
                t0 = time.perf_counter()
                r = runner(python, set_pt, test_pt, seed, epochs, threads=threads, extra=extra, echo=echo,
                           log_path=out / "logs" / f"ipc{ipc}_{slug(name)}_seed{seed}.log")
                row = dict(ipc=int(ipc), set=name, seed=seed, best=float(r["best"]), final=float(r["final"]),
                           seconds=round(float(r["seconds"]), 2), epochs=epochs, test_interval=test_interval)
                long = append_row(csv, row)
                echo(f"IPC {ipc} {name} seed {seed}: final {row['final']:.4f} best {row['best']:.4f} "
                     f"({row['seconds']:.0f} s, {time.perf_counter() - t0:.0f} s wall)")
    return long


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    "Per (ipc, set): runs, final and best mean ± sd (ddof 1), mean seconds."
    g = long.groupby(["ipc", "set"], sort=False)
    s = g.agg(runs=("seed", "count"), final_mean=("final", "mean"), final_sd=("final", "std"),
              best_mean=("best", "mean"), best_sd=("best", "std"), seconds=("seconds", "mean")).reset_index()
    return s


def format_summary(s: pd.DataFrame) -> str:
    def pm(m, sd): return f"{100 * m:5.1f} ± {100 * sd:4.1f}" if sd == sd else f"{100 * m:5.1f}       "
    rows = [f"{'IPC':>3}  {'set':<24} {'runs':>4}  {'final %':>12}  {'best %':>12}  {'s/eval':>7}"]
    for r in s.itertuples(index=False):
        rows.append(f"{r.ipc:>3}  {r.set:<24} {r.runs:>4}  {pm(r.final_mean, r.final_sd)}  {pm(r.best_mean, r.best_sd)}  "
                    f"{r.seconds:7.0f}")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddranking-python", default=None, help="python of the DD-Ranking venv (default $DDRANKING_PYTHON, "
                    "else .venv-ddranking/bin/python)")
    ap.add_argument("--ipcs", default="10"); ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS} (DD-Ranking's DC/DSA/DM configs)")
    ap.add_argument("--sets", default=None, help="comma list of panel set names (default: all)")
    ap.add_argument("--threads", type=int, default=1); ap.add_argument("--norm", choices=("imagenet", "fmnist"), default="imagenet")
    ap.add_argument("--device", default="cpu", help="the worker's torch device: cpu (default) or cuda")
    ap.add_argument("--test-interval", type=int, default=10, help="test every N epochs (DD-Ranking: 10; `best` is the "
                    "max over these tests; N = epochs tests only the final model, ~6x faster at 1000 epochs on CPU)")
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    try:
        python = check_ddranking_python(a.ddranking_python or default_python())
    except CrossCheckError as e:
        raise SystemExit(str(e))
    ipcs = [2] if a.smoke else [int(x) for x in a.ipcs.split(",")]
    epochs = 2 if a.smoke else (a.epochs or DEFAULT_EPOCHS)
    repeats = 1 if a.smoke else a.repeats
    extra = ["--norm", a.norm, "--device", a.device]
    test_interval = 1 if a.smoke else a.test_interval
    out = Path(a.out) if a.out else ROOT / "runs" / "study" / ("ddranking_smoke" if a.smoke else "ddranking")
    wanted = [s.strip() for s in a.sets.split(",")] if a.sets else None

    sys.path.insert(0, str(BENCH))
    from eval_sensitivity import panel
    from ddrepro.data import load_real
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    sets_by_ipc = {}
    for ipc in ipcs:
        sets = panel(ipc, train, smoke=a.smoke)
        if wanted:
            missing = [w for w in wanted if w not in sets]
            if missing: raise SystemExit(f"--sets {missing}: not in the IPC {ipc} panel {list(sets)}")
            sets = {k: sets[k] for k in wanted}
        sets_by_ipc[ipc] = sets
    print(f"DD-Ranking cross-check: {python}, IPC {ipcs}, {repeats} seed(s), {epochs} epochs, norm {a.norm}, "
          f"{a.threads} thread(s), sets {[list(s) for s in sets_by_ipc.values()][0]} → {out}", flush=True)
    try:
        long = run_crosscheck(sets_by_ipc, test, out, python, repeats, epochs, a.threads, extra,
                              echo=lambda s: print(s, flush=True), test_interval=test_interval)
    except CrossCheckError as e:
        raise SystemExit(str(e))
    keep = long[long.ipc.isin(ipcs) & (long.set.isin(wanted) if wanted else True)]
    summary = summarise(keep)
    print(format_summary(summary))
    return long, summary


if __name__ == "__main__":
    main()
