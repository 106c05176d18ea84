"""DsCo's synthesis cost beside plain DiT sampling (Liu et al., arXiv:2603.27987, Table 12 and Fig. 4): seconds per
image and peak memory of DsCo-NOpt (data-accessible), DFDsCo (data-free) and DiT† (the same sampler, no
optimisation) at the same IPC, each measured side by side in one run, with the paper's GPU-hour ratios beside them.

    .venv/bin/python benchmarks/dsco_cost.py [--ipc 10] [--classes 2] [--iters 20] [--real-per-class 500]
                     [--n-temp 200] [--threads 2] [--device auto] [--paper-scale] [--figures]

Every method runs in its own fresh worker process (this file with --worker), so each peak memory is that method's
alone: on CUDA the peak allocated memory, on a CPU the peak resident set during synthesis (Linux VmHWM, reset after
the models and data are loaded). Preparation is timed apart, as in Table 12: DsCo encodes the real latents of the
class (`real_per_class` images per class; timed over every class and
apportioned to the synthesised ones), DFDsCo records its template statistics (`n_temp` vanilla trajectories per
class). The ratios are seconds per image over DiT†'s; the paper's ratios divide its generation GPU hours by
Minimax's (Minimax generation is plain DiT sampling of a fine-tuned DiT-XL/2, the closest printed analog of DiT†).

Embedded (default): zoo DiT + VAE on Fashion-MNIST, CPU. `--paper-scale`: DiT-XL-2-256 + sd-vae-ft-mse (hub cache or
local paths; fails fast naming the id when missing) on ImageNette images under --data-root — a GPU run.
Writes runs/bench/dsco_cost/{cost.csv, cost.md, record.json}; `--figures` copies them to figures/dsco_embedded_cost*
from a clean commit only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

# Table 12 (ImageNet-1k, RTX 2080 Ti, GPU hours): preparation, generation at IPC 10/50/100, peak memory (GB)
PAPER_T12 = {"Minimax": dict(prep=253, gen={10: 7, 50: 35, 100: 70}, peak_gb=14.8),
             "DiT-IGD": dict(prep=124, gen={10: 69, 50: 347, 100: 694}, peak_gb=13.2),
             "DsCo": dict(prep=14, gen={10: 28, 50: 62, 100: 119}, peak_gb=4.3),
             "DFDsCo": dict(prep=142, gen={10: 15, 50: 53, 100: 106}, peak_gb=4.7)}
MODES = {"off": "DiT†", "da": "DsCo", "df": "DFDsCo"}


def paper_ratios(ipc: int) -> dict:
    "Table 12's generation-hours ratios to Minimax at the printed IPC nearest `ipc`: {DsCo: …, DFDsCo: …}."
    near = min(PAPER_T12["Minimax"]["gen"], key=lambda k: abs(k - ipc))
    base = PAPER_T12["Minimax"]["gen"][near]
    return {"ipc": near, **{m: PAPER_T12[m]["gen"][near] / base for m in ("DsCo", "DFDsCo")}}


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"): return int(line.split()[1]) / 1024
    except OSError:
        return None


def _reset_peak():
    import torch
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    try: Path("/proc/self/clear_refs").write_text("5")          # Linux: VmHWM := VmRSS
    except OSError: pass


def _peak_mb(device: str) -> float | None:
    import torch
    if device.startswith("cuda"): return torch.cuda.max_memory_allocated() / 2**20
    return _rss_mb("VmHWM")


def worker(a) -> dict:
    "One method in this process: load, prepare (timed), synthesise `classes` classes at IPC (timed), peak memory."
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.core import pick_device
    from ddrepro.data import load_real
    from ddrepro.backbones import load_dit, load_vae
    from ddrepro.evaluate import random_real_subset
    from ddrepro.dsco import NOptConfig, class_latents, make_template_stats, nopt_sample
    dev = str(pick_device(a.device))
    dataset = "imagenette" if a.paper_scale else "fashion_mnist"
    dit, _ = load_dit("DiT-XL-2-256" if a.paper_scale else "zoo", device=dev)
    vae, _ = load_vae("sd-vae-ft-mse" if a.paper_scale else "zoo", device=dev)
    size = dit.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    classes = list(range(a.classes))
    nopt = dict(num_steps=a.steps, cfg_scale=a.cfg_scale, n_temp=a.n_temp)
    cfg = NOptConfig(mode="da", iters=0, init="randn", **nopt) if a.worker == "off" else NOptConfig(mode=a.worker, iters=a.iters, **nopt)
    prep_s, latents, tdir = 0.0, None, None
    tmp = tempfile.TemporaryDirectory()
    if a.worker == "da":
        real = load_real(dataset, "train", a.data_root)
        sub = random_real_subset(real, a.real_per_class, a.seed, cache_dir=tmp.name)
        sub = sub if sub.images is not None else sub.load(size)
        _reset_peak(); t = time.perf_counter()
        latents = class_latents(vae, sub, seed=a.seed, device=dev)      # every class, as a run does
        prep_s = (time.perf_counter() - t) * len(classes) / len(sub.class_map)
    if a.worker == "df":
        tdir = Path(tmp.name) / "templates"
        _reset_peak(); t = time.perf_counter()
        for c in classes:
            make_template_stats(dit, c, tdir, n_temp=a.n_temp, num_steps=a.steps, cfg_scale=a.cfg_scale, device=dev)
        prep_s = time.perf_counter() - t
    prep_peak = _peak_mb(dev) if a.worker != "off" else None
    _reset_peak(); base_mb = _rss_mb("VmRSS") if not dev.startswith("cuda") else 0.0
    t = time.perf_counter()
    for c in classes:
        nopt_sample(dit, vae, c, a.ipc, seed=a.seed, config=cfg, device=dev, template_dir=tdir,
                    real_latents=None if latents is None else latents[c])
    synth_s = time.perf_counter() - t
    peak = _peak_mb(dev)
    tmp.cleanup()
    return dict(mode=a.worker, method=MODES[a.worker], device=dev, classes=len(classes), images=len(classes) * a.ipc,
                prep_s=prep_s, prep_s_per_class=prep_s / len(classes), synth_s=synth_s,
                s_per_image=synth_s / (len(classes) * a.ipc), peak_mb=peak, peak_over_loaded_mb=None if peak is None else peak - base_mb,
                prep_peak_mb=prep_peak)


def table(rows: list[dict], ipc: int) -> pd.DataFrame:
    "One row per method: seconds per image, ratio to DiT†, preparation, peak memory; the paper's ratio beside."
    df = pd.DataFrame(rows).set_index("method")
    base = df.loc["DiT†", "s_per_image"]
    pr = paper_ratios(ipc)
    out = pd.DataFrame({"s / image": df.s_per_image.round(3), "× DiT†": (df.s_per_image / base).round(2),
                        "paper × Minimax gen (Table 12, IPC %d)" % pr["ipc"]: [round(pr.get(m, 1.0), 2) if m != "DiT†" else 1.0 for m in df.index],
                        "preparation s / class": df.prep_s_per_class.round(2),
                        "peak MB (synthesis)": df.peak_mb.round(0), "peak − loaded MB": df.peak_over_loaded_mb.round(0)})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", type=int, default=10); ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="NOpt iterations per step (default: DsCoConfig's embedded preset; 200 with --paper-scale)")
    ap.add_argument("--real-per-class", type=int, default=None, help="default: DsCoConfig's embedded preset")
    ap.add_argument("--n-temp", type=int, default=200); ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg-scale", type=float, default=4.0); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--device", default="auto")
    ap.add_argument("--paper-scale", action="store_true"); ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError
    if a.iters is None or a.real_per_class is None:
        from ddrepro.dsco import DsCoConfig
        d = DsCoConfig()
        a.iters = a.iters if a.iters is not None else (200 if a.paper_scale else d.iters)
        a.real_per_class = a.real_per_class if a.real_per_class is not None else (1300 if a.paper_scale else d.real_per_class)
    if a.smoke: a.ipc, a.classes, a.iters, a.real_per_class, a.n_temp, a.steps = 2, 1, 2, 10, 4, 3
    for k in ("ipc", "classes", "iters", "real_per_class", "n_temp", "steps"):
        if getattr(a, k) < (2 if k in ("ipc", "n_temp", "steps") else 1):
            raise ConfigError(f"--{k.replace('_', '-')} {getattr(a, k)}: expected an integer ≥ {2 if k in ('ipc', 'n_temp', 'steps') else 1}")
    if a.paper_scale and a.data_root is None:
        raise ConfigError("--paper-scale needs --data-root: an ImageNette folder (train/<wnid>/…) for DsCo's real latents")
    if a.worker:
        print(json.dumps(worker(a)))
        return None
    from ddrepro.core import RunRecord, atomic_write, project_root
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "dsco_cost"
    rec = RunRecord.start(out, vars(a), kind="bench")
    rows = []
    args = [a_ for k, v in vars(a).items() if k not in ("worker", "figures", "out", "smoke")
            for a_ in (([f"--{k.replace('_', '-')}"] if v is True else []) if isinstance(v, bool) else
                       ([] if v is None else [f"--{k.replace('_', '-')}", str(v)]))]
    for mode in MODES:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--worker", mode, *args], capture_output=True, text=True,
                           env=dict(os.environ, DDREPRO_PROGRESS="0"))
        if r.returncode:
            raise RuntimeError(f"{MODES[mode]} worker failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"{MODES[mode]}: {rows[-1]['s_per_image']:.3f} s/image, peak {rows[-1]['peak_mb']:.0f} MB "
              f"(worker {time.perf_counter() - t:.0f} s)", flush=True)
    df = table(rows, a.ipc)
    from ddrepro.reports import df_to_markdown
    pr = paper_ratios(a.ipc)
    scale = "paper scale (DiT-XL/2 + sd-vae-ft-mse, ImageNette)" if a.paper_scale else "embedded (zoo DiT + VAE, Fashion-MNIST)"
    md = (f"### DsCo synthesis cost, {scale}: IPC {a.ipc}, {a.classes} classes, device {rows[0]['device']}\n\n"
          + df_to_markdown(df) + f"\n\nNOpt: {a.iters} iterations per step, {a.steps} DDPM steps, CFG {a.cfg_scale:g}; DsCo target: "
          f"{a.real_per_class} real images per class (VAE-encoded as preparation); DFDsCo: {a.n_temp} template trajectories per class "
          f"(preparation). Each method in a fresh process, torch threads {a.threads}. Paper (Table 12, ImageNet-1k, RTX 2080 Ti, "
          f"GPU hours at IPC {pr['ipc']}): generation DsCo {PAPER_T12['DsCo']['gen'][pr['ipc']]} h, DFDsCo "
          f"{PAPER_T12['DFDsCo']['gen'][pr['ipc']]} h, Minimax {PAPER_T12['Minimax']['gen'][pr['ipc']]} h; preparation DsCo "
          f"{PAPER_T12['DsCo']['prep']} h, DFDsCo {PAPER_T12['DFDsCo']['prep']} h; peak memory DsCo {PAPER_T12['DsCo']['peak_gb']} GB, "
          f"DFDsCo {PAPER_T12['DFDsCo']['peak_gb']} GB, Minimax {PAPER_T12['Minimax']['peak_gb']} GB.\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "cost.csv") as f: df.to_csv(f)
    with atomic_write(out / "cost.md") as f: f.write(md)
    rec.results["rows"] = rows
    rec.finish(**{f"{r['mode']}_s_per_image": round(r["s_per_image"], 4) for r in rows})
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        name = "dsco_paper_cost" if a.paper_scale else "dsco_embedded_cost"
        publish_figures({out / "cost.csv": f"{name}.csv", out / "cost.md": f"{name}.md", rec.path: f"{name}_record.json"},
                        [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
