"""DsCo's embedded preset from a measured quality/time curve: NOpt iterations per step × real images per class in the
data-accessible target, on the zoo DiT + VAE (Fashion-MNIST).

    .venv/bin/python benchmarks/dsco_preset_curve.py [--ipc 10] [--classes 0,3,6,8] [--iters 0,5,20,50]
                     [--real-per-class 100,500,2000] [--threads 2] [--figures]

The paper runs 200 SGD iterations per step against every real latent of the class (Liu et al., arXiv:2603.27987,
§4.1.5, §5.1.3); on this CPU one class at IPC 10 takes ~25 s at 5 iterations with 500 real latents, and the time is
mostly the diffused target (N_Diff = 5 copies per real latent through the projector at every step), not the
iterations. So the curve crosses both knobs. For every point, one run, the same seeds, the listed classes:

- **time**: seconds per synthesised image (synthesis only; encoding the real latents is preparation, timed apart);
- **quality**, measured outside the NOpt objective, in the zoo teacher's penultimate features against the *held-out*
  real test images of the class: the unbiased RBF-kernel MMD² (bandwidth: the median real-real distance), the teacher's
  accuracy on the images, and the within-class angular spread.

Rows: DiT† (no optimisation, randn z_T: the baseline), LHS z_T without optimisation (the authors' initial noise alone,
not in the paper), and NOpt at each (iters, real_per_class); a random real subset of IPC per class is the reference.
Δ MMD² is paired per class against DiT†, ± its standard error over the classes.

The rule, fixed before the run (`choose_preset`): among NOpt points, the cheapest (seconds per image) whose mean MMD²
reduction from DiT† reaches `--frac` (0.9) of the largest reduction on the curve. Writes runs/bench/dsco_preset/
{curve.csv, curve.md, curve.png, record.json}; `--figures` copies them to figures/dsco_embedded_preset_curve* from a
clean commit only.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def mmd2_unbiased(x, y, bandwidth: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012, Eq. 3) of feature sets x (n, d), y (m, d) with an RBF kernel
    k(a, b) = exp(−‖a − b‖² / (2·bandwidth²)); n, m ≥ 2."""
    import torch
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if len(x) < 2 or len(y) < 2: raise ValueError(f"MMD² needs ≥ 2 samples per set; got {len(x)} and {len(y)}")
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth ** 2))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def median_bandwidth(y) -> float:
    "The median pairwise distance of y (n, d): the usual RBF bandwidth heuristic."
    import torch
    y = torch.as_tensor(y, dtype=torch.float64)
    d = torch.pdist(y)
    return float(d.median())


def set_quality(feats, logits, label: int, ref_feats, bandwidth: float) -> dict:
    """One class's images against the held-out real images of that class, in teacher features: MMD², teacher accuracy,
    and `spread` = the mean angle (radians) of the features to their class mean. Not `selection.within_class_spread`
    (SAS's mean pairwise angle between encoder embeddings): a different measure in a different space."""
    import torch
    f = torch.as_tensor(feats, dtype=torch.float64)
    u = f / f.norm(dim=1, keepdim=True)
    m = u.mean(0); m = m / m.norm()
    spread = float(torch.arccos((u @ m).clamp(-1, 1)).mean())
    return dict(mmd2=mmd2_unbiased(f, ref_feats, bandwidth), teacher_acc=float((logits.argmax(1) == label).float().mean()),
                spread=spread)


def choose_preset(curve: pd.DataFrame, frac: float = 0.9) -> dict | None:
    """The cheapest NOpt point (s/image) whose mean MMD² reduction from DiT† is ≥ frac × the largest reduction; None
    when no point reduces it."""
    nopt = curve[curve.kind == "nopt"]
    if nopt.empty or not (nopt.d_mmd2 < 0).any(): return None
    best = -nopt.d_mmd2.min()
    ok = nopt[-nopt.d_mmd2 >= frac * best].sort_values(["s_per_image", "iters", "real_per_class"])
    r = ok.iloc[0]
    return dict(iters=int(r.iters), real_per_class=int(r.real_per_class), s_per_image=float(r.s_per_image),
                d_mmd2=float(r.d_mmd2), best_d_mmd2=-best, frac=frac)


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    "Per point: mean over classes of each measure, and Δ MMD² / Δ teacher acc paired per class against DiT† ± SE."
    base = long[long.kind == "dit"].set_index("label")
    rows = []
    for key, g in long.groupby(["kind", "iters", "real_per_class"], sort=False, dropna=False):
        g = g.set_index("label")
        d = g.mmd2 - base.mmd2.loc[g.index]
        da = g.teacher_acc - base.teacher_acc.loc[g.index]
        se = lambda s: float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else float("nan")
        rows.append(dict(kind=key[0], iters=key[1], real_per_class=key[2], classes=len(g),
                         s_per_image=float(g.seconds.sum() / g.images.sum()), mmd2=float(g.mmd2.mean()),
                         d_mmd2=float(d.mean()), d_mmd2_se=se(d), teacher_acc=float(g.teacher_acc.mean()),
                         d_teacher_acc=float(da.mean()), d_teacher_acc_se=se(da), spread=float(g.spread.mean())))
    return pd.DataFrame(rows)


def plot_curve(curve: pd.DataFrame, choice: dict | None):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    nopt = curve[curve.kind == "nopt"]
    for rpc, g in nopt.groupby("real_per_class"):
        g = g.sort_values("s_per_image")
        ax.errorbar(g.s_per_image, g.d_mmd2, yerr=g.d_mmd2_se, marker="o", capsize=3, label=f"NOpt, {rpc} real/class")
        for _, r in g.iterrows(): ax.annotate(f"{int(r.iters)} it", (r.s_per_image, r.d_mmd2), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for kind, mk, name in (("lhs", "s", "LHS z_T, no optimisation"), ("real", "*", "random real images")):
        g = curve[curve.kind == kind]
        if len(g): ax.errorbar(g.s_per_image, g.d_mmd2, yerr=g.d_mmd2_se, marker=mk, ls="", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=0.8, ls="--", label="DiT† (0)")
    if choice: ax.scatter([choice["s_per_image"]], [choice["d_mmd2"]], s=160, facecolors="none", edgecolors="k", label="chosen")
    ax.set_xscale("log"); ax.set_xlabel("seconds per image (synthesis, this CPU)")
    ax.set_ylabel("Δ MMD² to held-out real vs DiT† (teacher features)")
    best = curve[curve.kind == "nopt"].d_mmd2.min() if len(nopt) else float("nan")
    ax.set_title(f"DsCo NOpt on the zoo DiT: quality vs time (largest Δ MMD² {best:+.4f})", fontsize=9)
    ax.legend(fontsize=7); fig.tight_layout()
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", type=int, default=10); ap.add_argument("--classes", default="0,3,6,8")
    ap.add_argument("--iters", default="0,5,20,50"); ap.add_argument("--real-per-class", default="100,500,2000")
    ap.add_argument("--base-real", type=int, default=500, help="real_per_class of the iterations sweep")
    ap.add_argument("--base-iters", type=int, default=20, help="iters of the real-per-class sweep")
    ap.add_argument("--steps", type=int, default=50); ap.add_argument("--cfg-scale", type=float, default=4.0)
    ap.add_argument("--frac", type=float, default=0.9); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--out", default=None)
    ap.add_argument("--figures", action="store_true"); ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke:
        a.classes, a.iters, a.real_per_class, a.base_real, a.base_iters, a.steps, a.ipc = "0,1", "0,2", "10,20", 10, 2, 3, 3
    classes = [int(c) for c in a.classes.split(",")]
    iters = [int(i) for i in a.iters.split(",")]
    rpcs = [int(r) for r in a.real_per_class.split(",")]
    points = [(i, a.base_real) for i in iters if i > 0] + [(a.base_iters, r) for r in rpcs if r != a.base_real]
    points = list(dict.fromkeys(points))
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.core import ConfigError, RunRecord, atomic_write, project_root
    from ddrepro.data import load_real
    from ddrepro.backbones import load_dit, load_vae, load_teacher
    from ddrepro.evaluate import random_real_subset
    from ddrepro.dsco import NOptConfig, class_latents, nopt_sample
    if a.ipc < 2: raise ConfigError(f"--ipc {a.ipc}: expected ≥ 2 (MMD² needs two images per class)")
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "dsco_preset"
    rec = RunRecord.start(out, vars(a), kind="bench")
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "val")
    cm = train.class_map
    bad = [c for c in classes if not 0 <= c < len(cm)]
    if bad: raise ConfigError(f"--classes {a.classes}: expected class indices 0..{len(cm) - 1}; not classes: {bad}")
    dit, _ = load_dit("zoo"); vae, _ = load_vae("zoo")
    teacher, _ = load_teacher("zoo", cm, 32)
    test = test if test.images is not None else test.load(32)

    def teacher_out(images_u8):
        from ddrepro.data import to_float01
        with torch.no_grad():
            x = to_float01(images_u8) if images_u8.dtype == torch.uint8 else images_u8
            f = teacher.features(x)                          # the zoo teacher's penultimate features
            return f, teacher.fc(f)

    ref = {}
    for c in classes:
        f, _ = teacher_out(test.images[test.labels == c])
        ref[c] = (f.double(), median_bandwidth(f))
    t0 = time.perf_counter()
    latents = {}
    for r in sorted({r for _, r in points}):
        sub = random_real_subset(train, r, a.seed)
        sub = sub if sub.images is not None else sub.load(32)
        latents[r] = class_latents(vae, sub, seed=a.seed)
    encode_s = time.perf_counter() - t0
    long = []

    def measure(kind, it, rpc, cfg):
        for c in classes:
            t = time.perf_counter()
            res = nopt_sample(dit, vae, c, a.ipc, seed=a.seed, config=cfg, real_latents=None if rpc is None else latents[rpc][c])
            sec = time.perf_counter() - t
            f, logits = teacher_out(res.images)
            long.append(dict(kind=kind, iters=it, real_per_class=rpc, label=c, images=a.ipc, seconds=sec,
                             **set_quality(f, logits, c, ref[c][0], ref[c][1])))
        print(f"{kind:5s} iters={it} real_per_class={rpc}: {sum(r['seconds'] for r in long[-len(classes):]) / (a.ipc * len(classes)):.2f} s/image", flush=True)

    base = dict(num_steps=a.steps, cfg_scale=a.cfg_scale)
    measure("dit", 0, None, NOptConfig(mode="da", iters=0, init="randn", **base))
    measure("lhs", 0, None, NOptConfig(mode="da", iters=0, init="lhs", **base))
    for it, rpc in points:
        measure("nopt", it, rpc, NOptConfig(mode="da", iters=it, **base))
    real_sub = random_real_subset(train, a.ipc, a.seed)
    real_sub = real_sub if real_sub.images is not None else real_sub.load(32)
    for c in classes:
        f, logits = teacher_out(real_sub.images[real_sub.labels == c])
        long.append(dict(kind="real", iters=0, real_per_class=None, label=c, images=a.ipc, seconds=0.0,
                         **set_quality(f, logits, c, ref[c][0], ref[c][1])))
    long = pd.DataFrame(long)
    curve = summarise(long)
    choice = choose_preset(curve, a.frac)
    from ddrepro.reports import df_to_markdown
    show = curve.copy()
    for k in ("mmd2", "d_mmd2", "d_mmd2_se"): show[k] = show[k].map(lambda v: f"{v:+.4f}" if k != "mmd2" else f"{v:.4f}")
    for k in ("teacher_acc", "d_teacher_acc", "d_teacher_acc_se", "spread"): show[k] = show[k].round(3)
    show["s_per_image"] = show.s_per_image.round(3)
    show["real_per_class"] = show.real_per_class.astype("Int64")
    md = (f"### DsCo embedded preset: NOpt quality vs time (IPC {a.ipc}, classes {classes}, {a.steps} steps, CFG {a.cfg_scale:g})\n\n"
          + df_to_markdown(show) + f"\n\nkind: dit = DiT† (randn z_T, no optimisation), lhs = LHS z_T without optimisation, nopt = "
          f"DsCo NOpt (data-accessible), real = {a.ipc} random real images per class. Quality in the zoo teacher's features against "
          f"the held-out test images of each class (1,000 per class); Δ paired per class against DiT†, ± SE over {len(classes)} classes. "
          f"Encoding the real latents (preparation): {encode_s:.1f} s. One synthesis seed ({a.seed}), torch threads {a.threads}.\n\n"
          + (f"**Chosen** (cheapest point reaching {a.frac:g} of the largest Δ MMD² {choice['best_d_mmd2']:+.4f}): iters = "
             f"{choice['iters']}, real_per_class = {choice['real_per_class']} ({choice['s_per_image']:.2f} s/image, Δ MMD² "
             f"{choice['d_mmd2']:+.4f}).\n" if choice else "**No NOpt point reduces MMD² from DiT† on this curve**: no preset can be read off it.\n"))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "curve.csv") as f: curve.to_csv(f, index=False)
    with atomic_write(out / "curve_long.csv") as f: long.to_csv(f, index=False)
    with atomic_write(out / "curve.md") as f: f.write(md)
    fig = plot_curve(curve, choice)
    tmp = out / "curve.tmp.png"; fig.savefig(tmp, dpi=130); tmp.replace(out / "curve.png")
    rec.results["choice"] = choice
    rec.finish(encode_s=round(encode_s, 2), points=len(curve))
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        publish_figures({out / "curve.csv": "dsco_embedded_preset_curve.csv", out / "curve.md": "dsco_embedded_preset_curve.md",
                         out / "curve.png": "dsco_embedded_preset_curve.png", out / "curve_long.csv": "dsco_embedded_preset_curve_long.csv",
                         rec.path: "dsco_embedded_preset_curve_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return curve, choice


if __name__ == "__main__":
    main()
