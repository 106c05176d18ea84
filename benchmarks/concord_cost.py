"""CONCORD's generation cost beside its base samplers (Gu et al., CONCORD, supplement Table 10): seconds per image of
Minimax, DiT and the unCLIP stand-in without and with the concept guidance (`concord.ConcordGuidance`), each pair on
the same items and seeds, measured side by side in one run, with the guided / base ratio per base and Table 10's
ratio beside it (Minimax^c / Minimax = 4.3 / 2.1 s, unCLIP^c / unCLIP = 20.8 / 9.7 s: about 2×), plus the peak memory
of every worker — the guided worker's is the guidance path's.

    .venv/bin/python benchmarks/concord_cost.py [--bases minimax,dit,unclip] [--classes 2] [--ipc 2] [--steps 50]
                     [--batch-size 1] [--threads 1] [--device auto] [--figures] [--smoke]

Each base is built as nbs/run_concord.ipynb builds it, from params/concord/embedded/run.yaml (zoo DiT and its Minimax
fine-tune through `pools.load_pool_generator` with DDIM, CFG 4; the zoo unCLIP stand-in `zoo-unclip` conditioned on a
real training image and a template prompt per item, through `pools.TextGenerator`, which runs the notebook's
`UnclipStandIn` sampling; the guided twin adds `ConcordGuidance(zoo-attr encoder, λ, τ = encoder_tau)` and the items'
concepts from `concord_items` — the validity-filtered positives and weighted negatives). Nothing of the guidance is
re-implemented here.

Every (base, with / without CONCORD) runs in its own fresh worker process (this file with --worker), so each peak
memory is that worker's alone: on CUDA the peak allocated memory, on a CPU the peak resident set (Linux VmHWM). The
window opens — after a garbage collection and glibc's malloc_trim — once the models, the concepts and the conditioning
are loaded, just before an untimed 2-step warm-up batch of the timed size, so the working set's first allocations
count; "peak − loaded" is the rise over what was resident (CPU) or allocated (CUDA) when it opened. Loading and
preparation (concept filter, text embeddings, unCLIP image conditioning) are timed apart and not counted in s / image,
as the paper times generation alone. The same `--batch-size` (default 1, Table 10's mini-batch) for both.

Defaults (embedded, CPU): 2 classes × IPC 2 = 4 images per worker at the run's 50 DDIM steps, batch 1, torch threads 1
(the run notebook's; more threads oversubscribe a shared CPU) — 2½-5 minutes on 2 CPU cores that other jobs share
(measured 2 min 22 s and, under heavier load, ~4 min 50 s), most of it the six workers' start-up and loading (15-40 s
each; generation is ~0.6-3.5 s per image there). The Minimax base first fine-tunes the zoo DiT once (1500 steps, cached
under runs/minimax/, ~2 min, outside the timings); ratios moved by up to ~15 % between two runs on that shared CPU. On a GPU
(`--device auto` picks it) use e.g. `--classes 10 --ipc 10`. The concept validity filter averages
`--filter-real-per-class` (default 100) training images per class, not the run's 1000: it only chooses which 5 phrases
are the positives, not how many, so the cost is the same.
Writes runs/bench/concord_cost/{cost.csv (long: base, method, quantity, value, unit, source), cost.md, record.json};
`--figures` copies them to figures/concord_embedded_cost* from a clean commit only.
"""
import argparse
import ctypes
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

# Table 10 (CONCORD supplement): inference time in seconds for one generated image at mini-batch size 1, GPU not stated;
# ^c = with CONCORD. The paper has no DiT column here.
PAPER_T10 = {"Minimax": 2.1, "Minimax^c": 4.3, "unCLIP": 9.7, "unCLIP^c": 20.8}
BASES = {"minimax": "Minimax", "dit": "DiT", "unclip": "unCLIP stand-in"}      # code → the notebook's column name
PAPER_COLUMN = {"minimax": "Minimax", "unclip": "unCLIP"}                       # base → its Table 10 column
MODES = ("base", "concord")
RUN_YAML = Path(__file__).resolve().parents[1] / "params" / "concord" / "embedded" / "run.yaml"
SETTINGS = ("encoder", "lam", "tau", "objective", "n_neg", "neg_mode", "grad_path", "keep", "num_steps", "cfg_scale",
            "minimax_steps", "minimax_per_class", "unclip", "unclip_cfg_scale", "unclip_noise_level", "unclip_templates",
            "dataset")


def run_settings() -> dict:
    "The embedded run's settings this benchmark uses (params/concord/embedded/run.yaml)."
    import yaml
    d = yaml.safe_load(RUN_YAML.read_text())
    return {k: d.get(k) for k in SETTINGS}


def method_name(base: str, mode: str) -> str:
    "'Minimax' / 'Minimax^c', as the paper writes them."
    return BASES[base] + ("^c" if mode == "concord" else "")


def paper_ratio(base: str) -> float | None:
    "Table 10's with / without CONCORD time ratio for `base` (None: no column for it)."
    col = PAPER_COLUMN.get(base)
    return None if col is None else PAPER_T10[col + "^c"] / PAPER_T10[col]


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"): return int(line.split()[1]) / 1024
    except OSError:
        return None


def _reset_peak():
    import gc
    import torch
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    try: ctypes.CDLL("libc.so.6").malloc_trim(0)              # glibc: hand freed heap (loading, preparation) back first
    except (OSError, AttributeError): pass
    try: Path("/proc/self/clear_refs").write_text("5")          # Linux: VmHWM := VmRSS
    except OSError: pass


def _peak_mb(device: str) -> float | None:
    import torch
    if device.startswith("cuda"): return torch.cuda.max_memory_allocated() / 2**20
    return _rss_mb("VmHWM")


def _loaded_mb(device: str) -> float | None:
    import torch
    if device.startswith("cuda"): return torch.cuda.memory_allocated() / 2**20
    return _rss_mb("VmRSS")


def worker(a) -> dict:
    "One (base, mode) in this process: load, prepare the items (timed apart), warm up, generate (timed), peak memory."
    import dataclasses
    import numpy as np
    import torch
    if a.threads > 0: torch.set_num_threads(a.threads)
    from ddrepro.core import derive_seed, pick_device
    from ddrepro.data import load_real, to_float01
    from ddrepro.pools import TextGenerator, load_pool_generator, pool_items, pool_seed
    base, mode = a.worker.split(":")
    s = run_settings()
    dev = str(pick_device(a.device))
    t0 = time.perf_counter()
    train_real = load_real(s["dataset"], "train", a.data_root)
    cm = train_real.class_map
    names = list(cm.prompt_names)
    if base == "unclip":                                  # the notebook's preflight and UnclipStandIn
        from ddrepro.backbones import load_text_backbone
        bb = load_text_backbone(s["unclip"], device=dev)
        gen = TextGenerator(bb.unet, bb.vae, bb.encode, names, num_steps=a.steps, cfg_scale=s["unclip_cfg_scale"],
                            sampler="ddim", scheduler_config=dict(bb.scheduler_config or {}), name="unclip")
    else:
        bb = None
        gen = load_pool_generator(base, s["dataset"], num_steps=a.steps, cfg_scale=s["cfg_scale"], sampler="ddim",
                                  seed=a.seed, device=dev, minimax_steps=a.minimax_steps,
                                  minimax_per_class=a.minimax_per_class, data_root=a.data_root)
    enc = None
    if mode == "concord":
        from ddrepro.backbones import load_image_text_encoder
        enc = load_image_text_encoder(a.encoder, device=dev)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    order = pool_items(len(cm), a.ipc, classes=range(a.classes))          # k-major, as make_pool generates
    labels = [c for c, _ in order]
    seeds = [pool_seed(a.seed, cm.folders[c], k) for c, k in order]     # the same seeds with and without CONCORD
    ids = [f"{cm.folders[c]}/{k}" for c, k in order]
    payload = {}
    if base == "unclip":                                  # the notebook's items stage: real image, template, conditioning
        from ddrepro.zoo import UNET_TEMPLATES
        templates = list(s["unclip_templates"] or UNET_TEMPLATES)
        perm = {c: torch.nonzero(train_real.labels == c)[:, 0][np.random.default_rng(
                    derive_seed(a.seed, "concord.unclip.real", cm.folders[c])).permutation(int((train_real.labels == c).sum()))]
                for c in set(labels)}
        real_index = [int(perm[c][k]) for c, k in order]
        prompts = [templates[int(np.random.default_rng(derive_seed(sd, "concord.unclip.template")).integers(len(templates)))]
                   .format(names[c]) for sd, c in zip(seeds, labels)]
        level_gens = [torch.Generator().manual_seed(derive_seed(sd, "concord.unclip.level")) for sd in seeds]
        x = to_float01(train_real.images[real_index])
        with torch.no_grad():
            cond = torch.cat([bb.image_conditioning(x[i:i + 256].to(dev), s["unclip_noise_level"], level_gens[i:i + 256]).cpu()
                              for i in range(0, len(x), 256)])
        payload.update({"unet.class_labels": cond, "prompt": prompts})
    hook, tau = None, None
    if mode == "concord":                                 # the notebook's concepts and items stages, then the hook
        from ddrepro.concord import (ConcordGuidance, class_similarity, concepts_path, concord_items, encoder_tau,
                                     filter_concepts, load_concepts)
        from ddrepro.evaluate import random_real_subset
        raw = load_concepts(concepts_path(s["dataset"]), names, min_phrases=s["keep"])
        ref = random_real_subset(train_real, a.filter_real_per_class, a.seed)
        ref = ref if ref.images is not None else ref.load()
        fc = filter_concepts(enc, raw, names, ref, keep=s["keep"])
        tau = float(s["tau"]) if s["tau"] is not None else encoder_tau(enc)
        items = concord_items(labels, seeds, enc, fc.phrases, names, n_neg=a.n_neg, mode=s["neg_mode"],
                              class_sim=class_similarity(enc, names), ids=ids)
        payload.update(items.payload)
        hook = ConcordGuidance(enc, a.lam, tau, s["objective"], s["grad_path"])
        gen = dataclasses.replace(gen, guidance=hook)
    prep_s = time.perf_counter() - t0

    def batch(i, j):
        return {k: v[i:j] for k, v in payload.items()}

    _reset_peak(); loaded = _loaded_mb(dev)               # the peak window opens before the warm-up: its first allocations count
    b0 = min(a.batch_size, len(order))                    # warm-up: one batch of the timed size, 2 steps, not timed
    dataclasses.replace(gen, num_steps=2).generate(labels[:b0], seeds[:b0], ids[:b0], batch(0, b0))
    if hook is not None: hook.history.clear()
    t = time.perf_counter()
    for i in range(0, len(order), a.batch_size):
        j = i + a.batch_size
        gen.generate(labels[i:j], seeds[i:j], ids[i:j], batch(i, j))
    if dev.startswith("cuda"): torch.cuda.synchronize()
    synth_s = time.perf_counter() - t
    peak = _peak_mb(dev)
    n = len(order)
    return dict(base=base, mode=mode, method=method_name(base, mode), device=dev, images=n, classes=a.classes,
                batch_size=a.batch_size, steps=a.steps, load_s=load_s, prep_s=prep_s, synth_s=synth_s, s_per_image=synth_s / n,
                peak_mb=peak, loaded_mb=loaded, peak_over_loaded_mb=None if peak is None or loaded is None else peak - loaded,
                guided_calls=len(hook.history) if hook is not None else 0, tau=tau)


def summarise(rows: list[dict]) -> dict:
    "Per base: {base_s, concord_s (s / image), ratio = concord_s / base_s, paper_ratio (Table 10; None without a column)}."
    by = {(r["base"], r["mode"]): r for r in rows}
    out = {}
    for b in dict.fromkeys(r["base"] for r in rows):
        if (b, "base") not in by or (b, "concord") not in by:
            raise ValueError(f"{b}: needs both a base and a concord row, got {[m for bb, m in by if bb == b]}")
        bs, cs = by[(b, "base")]["s_per_image"], by[(b, "concord")]["s_per_image"]
        out[b] = dict(base_s=bs, concord_s=cs, ratio=cs / bs if bs > 0 else math.nan, paper_ratio=paper_ratio(b))
    return out


def _r(x, k):
    "round(x, k) (k None: to an int); None stays None."
    return None if x is None else round(x, k)


def table(rows: list[dict]) -> pd.DataFrame:
    "One row per base: s / image without and with CONCORD, the ratio and Table 10's beside it, peak memory of both workers."
    by = {(r["base"], r["mode"]): r for r in rows}
    recs = []
    for b, s in summarise(rows).items():
        col = PAPER_COLUMN.get(b)
        o, c = by[(b, "base")], by[(b, "concord")]
        recs.append({"base": BASES[b], "s / image": round(s["base_s"], 3), "s / image ^c": round(s["concord_s"], 3),
                     "^c ÷ base": round(s["ratio"], 2),
                     "paper ^c ÷ base (Table 10)": _r(s["paper_ratio"], 2),
                     "paper s / image, base → ^c": f"{PAPER_T10[col]:g} → {PAPER_T10[col + '^c']:g}" if col else "—",
                     "peak MB": _r(o["peak_mb"], None), "peak MB ^c": _r(c["peak_mb"], None),
                     "peak − loaded MB": _r(o["peak_over_loaded_mb"], None),
                     "peak − loaded MB ^c": _r(c["peak_over_loaded_mb"], None)})
    return pd.DataFrame(recs).set_index("base")


UNITS = dict(images="images", load_s="s", prep_s="s", synth_s="s", s_per_image="s", peak_mb="MB", loaded_mb="MB",
             peak_over_loaded_mb="MB", guided_calls="calls")


def long_rows(rows: list[dict]) -> pd.DataFrame:
    "The long CSV: every measured quantity per worker, the ratio per base, and Table 10's printed numbers (source column)."
    out = [dict(base=r["base"], method=r["method"], quantity=q, value=r[q], unit=u, source="measured")
           for r in rows for q, u in UNITS.items() if r.get(q) is not None]
    for b, s in summarise(rows).items():
        out.append(dict(base=b, method=method_name(b, "concord"), quantity="ratio_to_base", value=s["ratio"], unit="×", source="measured"))
        col = PAPER_COLUMN.get(b)
        if col:
            out += [dict(base=b, method=col + suf, quantity="s_per_image", value=PAPER_T10[col + suf], unit="s",
                         source="paper Table 10") for suf in ("", "^c")]
            out.append(dict(base=b, method=col + "^c", quantity="ratio_to_base", value=s["paper_ratio"], unit="×",
                            source="paper Table 10"))
    return pd.DataFrame(out, columns=["base", "method", "quantity", "value", "unit", "source"])


def markdown(rows: list[dict], a, s: dict) -> str:
    "cost.md: the table and what was measured how."
    from ddrepro.reports import df_to_markdown
    r0 = rows[0]
    tau = next((r["tau"] for r in rows if r.get("tau") is not None), None)
    return (f"### CONCORD generation cost, embedded (zoo, {s['dataset']}): {a.classes} class(es) × IPC {a.ipc} = "
            f"{r0['images']} image(s) per worker, batch {a.batch_size}, {a.steps} DDIM steps, device {r0['device']}\n\n"
            + df_to_markdown(table(rows).astype(object).fillna("—")) +
            f"\n\n^c: with CONCORD (`ConcordGuidance`, encoder {a.encoder}, λ = {a.lam:g}, τ = "
            + (f"{tau:.4f}" if tau is not None else "encoder_tau") +
            f", {s['objective']}, {a.n_neg} {s['neg_mode']} negatives, {s['keep']} positives per class, gradient path "
            f"{s['grad_path']}), on the same items and seeds as its base. Minimax: the zoo DiT fine-tuned {a.minimax_steps} steps on "
            f"{a.minimax_per_class} images per class; DiT: the zoo DiT (CFG {s['cfg_scale']:g}); unCLIP stand-in: {s['unclip']} "
            f"(CFG {s['unclip_cfg_scale']:g}), conditioned on a real training image per item. Each row's two workers are "
            f"fresh processes (torch threads {a.threads}); s / image is generation alone, after an untimed 2-step warm-up; peak: "
            + ("CUDA peak allocated" if r0["device"].startswith("cuda") else "peak resident set (VmHWM)") +
            " over warm-up and generation; peak − loaded: its rise over what was resident once everything was loaded. Paper (Table 10, one "
            f"image at mini-batch 1, GPU not stated): Minimax {PAPER_T10['Minimax']} s → Minimax^c {PAPER_T10['Minimax^c']} s "
            f"(× {paper_ratio('minimax'):.2f}), unCLIP {PAPER_T10['unCLIP']} s → unCLIP^c {PAPER_T10['unCLIP^c']} s "
            f"(× {paper_ratio('unclip'):.2f}); no DiT column, no memory figures.\n")


def _parse_bases(text: str) -> list[str]:
    from ddrepro.core import ConfigError
    bases = [b.strip() for b in str(text).split(",") if b.strip()]
    if not bases or len(set(bases)) != len(bases) or not set(bases) <= set(BASES):
        raise ConfigError(f"--bases {text!r}: expected distinct names from {','.join(BASES)}, comma-separated")
    return bases


def main(argv=None):
    s = run_settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", default=",".join(BASES)); ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--ipc", type=int, default=2); ap.add_argument("--steps", type=int, default=s["num_steps"])
    ap.add_argument("--batch-size", type=int, default=1, help="generation mini-batch (Table 10: 1)")
    ap.add_argument("--lam", type=float, default=s["lam"]); ap.add_argument("--n-neg", type=int, default=s["n_neg"])
    ap.add_argument("--encoder", default=s["encoder"]); ap.add_argument("--filter-real-per-class", type=int, default=100)
    ap.add_argument("--minimax-steps", type=int, default=s["minimax_steps"])
    ap.add_argument("--minimax-per-class", type=int, default=s["minimax_per_class"])
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto"); ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError
    if a.smoke:
        a.classes, a.ipc, a.steps, a.batch_size, a.filter_real_per_class = 1, 1, 3, 1, 10
        a.minimax_steps, a.minimax_per_class = 20, 20                  # the run_concord smoke test's cached fine-tune
    bases = _parse_bases(a.bases)
    for k, lo in dict(classes=1, ipc=1, steps=2, batch_size=1, filter_real_per_class=1, minimax_steps=1,
                      minimax_per_class=1, seed=0, threads=0).items():
        if getattr(a, k) < lo:
            raise ConfigError(f"--{k.replace('_', '-')} {getattr(a, k)}: expected an integer ≥ {lo}")
    from ddrepro.data import class_map
    n_cls = len(class_map(s["dataset"]))
    if a.classes > n_cls: raise ConfigError(f"--classes {a.classes}: {s['dataset']} has {n_cls} classes")
    if not 0 <= a.n_neg <= n_cls - 1:
        raise ConfigError(f"--n-neg {a.n_neg}: expected 0..{n_cls - 1}, each negative from a different other class")
    if not math.isfinite(a.lam): raise ConfigError(f"--lam {a.lam}: expected a finite informing weight λ")
    from ddrepro.backbones import check_encoder_spec
    check_encoder_spec(a.encoder, param="--encoder")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", a.device):
        raise ConfigError(f"--device {a.device!r}: expected auto, cpu, cuda, cuda:<index> or mps")
    if a.worker:
        if a.worker.count(":") != 1 or a.worker.split(":")[0] not in BASES or a.worker.split(":")[1] not in MODES:
            raise ConfigError(f"--worker {a.worker!r}: expected <base>:<{'|'.join(MODES)}>")
        print(json.dumps(worker(a)))
        return None
    if a.figures:                                      # refuse before timing anything; publish_figures checks the record again
        from ddrepro import core
        g = core.git_info()
        if not g.get("sha") or g.get("dirty") is not False:
            raise ConfigError(f"--figures: the checkout ({g.get('sha')}, dirty {g.get('dirty')}) is not one clean commit; "
                              "figures need one clean commit — commit, then rerun in a clean checkout")
    from ddrepro.core import RunRecord, atomic_write, project_root
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "concord_cost"
    rec = RunRecord.start(out, dict(vars(a), run_settings=s), kind="bench")
    if "minimax" in bases:                             # the fine-tune once, before (and outside) the timed workers
        from ddrepro.minimax import minimax_cache_dir, zoo_minimax
        if not (minimax_cache_dir(s["dataset"], a.seed, a.minimax_steps, a.minimax_per_class) / "ema" / "config.json").exists():
            import torch
            if a.threads > 0: torch.set_num_threads(a.threads)
            from ddrepro.core import pick_device
            print(f"fine-tuning the zoo DiT with Minimax ({a.minimax_steps} steps, cached under runs/minimax/) …", flush=True)
            t = time.perf_counter()
            zoo_minimax(s["dataset"], a.seed, a.minimax_steps, a.minimax_per_class, a.data_root, str(pick_device(a.device)))
            rec.results["minimax_finetune_s"] = time.perf_counter() - t
    args = [x for k, v in vars(a).items() if k not in ("worker", "figures", "out", "smoke", "bases")
            for x in (([f"--{k.replace('_', '-')}"] if v is True else []) if isinstance(v, bool) else
                      ([] if v is None else [f"--{k.replace('_', '-')}", str(v)]))]
    rows = []
    for b in bases:
        for mode in MODES:
            t = time.perf_counter()
            r = subprocess.run([sys.executable, __file__, "--worker", f"{b}:{mode}", *args], capture_output=True, text=True,
                               env=dict(os.environ, DDREPRO_PROGRESS="0"))
            if r.returncode:
                raise RuntimeError(f"{method_name(b, mode)} worker failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"{rows[-1]['method']}: {rows[-1]['s_per_image']:.3f} s/image, peak {rows[-1]['peak_mb']:.0f} MB "
                  f"(worker {time.perf_counter() - t:.0f} s)", flush=True)
        sb = summarise(rows)[b]
        pr = "" if sb["paper_ratio"] is None else f"; paper Table 10 × {sb['paper_ratio']:.2f}"
        print(f"  {BASES[b]}: with CONCORD × {sb['ratio']:.2f}{pr}", flush=True)
    df, md = long_rows(rows), markdown(rows, a, s)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "cost.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "cost.md") as f: f.write(md)
    rec.results["rows"] = rows
    rec.results["summary"] = summarise(rows)
    rec.finish(**{f"{b}_ratio": round(v["ratio"], 3) for b, v in summarise(rows).items()})
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        name = "concord_embedded_cost"
        publish_figures({out / "cost.csv": f"{name}.csv", out / "cost.md": f"{name}.md", rec.path: f"{name}_record.json"},
                        [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
