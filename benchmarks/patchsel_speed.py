"""Diffusion-driven patch selection's cost beside RDED's (Zhong et al., "Efficient Dataset Distillation via
Diffusion-Driven Patch Selection for Improved Generalization", supp. Table 6), measured side by side in one run.

    .venv/bin/python benchmarks/patchsel_speed.py [--per-class 100] [--ipc 10] [--classes K] [--s1-images 128]
                     [--repeats 3] [--batch-size 256] [--threads 1] [--out DIR] [--figures] [--smoke]

In one process, on the embedded zoo (text-conditioned UNet + VAE, Fashion-MNIST train images, the zoo teacher):

1. Stage I throughput: `patchsel.loss_difference_maps` on the same `--s1-images` latents, the same (t, ε) draws and
   the same `batch_size` ((image, draw) pairs per forward), both prompts in ONE batched forward (`one_batch=True`,
   2·batch_size rows) against two separate forwards (`one_batch=False`); each timed `--repeats` times, interleaved
   A B A B … after one untimed warm-up of each; the median seconds, images per second and the ratio. Checks: the
   largest |difference| between the two maps, and the paired estimator with the same prompt on both sides (0).
2. Seconds per distilled image of DPS (`patchsel.dps_distill`, the EMBEDDED preset) and RDED (`rded.rded_distill`,
   the embedded run's RDED settings from params/patchsel/embedded/run.yaml, the zoo teacher as observer), the same
   IPC and the same `--per-class` real images scored per class (checked from both candidate tables). DPS is split
   into Stage I (`stage1_candidates`) and Stage II (`stage2_rank`) by running both again on the first class's
   drawn images (its scores must equal the run's).
3. The paper's supp. Table 6 (ImageNet-1K, total hours) beside, with its DPS / RDED ratio next to the measured one.

`--classes K`: only the first K classes (a smaller ImageSet with a K-class map; the observer's first K logits).
Writes runs/bench/patchsel_speed/{speed.csv (long: part, method, quantity, value, unit), speed.md, record.json};
`--figures` copies them to figures/patchsel_embedded_speed{.csv,.md,_record.json} from a clean commit only.
"""
import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

# supp. Table 6, ImageNet-1K: total hours as printed, top-1 accuracy (%). The caption says IPC 50; the text and the
# accuracies (e.g. RDED 60.5, Minimax 58.8: their IPC-100 numbers) indicate IPC 100.
PAPER_T6 = {"SRe²L": (106, 52.8), "Minimax": (256, 58.8), "D⁴M": (52, 59.3), "RDED": (1, 60.5), "DPS (Ours)": (95, 61.8)}
PAPER_IPC_NOTE = "caption: IPC 50; text and accuracies: IPC 100"
ONE, TWO = "one batch (both prompts)", "two forwards"
COLUMNS = ["part", "method", "quantity", "value", "unit"]


def paper_ratio() -> float:
    "Table 6's DPS / RDED hours (95 / 1)."
    return PAPER_T6["DPS (Ours)"][0] / PAPER_T6["RDED"][0]


def timing_summary(times: dict, n_images: int, base: str) -> dict:
    """Per variant of `times` ({name: [seconds of each repeat]}): median seconds, `n_images` / median (images per
    second) and `speedup` = median(base) / median(variant) (> 1: faster than `base`)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: dict(median_s=m, images_per_s=n_images / m, speedup=med[base] / m, runs_s=list(times[k])) for k, m in med.items()}


def time_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    "Run each of `fns` ({name: callable}) once untimed, then `repeats` times interleaved (A B A B …) → (times, last outputs)."
    out = {k: f() for k, f in fns.items()}                          # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter(); out[k] = f(); times[k].append(time.perf_counter() - t)
    return times, out


def first_classes(real, k: int | None):
    "The ImageSet restricted to classes 0..k−1 with a k-class map (labels unchanged); all of it when k is None."
    cm = real.class_map
    if k is None or k >= len(cm): return real
    sub = real.subset(np.nonzero(real.labels.numpy() < k)[0])
    small = dataclasses.replace(cm, **{f: getattr(cm, f)[:k] for f in ("folders", "names", "prompt_names", "wnids", "head_idx")})
    return dataclasses.replace(sub, class_map=small)


def long_rows(s1: dict, check: dict, dist: dict, s1_meta: dict) -> pd.DataFrame:
    "The csv: one row per number (part, method, quantity, value, unit)."
    rows = []
    add = lambda part, m, q, v, u: rows.append(dict(part=part, method=m, quantity=q, value=float(v), unit=u))
    for m, d in s1.items():
        add("stage I", m, "images", s1_meta["images"], "count"); add("stage I", m, "n_draws", s1_meta["n_draws"], "count")
        add("stage I", m, "batch_size", s1_meta["batch_size"], "pairs/forward")
        for i, t in enumerate(d["runs_s"]): add("stage I", m, f"run_{i + 1}_s", t, "s")
        add("stage I", m, "median_s", d["median_s"], "s"); add("stage I", m, "images_per_s", d["images_per_s"], "images/s")
        add("stage I", m, "speedup_vs_two_forwards", d["speedup"], "×")
    add("stage I", "check", "max_abs_diff_one_vs_two", check["max_abs_diff"], "R units")
    add("stage I", "check", "max_abs_R", check["max_abs_R"], "R units")
    add("stage I", "check", "identical_prompts_max_abs_R", check["identical"], "R units")
    for m, d in dist.items():
        for q, u in (("classes", "count"), ("ipc", "count"), ("real_per_class", "count"), ("distilled_images", "count"),
                     ("seconds", "s"), ("s_per_image", "s"), ("x_rded", "×"), ("stage1_s_class0", "s"),
                     ("stage2_s_class0", "s"), ("rest_s_per_class", "s"), ("split_matches_run", "bool")):
            if q in d: add("distill", m, q, d[q], u)
    for m, (h, acc) in PAPER_T6.items():
        add("paper Table 6", m, "hours", h, "h"); add("paper Table 6", m, "top1", acc, "%")
        add("paper Table 6", m, "x_rded", h / PAPER_T6["RDED"][0], "×")
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100, help="real images scored per class by both methods")
    ap.add_argument("--ipc", type=int, default=10); ap.add_argument("--classes", type=int, default=None)
    ap.add_argument("--s1-images", type=int, default=128, help="images of the Stage I throughput comparison")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each Stage I variant (interleaved)")
    ap.add_argument("--batch-size", type=int, default=256, help="(image, draw) pairs per UNet forward")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError
    for k in ("per_class", "ipc", "s1_images", "repeats", "batch_size", "threads") + (("classes",) if a.classes is not None else ()):
        if getattr(a, k) < 1: raise ConfigError(f"--{k.replace('_', '-')} {getattr(a, k)}: expected an integer ≥ 1")
    if a.per_class < a.ipc: raise ConfigError(f"--per-class {a.per_class} < --ipc {a.ipc}: each class needs ≥ IPC candidates")
    smoke = dict(n_draws=2, dift_ensemble=1, n_clusters=2) if a.smoke else {}
    if a.smoke: a.per_class, a.ipc, a.s1_images, a.repeats = 2, 1, 8, 1
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro import patchsel, rded, zoo
    from ddrepro.backbones import TeacherHead, load_text_backbone
    from ddrepro.core import RunRecord, atomic_write, load_yaml, project_root
    from ddrepro.data import load_real
    from ddrepro.diffusion import make_scheduler
    from ddrepro.reports import df_to_markdown
    cfg = patchsel.DPSConfig(**{**patchsel.EMBEDDED, "ipc": a.ipc, "per_class": a.per_class, "seed": a.seed,
                                "batch_size": a.batch_size, **smoke})
    run = load_yaml(project_root() / "params" / "patchsel" / "embedded" / "run.yaml")
    rcfg = rded.RDEDConfig(ipc=a.ipc, factor=run["rded_factor"], num_crops=run["rded_num_crops"], mipc=a.per_class,
                           crop_scale=tuple(run["rded_crop_scale"]), out_size=32, seed=a.seed)
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "patchsel_speed"
    rec = RunRecord.start(out, vars(a), kind="bench")

    # ---- models and data (not timed)
    bb = load_text_backbone("zoo")
    scheduler = make_scheduler("ddpm", bb.scheduler_config)
    real = first_classes(load_real("fashion_mnist", "train"), a.classes)
    cm = real.class_map
    cond, null = patchsel.class_states(bb.encode, cm.prompt_names, cfg)
    observer = zoo.load("teacher").eval()
    if len(cm) < 10: observer = TeacherHead(observer, range(len(cm))).eval()
    for p in observer.parameters(): p.requires_grad_(False)
    import sklearn.cluster  # noqa: F401  (Stage II's k-means: imported here, not inside the first timed class)

    # ---- 1. Stage I: one batched forward vs two forwards, same latents / draws / batch size
    x = real.images[:a.s1_images].float() / 255
    with torch.no_grad():
        z = (bb.vae.encode(2 * x - 1).latent_dist.mean * bb.vae.config.scaling_factor).float()
    c = cond[real.labels[:a.s1_images]]
    kw = dict(n_draws=cfg.n_draws, t_range=cfg.t_range, seed=cfg.seed, batch_size=cfg.batch_size)
    maps = lambda ob, cs=c, ns=null: patchsel.loss_difference_maps(bb.unet, z, cs, ns, scheduler, one_batch=ob, **kw)
    times, R = time_interleaved({ONE: lambda: maps(True), TWO: lambda: maps(False)}, a.repeats)
    s1 = timing_summary(times, len(z), base=TWO)
    check = dict(max_abs_diff=float((R[ONE] - R[TWO]).abs().max()), max_abs_R=float(R[ONE].abs().max()),
                 identical=float(maps(True, cond[:1], cond[:1]).abs().max()))     # the label prompt of class 0 on both sides
    print(f"Stage I: {ONE} {s1[ONE]['images_per_s']:.1f} images/s, {TWO} {s1[TWO]['images_per_s']:.1f} images/s "
          f"(× {s1[ONE]['speedup']:.2f}); max |diff| {check['max_abs_diff']:.2e}", flush=True)

    # ---- 2. seconds per distilled image: DPS (split into Stage I / II on class 0) and RDED
    C = len(cm)
    t0 = time.perf_counter()
    _, labs, tab, _ = patchsel.dps_distill(real, bb, scheduler, cfg)
    dps_s = time.perf_counter() - t0
    side = int(real.images.shape[-1])
    idx0 = tab["source_index"][tab["label"] == 0]
    imgs0 = real.subset(idx0).load().images
    ts = [time.perf_counter()]
    cand = patchsel.stage1_candidates(list(imgs0), np.zeros(len(idx0), np.int64), bb.unet, bb.vae, scheduler, cond, null, cfg,
                                      ids=idx0.tolist(), mode="whole" if cfg.assembly_for(side) == "whole" else "patch")
    ts.append(time.perf_counter())
    patchsel.stage2_rank(cand["patches"], cand["score"], bb.unet, bb.vae, scheduler, cond[0:1], cfg, ids=idx0.tolist())
    ts.append(time.perf_counter())
    with torch.no_grad(): observer(torch.rand(2, 3, side, side))                     # warm-up, untimed
    t0 = time.perf_counter()
    _, rlabs, rtab = rded.rded_distill(real, observer, rcfg)
    rded_s = time.perf_counter() - t0
    scored = {"DPS": np.bincount(tab["label"], minlength=C), "RDED": np.bincount(rtab["label"], minlength=C)}
    if not all((v == a.per_class).all() for v in scored.values()):
        raise RuntimeError(f"real images scored per class differ from --per-class {a.per_class}: "
                           f"{ {k: v.tolist() for k, v in scored.items()} }")
    common = dict(classes=C, ipc=a.ipc, real_per_class=a.per_class)
    dist = {"DPS": dict(common, seconds=dps_s, distilled_images=len(labs), stage1_s_class0=ts[1] - ts[0],
                        stage2_s_class0=ts[2] - ts[1], rest_s_per_class=dps_s / C - (ts[2] - ts[0]),
                        split_matches_run=bool(np.allclose(cand["score"], tab["score"][tab["label"] == 0], rtol=1e-5, atol=1e-7))),
            "RDED": dict(common, seconds=rded_s, distilled_images=len(rlabs))}
    for d in dist.values(): d["s_per_image"] = d["seconds"] / d["distilled_images"]
    for d in dist.values(): d["x_rded"] = d["s_per_image"] / dist["RDED"]["s_per_image"]

    # ---- tables
    df = long_rows(s1, check, dist, dict(images=len(z), n_draws=cfg.n_draws, batch_size=cfg.batch_size))
    t1 = pd.DataFrame([{"forward": m, "images": len(z), "runs s (interleaved)": " ".join(f"{t:.2f}" for t in d["runs_s"]),
                        "median s": round(d["median_s"], 3), "images / s": round(d["images_per_s"], 1),
                        f"× {TWO}": round(d["speedup"], 2)} for m, d in s1.items()]).set_index("forward")
    D = dist["DPS"]
    rows = [{"": f"{m} (measured)", "IPC": a.ipc, "real / class": a.per_class, "classes": C, "time": f"{d['seconds']:.1f} s",
             "s / image": round(d["s_per_image"], 4), "× RDED": round(d["x_rded"], 1), "top-1 % (paper)": ""}
            for m, d in dist.items()]
    rows += [{"": f"{m} (paper Table 6)", "IPC": 100, "real / class": "all", "classes": 1000, "time": f"{h} h",
              "s / image": round(h * 3600 / 1e5, 2), "× RDED": round(h / PAPER_T6["RDED"][0], 1), "top-1 % (paper)": acc}
             for m, (h, acc) in PAPER_T6.items()]
    t2 = pd.DataFrame(rows).set_index("")
    split = D["stage1_s_class0"] + D["stage2_s_class0"]
    md = (f"### DPS vs RDED speed (embedded): Stage I batching and seconds per distilled image, supp. Table 6 beside\n\n"
          f"**Stage I throughput** (`loss_difference_maps`, {len(z)} Fashion-MNIST train latents, {cfg.n_draws} paired draws "
          f"per image, batch_size {cfg.batch_size} (image, draw) pairs per forward: one batch = {2 * cfg.batch_size} UNet rows per "
          f"forward, two forwards = 2 × {cfg.batch_size}; one untimed warm-up each, then {a.repeats} timed run{'s' if a.repeats > 1 else ''} of each, interleaved):\n\n"
          + df_to_markdown(t1) +
          f"\n\nSame maps: max |one batch − two forwards| = {check['max_abs_diff']:.3g} (max |R| = {check['max_abs_R']:.3g}); "
          f"the paired estimator with the same prompt on both sides: max |R| = {check['identical']:.3g} (expected 0).\n\n"
          f"**Seconds per distilled image** (the same IPC {a.ipc} and the same {a.per_class} real images scored per class by both, "
          f"{C} classes):\n\n" + df_to_markdown(t2) +
          f"\n\nMeasured DPS / RDED: **× {D['x_rded']:.1f}**; the paper's (Table 6, {PAPER_T6['DPS (Ours)'][0]} h / "
          f"{PAPER_T6['RDED'][0]} h): **× {paper_ratio():.0f}**. DPS split on class 0 ({a.per_class} images): Stage I "
          f"{D['stage1_s_class0']:.2f} s ({100 * D['stage1_s_class0'] / split:.0f} %), Stage II {D['stage2_s_class0']:.2f} s "
          f"({100 * D['stage2_s_class0'] / split:.0f} %); the run's {dps_s / C:.2f} s per class leaves {D['rest_s_per_class']:.2f} s "
          f"for drawing, loading, selection and assembly (scores of the split {'equal' if D['split_matches_run'] else 'DIFFER from'} "
          f"the run's).\n\n"
          f"Settings: DPS `EMBEDDED` (zoo UNet + VAE, whole-image mode at 32 px: no window search, no stitching), "
          f"{cfg.n_draws} draws, DIFT {cfg.dift_ensemble} draws at t = {cfg.dift_t}, block {cfg.dift_block}, k-means M = "
          f"{cfg.n_clusters}; RDED factor {rcfg.factor}, {rcfg.num_crops} crops of scale {rcfg.crop_scale}, the zoo teacher "
          f"(ResNet-18) as observer. CPU, torch threads {a.threads}; models and data loaded before timing. Paper: supp. Table 6, "
          f"ImageNet-1K, total hours as printed (its hardware; {PAPER_IPC_NOTE} — the 's / image' of its rows assumes IPC 100, "
          "10⁵ images); top-1 is the paper's ImageNet-1K accuracy, not measured here.\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "speed.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "speed.md") as f: f.write(md)
    rec.results.update(stage1={k: {q: v for q, v in d.items()} for k, d in s1.items()}, check=check, distill=dist,
                       paper_table6={k: dict(hours=h, top1=acc) for k, (h, acc) in PAPER_T6.items()}, paper_ipc_note=PAPER_IPC_NOTE)
    rec.finish(stage1_speedup=round(s1[ONE]["speedup"], 4), dps_over_rded=round(D["x_rded"], 3), paper_dps_over_rded=paper_ratio(),
               max_abs_diff=check["max_abs_diff"])
    print(md)
    if a.figures:                                      # the record goes too: the gallery reads its commit
        from ddrepro.reports import publish_figures
        publish_figures({out / "speed.csv": "patchsel_embedded_speed.csv", out / "speed.md": "patchsel_embedded_speed.md",
                         rec.path: "patchsel_embedded_speed_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
