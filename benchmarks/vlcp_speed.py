"""D4M's and VLCP's cost beside plain DiT sampling on the embedded zoo: the time of each stage of both methods and
their seconds per distilled image, measured side by side in one process.

    .venv/bin/python benchmarks/vlcp_speed.py [--per-class 200] [--ipc 10] [--classes K] [--finetune-steps 50]
                     [--steps 50] [--batch-size 16] [--threads 1] [--seed 0] [--out DIR] [--figures] [--smoke]

In one process, on the embedded zoo (the 'zoo-attr' text UNet + VAE with its MiniLM encoder, the zoo DiT, Fashion-MNIST
train images: `--per-class` per class, the run notebook's seeded draw), each stage timed alone by calling the library
functions directly (not through nbs/run_vlcp.ipynb, whose stages they are):

1. VLCP (`vlcp.method_config('vlcp', 'fashion_mnist', embedded=True)`): descriptions (`describe_dataset` with the
   `EmbeddedDescriber`, into a fresh file: nothing cached), fine-tune (`finetune_text_unet`, the embedded preset
   capped at `--finetune-steps` optimiser steps: the time scales with the steps, so s/step is reported and the full
   preset's cost on the same pairs estimated from it), latents (`prototype_latents`, VAE encode), LOF + KMeans
   (`class_prototypes`), text prototypes (`cluster_text_prototypes`), synthesis (`d4m_distill` with those prototypes
   and prompts, the fine-tuned UNet, long-prompt windows: img2img of IPC images per class, as `vlcp_distill`).
2. D4M (`method_config('d4m', …, primary=False)`, the zoo-attr UNet as is): latents, MiniBatchKMeans (no LOF),
   synthesis (`d4m_distill`).
3. DiT: the zoo DiT pool generator (`pools.load_pool_generator('dit')`, `--steps` DDPM steps, CFG 4) through
   `make_pool`, the same number of images (classes × IPC) and batch size.

Seconds per distilled image = the sum of a method's stages / its images; ratios D4M / DiT and VLCP / DiT; each stage's
share of its method's total. Models and data are loaded, and the libraries imported, before any timing; every output
goes to a fresh temporary folder (no pool, description or fine-tune is resumed). Torch threads and sklearn's
thread pools: `--threads`.

No paper numbers exist for this: the VLCP paper and its supplementary print no timings (the only printed D4M cost we
know is third-party, DPS supp. Table 6: 52 h on ImageNet-1K, in benchmarks/patchsel_speed.py).

`--classes K`: only the first K classes (the describer still gets all 10 names). `--smoke`: 2 classes, 12 real images
per class, IPC 2, 2 fine-tune steps, 4 scheduler steps (the test's run, ~15 s). Writes runs/bench/vlcp_speed/{speed.csv (long: part, method, quantity, value,
unit), speed.md, record.json}; `--figures` copies them to figures/vlcp_embedded_speed{.csv,.md,_record.json} from a
clean commit only.
"""
import argparse
import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["part", "method", "quantity", "value", "unit"]
VLCP_STAGES = ("descriptions", "finetune", "latents", "lof_kmeans", "text_prototypes", "synthesis")
D4M_STAGES = ("latents", "minibatch_kmeans", "synthesis")
LABELS = {"descriptions": "descriptions (EmbeddedDescriber)", "finetune": "fine-tune", "latents": "latents (VAE encode)",
          "lof_kmeans": "LOF + KMeans", "minibatch_kmeans": "MiniBatchKMeans (no LOF)", "text_prototypes": "text prototypes",
          "synthesis": "synthesis (img2img)"}
LOF_NEIGHBORS = 10                                     # VLCPConfig.n_neighbors: LOF needs more images per class


def per_image(stages: dict, dit_s: float, n_images: int) -> dict:
    """`stages` ({method: {stage: seconds}}) and DiT's seconds for the same `n_images` → {method: dict(seconds = sum of
    the stages, images, s_per_image = seconds / images, x_dit = s_per_image / DiT's, share = {stage: % of seconds})},
    with 'DiT' last (share empty)."""
    dit = dit_s / n_images
    out = {}
    for m, st in stages.items():
        tot = float(sum(st.values()))
        out[m] = dict(seconds=tot, images=n_images, s_per_image=tot / n_images, x_dit=tot / n_images / dit,
                      share={k: 100 * v / tot for k, v in st.items()})
    out["DiT"] = dict(seconds=float(dit_s), images=n_images, s_per_image=dit, x_dit=1.0, share={})
    return out


def finetune_rate(call_s: float, loop_s: float, steps: int, preset_steps: int) -> dict:
    """The fine-tune's cost per optimiser step: `call_s` the whole `finetune_text_unet` call, `loop_s` its training
    loop (`steps` steps) → dict(s_per_step = loop / steps, setup_s = the rest, preset_estimate_s = setup + s_per_step ·
    `preset_steps`: the full preset's time on the same pairs, read off the measured rate)."""
    s = loop_s / steps
    setup = max(call_s - loop_s, 0.0)
    return dict(steps=steps, seconds=call_s, loop_s=loop_s, s_per_step=s, setup_s=setup, preset_steps=preset_steps,
                preset_estimate_s=setup + s * preset_steps)


def with_preset_finetune(summary: dict, vlcp_stages: dict, ft: dict) -> dict:
    "VLCP's per-image numbers with the measured fine-tune replaced by the full preset's estimate (`finetune_rate`)."
    v, dit = summary["VLCP"], summary["DiT"]["s_per_image"]
    tot = v["seconds"] - vlcp_stages["finetune"] + ft["preset_estimate_s"]
    return dict(seconds=tot, images=v["images"], s_per_image=tot / v["images"], x_dit=tot / v["images"] / dit)


def long_rows(meta: dict, stages: dict, summary: dict, ft: dict, full: dict, extra: dict) -> pd.DataFrame:
    "The csv: one row per number (part, method, quantity, value, unit)."
    rows = []
    add = lambda part, m, q, v, u: rows.append(dict(part=part, method=m, quantity=q, value=float(v), unit=u))
    for q, v in meta.items(): add("setup", "all", q, v, "count")
    for m, st in stages.items():
        for k, s in st.items():
            add("stage", m, f"{k}_s", s, "s"); add("share", m, f"{k}_share", summary[m]["share"][k], "%")
    for q, u in (("steps", "count"), ("seconds", "s"), ("loop_s", "s"), ("s_per_step", "s/step"), ("setup_s", "s"),
                 ("preset_steps", "count"), ("preset_estimate_s", "s")):
        add("fine-tune", "VLCP", q, ft[q], u)
    for m, d in summary.items():
        add("per image", m, "images", d["images"], "count"); add("per image", m, "seconds", d["seconds"], "s")
        add("per image", m, "s_per_image", d["s_per_image"], "s/image"); add("per image", m, "x_dit", d["x_dit"], "×")
    for q, u in (("seconds", "s"), ("s_per_image", "s/image"), ("x_dit", "×")):
        add("per image", "VLCP (full fine-tune preset, est.)", q, full[q], u)
    for (m, q), (v, u) in extra.items(): add("detail", m, q, v, u)
    return pd.DataFrame(rows, columns=COLUMNS)


def stage_table(stages: dict, summary: dict) -> pd.DataFrame:
    "One row per (method, stage): seconds and share of the method's total, then the total."
    rows = []
    for m, st in stages.items():
        rows += [{"method": m, "stage": LABELS.get(k, k), "s": round(s, 3), "share %": round(summary[m]["share"][k], 1)}
                 for k, s in st.items()]
        rows.append({"method": m, "stage": "**total**", "s": round(summary[m]["seconds"], 3), "share %": 100.0})
    return pd.DataFrame(rows).set_index(["method", "stage"])


def image_table(summary: dict, full: dict) -> pd.DataFrame:
    "One row per method: images, total seconds, seconds per image, × DiT (the VLCP estimate with the full fine-tune beside)."
    rows = [(m, d) for m, d in summary.items() if m != "DiT"] + [("VLCP (full fine-tune preset, est.)", full), ("DiT", summary["DiT"])]
    return pd.DataFrame([{"": m, "images": d["images"], "total s": round(d["seconds"], 2), "s / image": round(d["s_per_image"], 3),
                          "× DiT": round(d["x_dit"], 2)} for m, d in rows]).set_index("")


def figures_refusal(git: dict) -> str | None:
    "Why `--figures` must not run from this checkout (`core.git_info()`): None when it is one clean commit."
    if not git.get("sha"): return "--figures: not a git checkout; figures need one clean commit"
    if git.get("dirty") is not False:
        return (f"--figures: the checkout at {str(git['sha'])[:12]} has uncommitted changes; figures need one clean commit — "
                "commit, then rerun in a clean checkout")
    return None


def first_classes(real, k: int | None):
    "The ImageSet restricted to classes 0..k−1 with a k-class map (labels unchanged); all of it when k is None."
    cm = real.class_map
    if k is None or k >= len(cm): return real
    sub = real.subset(np.nonzero(real.labels.numpy() < k)[0])
    small = dataclasses.replace(cm, **{f: getattr(cm, f)[:k] for f in ("folders", "names", "prompt_names", "wnids", "head_idx")})
    return dataclasses.replace(sub, class_map=small)


class Timer:
    "Named stage times: `with t('vlcp', 'latents'): …` adds the block's seconds to stages['vlcp']['latents']."
    def __init__(self): self.stages = {}
    @contextlib.contextmanager
    def __call__(self, method: str, stage: str):
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.stages.setdefault(method, {})[stage] = dt
        print(f"[{method}] {stage}: {dt:.2f} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=200, help="real images per class (prototypes, descriptions, fine-tune)")
    ap.add_argument("--ipc", type=int, default=10); ap.add_argument("--classes", type=int, default=None)
    ap.add_argument("--finetune-steps", type=int, default=50, help="cap on VLCP's fine-tune optimiser steps (time ∝ steps)")
    ap.add_argument("--steps", type=int, default=50, help="scheduler steps: img2img's full chain (strength cuts it) and DiT's")
    ap.add_argument("--batch-size", type=int, default=16, help="images per generator batch (all three)")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError
    if a.smoke: a.per_class, a.ipc, a.finetune_steps, a.steps, a.classes = 12, 2, 2, 4, a.classes or 2
    for k in ("per_class", "ipc", "finetune_steps", "steps", "batch_size", "threads") + (("classes",) if a.classes is not None else ()):
        if getattr(a, k) < 1: raise ConfigError(f"--{k.replace('_', '-')} {getattr(a, k)}: expected an integer ≥ 1")
    if a.per_class < a.ipc: raise ConfigError(f"--per-class {a.per_class} < --ipc {a.ipc}: each class needs ≥ IPC images")
    if a.per_class <= LOF_NEIGHBORS:
        raise ConfigError(f"--per-class {a.per_class}: VLCP's LOF ({LOF_NEIGHBORS} neighbours) needs more than {LOF_NEIGHBORS} images per class")
    if a.figures:                                      # refuse before timing anything; publish_figures checks the record again
        from ddrepro import core
        why = figures_refusal(core.git_info())
        if why: raise ConfigError(why)
    from ddrepro.vlcp import finetune_config, method_config
    values = dict(ipc=a.ipc, seed=a.seed, num_steps=a.steps, batch_size=a.batch_size)
    vcfg = method_config("vlcp", "fashion_mnist", True, values)              # the run notebook's resolution, embedded
    dcfg = method_config("d4m", "fashion_mnist", True, values, primary=False)
    fcfg = finetune_config("embedded", "fashion_mnist", seed=a.seed, max_steps=a.finetune_steps)
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(a.threads)
    with threadpool_limits(limits=a.threads), tempfile.TemporaryDirectory(prefix="vlcp_speed_") as tmp:
        return _run(a, vcfg, dcfg, fcfg, Path(tmp))


def _run(a, vcfg, dcfg, fcfg, tmp: Path):
    import copy
    import torch
    from ddrepro.backbones import load_text_backbone
    from ddrepro.core import RunRecord, atomic_write, derive_seed, project_root, read_json
    from ddrepro.d4m import class_prototypes, d4m_distill, prototype_latents
    from ddrepro.data import load_real
    from ddrepro.evaluate import random_real_subset
    from ddrepro.pools import load_pool_generator, make_pool
    from ddrepro.reports import df_to_markdown
    from ddrepro.vlcp import (EmbeddedDescriber, LongPromptEncoder, cluster_text_prototypes, describe_dataset,
                              finetune_config, finetune_text_unet, load_descriptions, load_stopwords)
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "vlcp_speed"
    rec = RunRecord.start(out, vars(a), kind="bench")

    # ---- models, data and imports (not timed)
    bb = load_text_backbone("zoo-attr", device="cpu")
    gen_dit = load_pool_generator("dit", "fashion_mnist", num_steps=a.steps, cfg_scale=4.0, sampler="ddpm", seed=a.seed, device="cpu")
    all_train = load_real("fashion_mnist", "train")
    names = list(all_train.class_map.prompt_names)      # the describer's names: all 10, in label order (also with --classes)
    train = first_classes(all_train, a.classes)
    real = random_real_subset(train, a.per_class, a.seed, cache_dir=tmp / "idx")      # the run notebook's seeded draw
    idx = read_json(real.source["indices_file"])["indices"]
    ids = [f"train/{i:05d}" for i in idx]                                               # the notebook's image ids
    cm, C = real.class_map, len(real.class_map)
    n_images = C * a.ipc
    stop = load_stopwords()
    import accelerate, sklearn.cluster, sklearn.neighbors, torchvision.transforms.v2.functional  # noqa: F401,E401  (imported inside stages)
    prototype_latents(bb.vae, real.images[:2], None, [0, 1])                           # warm-up, untimed
    unet0 = copy.deepcopy(bb.unet)                                                     # the fine-tune's copy (the notebook's), untimed
    T = Timer()

    # ---- VLCP: descriptions → fine-tune → latents → LOF + KMeans → text prototypes → synthesis
    with T("VLCP", "descriptions"):
        path = describe_dataset(EmbeddedDescriber(), real.images, real.labels, ids, names,
                                tmp / "descriptions" / "fashion_mnist" / "descriptions.jsonl")
        texts = load_descriptions(path, ids, real.labels, names, expect_describer=EmbeddedDescriber.id)
    with T("VLCP", "finetune"):
        unet, _ = finetune_text_unet(unet0, bb.vae, bb.encode, real.images, texts, fcfg, out_dir=None, device="cpu")
    info = unet.finetune_info
    gen_bb = dataclasses.replace(bb, unet=unet.eval())
    seeds = [derive_seed(vcfg.seed, "d4m-latent", i) for i in range(len(real))]        # vlcp_distill's / d4m_distill's draws
    with T("VLCP", "latents"):
        lat = prototype_latents(gen_bb.vae, real.images, vcfg.prototype_size, seeds, vcfg.latent_mode, vcfg.latent_batch_size)
    with T("VLCP", "lof_kmeans"):
        protos = class_prototypes(lat, real.labels, vcfg.ipc, contamination=vcfg.contamination, n_neighbors=vcfg.n_neighbors,
                                  seed=vcfg.seed, algorithm=vcfg.kmeans, class_names=cm.names, n_init=vcfg.n_init,
                                  batch_size=vcfg.km_expand * vcfg.ipc)
    with T("VLCP", "text_prototypes"):
        tp = cluster_text_prototypes(protos, texts, names, stop, vcfg.beta, vcfg.top_k)
        prompts = {c: [r["prompt"] for r in rows] for c, rows in tp.items()}
    with T("VLCP", "synthesis"):
        vres = d4m_distill(real.images, real.labels, cm, gen_bb, vcfg, tmp / "vlcp", device="cpu", prototypes=protos,
                           prompts=prompts, encode_pair=LongPromptEncoder(gen_bb, vcfg.max_chunks), name="vlcp")

    # ---- D4M: latents → MiniBatchKMeans → synthesis (the zoo-attr UNet as is)
    dseeds = [derive_seed(dcfg.seed, "d4m-latent", i) for i in range(len(real))]
    with T("D4M", "latents"):
        dlat = prototype_latents(bb.vae, real.images, dcfg.prototype_size, dseeds, dcfg.latent_mode, dcfg.latent_batch_size)
    with T("D4M", "minibatch_kmeans"):
        dprotos = class_prototypes(dlat, real.labels, dcfg.ipc, contamination=dcfg.contamination, n_neighbors=dcfg.n_neighbors,
                                   seed=dcfg.seed, algorithm=dcfg.kmeans, class_names=cm.names, n_init=dcfg.n_init,
                                   batch_size=dcfg.km_expand * dcfg.ipc)
    with T("D4M", "synthesis"):
        dres = d4m_distill(real.images, real.labels, cm, bb, dcfg, tmp / "d4m", device="cpu", prototypes=dprotos)

    # ---- plain DiT sampling: the same number of images and batch size
    t0 = time.perf_counter()
    dit_rec = make_pool(gen_dit, cm, a.ipc, a.seed, tmp / "dit", batch_size=a.batch_size, device="cpu")
    dit_s = time.perf_counter() - t0
    print(f"[DiT] {n_images} images: {dit_s:.2f} s", flush=True)

    # ---- checks: every image made now (nothing resumed), one prototype per image
    gen_info = {"VLCP": read_json(vres["pool_record"])["stages"]["generate"], "D4M": read_json(dres["pool_record"])["stages"]["generate"],
                "DiT": dit_rec.stages["generate"]}
    made = {m: g.get("images") for m, g in gen_info.items()}
    if any(v != n_images for v in made.values()):
        raise RuntimeError(f"images generated now {made}; expected {n_images} each (classes × IPC), none resumed")
    stages = {"VLCP": {k: T.stages["VLCP"][k] for k in VLCP_STAGES}, "D4M": {k: T.stages["D4M"][k] for k in D4M_STAGES}}
    summary = per_image(stages, dit_s, n_images)
    preset = finetune_config("embedded", "fashion_mnist", seed=a.seed)
    preset_steps, preset_cap = preset.steps(len(real)), preset.max_steps
    ft = finetune_rate(stages["VLCP"]["finetune"], float(info["wall_s"]), int(info["steps"]), preset_steps)
    full = with_preset_finetune(summary, stages["VLCP"], ft)
    st_v = vres["strength"]
    img2img_steps = st_v["kept_steps"]
    extra = {(m, "generate_s"): (g["wall_s"], "s") for m, g in gen_info.items()}
    extra.update({("VLCP", "lof_outliers"): (sum(int((~p.inliers).sum()) for p in protos), "count"),
                  ("VLCP", "distinct_descriptions"): (len(set(texts)), "count"),
                  ("VLCP", "img2img_unet_steps"): (img2img_steps, "steps"), ("D4M", "img2img_unet_steps"): (dres["strength"]["kept_steps"], "steps"),
                  ("DiT", "unet_steps"): (a.steps, "steps")})
    same_latents = bool(torch.equal(lat, dlat))        # the same VAE, seeds and mode: one computation timed twice
    meta = dict(classes=C, ipc=a.ipc, real_per_class=a.per_class, real_images=len(real), distilled_images=n_images,
                threads=a.threads, batch_size=a.batch_size)

    # ---- tables
    df = long_rows(meta, stages, summary, ft, full, extra)
    V, D, Dt = summary["VLCP"], summary["D4M"], summary["DiT"]
    top = max(stages["VLCP"], key=stages["VLCP"].get)
    md = (f"### D4M and VLCP speed (embedded): stage times and seconds per distilled image beside plain DiT sampling\n\n"
          f"{C} classes × IPC {a.ipc} = {n_images} distilled images per method, from {a.per_class} real Fashion-MNIST train "
          f"images per class ({len(real)} in all; the run notebook's seeded draw); every stage timed alone in one process, "
          f"the library functions called directly.\n\n"
          f"**Stage times** (share of the method's total):\n\n" + df_to_markdown(stage_table(stages, summary)) +
          f"\n\n**Seconds per distilled image** (sum of the stages / images; DiT: `make_pool` of the zoo DiT, {a.steps} DDPM "
          f"steps, CFG 4, the same {n_images} images):\n\n" + df_to_markdown(image_table(summary, full)) +
          f"\n\nD4M / DiT **× {D['x_dit']:.2f}**, VLCP / DiT **× {V['x_dit']:.2f}** (VLCP / D4M × {V['seconds'] / D['seconds']:.2f}); "
          f"VLCP's largest stage: {LABELS[top]} ({V['share'][top]:.0f} %). One timed run of each stage; the two latents stages "
          f"{'compute the same latents (same VAE, seeds and mode), so their difference' if same_latents else 'compute DIFFERENT latents; their difference'} "
          f"({abs(stages['VLCP']['latents'] - stages['D4M']['latents']):.2f} s) is {'timing noise' if same_latents else 'not only noise'}.\n\n"
          f"**Fine-tune**: {ft['steps']} optimiser steps (the embedded preset capped by --finetune-steps {a.finetune_steps}) of "
          f"batch {fcfg.batch_size} × {fcfg.grad_accum} on {len(real)} (image, description) pairs: **{ft['s_per_step']:.3f} s/step** "
          f"+ {ft['setup_s']:.2f} s setup. The time scales with the steps: the full embedded preset on these pairs "
          f"({fcfg.epochs:g} epochs, at most {preset_cap} steps: {ft['preset_steps']} here) would take ≈ {ft['preset_estimate_s']:.0f} s, "
          f"making VLCP {full['s_per_image']:.3f} s/image (× {full['x_dit']:.1f} DiT).\n\n"
          f"Generation alone (`make_pool`'s generate stage): VLCP {gen_info['VLCP']['wall_s']:.2f} s, D4M "
          f"{gen_info['D4M']['wall_s']:.2f} s, DiT {gen_info['DiT']['wall_s']:.2f} s; img2img runs {img2img_steps} of "
          f"{a.steps} DDIM steps (strength {vcfg.strength} on SD-1.5 matched by ᾱ: {st_v['used']:.2f} here), both CFG branches, "
          f"DiT all {a.steps} DDPM steps; synthesis also writes the prototypes, the pool and the distilled set.\n\n"
          f"**No paper numbers**: the VLCP paper and its supplementary print no timings, so there is nothing to set beside "
          f"these (the only printed D4M cost we know is third-party: DPS supp. Table 6, 52 h on ImageNet-1K, its hardware).\n\n"
          f"Settings: backbone `zoo-attr` (MiniLM-conditioned UNet + the zoo VAE, latents {'×'.join(map(str, lat.shape[1:]))}); VLCP: LOF α {vcfg.contamination} "
          f"({vcfg.n_neighbors} neighbours, {sum(int((~p.inliers).sum()) for p in protos)} outliers dropped), KMeans n_init "
          f"{vcfg.n_init}, β {vcfg.beta}, top-k {vcfg.top_k}, guidance {vcfg.guidance:g}, long prompts in windows "
          f"(≤ {vcfg.max_chunks}); D4M: MiniBatchKMeans (chunk {dcfg.km_expand} × IPC), guidance {dcfg.guidance:g}; negative "
          f"prompt {vcfg.negative_prompt!r}; generator batch {a.batch_size}. CPU, torch and sklearn threads {a.threads}; "
          "models and data loaded and the libraries imported before timing; outputs in a fresh temporary folder (nothing "
          "resumed or cached).\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "speed.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "speed.md") as f: f.write(md)
    rec.results.update(same_latents=same_latents, stages=stages, per_image=summary, finetune=dict(ft, info=info), vlcp_full_finetune_estimate=full,
                       generate={m: g["wall_s"] for m, g in gen_info.items()}, strength=dict(vlcp=st_v, d4m=dres["strength"]),
                       configs=dict(vlcp=dataclasses.asdict(vcfg), d4m=dataclasses.asdict(dcfg), finetune=dataclasses.asdict(fcfg)),
                       paper=None, paper_note="the VLCP supplementary prints no timings")
    rec.finish(d4m_over_dit=round(D["x_dit"], 4), vlcp_over_dit=round(V["x_dit"], 4), dit_s_per_image=round(Dt["s_per_image"], 5),
               finetune_s_per_step=round(ft["s_per_step"], 5))
    print(md)
    if a.figures:                                      # the record goes too: the gallery reads its commit
        from ddrepro.reports import publish_figures
        publish_figures({out / "speed.csv": "vlcp_embedded_speed.csv", out / "speed.md": "vlcp_embedded_speed.md",
                         rec.path: "vlcp_embedded_speed_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
