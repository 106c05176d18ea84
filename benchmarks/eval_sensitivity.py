"""Sensitivity of candidate evaluation presets on a fixed panel of Fashion-MNIST sets (issue: an embedded evaluation
that can see differences). One command builds the panel (cached under runs/study/), evaluates every set with every
candidate preset under each protocol, and writes a long CSV, a summary table and a plot:

    .venv/bin/python benchmarks/eval_sensitivity.py [--ipcs 1,10,50] [--protocols hard,soft] [--presets rrc,dsa]
                                                     [--repeats 3] [--workers 2] [--reference paper300] [--sets ...]

The panel, per IPC: random real subsets (seeds 0 and 1), the seed-0 subset with shuffled labels, the first IPC
images per class of zoo DiT pools at CFG 1, 1.5 and 4, of the demo's Minimax pool, and a deliberately bad set (the
IPC real training images per class the zoo teacher is least confident about).

Per (IPC, protocol, preset) the summary reports: random-real accuracy; the gap random real − generated pools (mean
over the DiT and Minimax pools) in points, in run-sd units and as a fraction of the reference's gap; Spearman rank
agreement with the reference over the sets the reference separates beyond its own noise; seconds per evaluation
(one torch thread); and the selection criteria (a) gap ≥ ⅔ of the reference's and ≥ 3 run sd, (b) Spearman ≥ 0.9,
(c) ≤ 120 s per evaluation at IPC 50. `sensitivity_random_real.csv` checks that random real improves with IPC.

Presets (PRESETS below) are spelled out in full, so a study name keeps its meaning when the `embedded` defaults
change. The references are our evaluator's `paper` preset with the ConvNet student (width 128, full epochs, tested
once at the end) and `paper300`, the same capped at 300 epochs: identical under the soft protocol, 6.7× cheaper
under the hard one, whose 2,000 epochs at IPC 10 take ~25 min per evaluation on one CPU thread (run `--presets
paper` on a GPU; records are cached and merged).

Every evaluation is an `evaluate_set` run with its own record under `runs/study/eval/ipc<IPC>_<protocol>_<preset>/`;
an interrupted study resumes, and the tables are rebuilt from all records found there, so separate invocations add
up (each row carries the git commit and dirty flag of its record). `--smoke` runs a tiny version (IPC 2, 2 epochs).
"""
import argparse
import json
import math
import re
import time
from pathlib import Path

import pandas as pd
import torch

from ddrepro.core import atomic_write, derive_seed, project_root
from ddrepro.data import ImageSet, class_map, load_real
from ddrepro.evaluate import eval_config, evaluate_sets, random_real_subset
from ddrepro.pools import DiTGenerator, PoolConfig, build_pool, make_pool, pool_image_set
from ddrepro.backbones import load_dit, load_teacher, load_vae
from ddrepro.students import predict_logits

# Candidate presets, spelled out in full on top of eval_config(protocol, base, ...) so that a later change of the
# `embedded` defaults does not change what a study name means. `epochs_factor` multiplies the embedded preset's
# epochs; `epochs_cap` caps the base preset's epochs; `final_only` tests the student once, after the last epoch
# (the study reads final accuracy only, and testing does not touch the training RNG).
PRESETS = {
    "rrc": dict(augment="rrc", cutmix_p=1.0),                           # the first embedded preset: RRC/jitter/lighting + CutMix
    "rrc_w64x2": dict(augment="rrc", cutmix_p=1.0, width=64, epochs_factor=2),
    "dsa": dict(augment="dsa", cutmix_p=0.0),                           # DSA (Zhao & Bilen 2021) instead, no CutMix
    "dsa_x2": dict(augment="dsa", cutmix_p=0.0, epochs_factor=2),
    "dsa_w64": dict(augment="dsa", cutmix_p=0.0, width=64),
    "dsa_bs32": dict(augment="dsa", cutmix_p=0.0, batch_size=32),
    # references: our evaluator's paper preset with the ConvNet student (full width 128) ...
    "paper": dict(base="paper", final_only=True),
    # ... and the same capped at 300 epochs (equal to `paper` under the soft protocol; the hard protocol's
    # 1500–3000 epochs at width 128 take 0.5–1.5 h per evaluation on one CPU thread)
    "paper300": dict(base="paper", epochs_cap=300, final_only=True),
}
CFG_SCALES = (1.0, 1.5, 4.0)
POOL_SETS = ("DiT pool", "Minimax pool")          # the generated sets: the real-vs-generated gap is over these


def study_root() -> Path:
    return project_root() / "runs" / "study"


def dit_pool_set(cfg_scale: float, per_class: int, seed: int = 0, num_steps: int = 50, pool_per_class: int = 50) -> ImageSet:
    """The first `per_class` images per class of a zoo DiT pool at `cfg_scale` (DDPM, as the pools of run_pool) of
    `pool_per_class` (or more) images per class, so the sets of every IPC come from the same pool."""
    cm = class_map("fashion_mnist")
    out = study_root() / "pools" / f"dit_cfg{cfg_scale:g}_steps{num_steps}_seed{seed}"
    dit, a_dit = load_dit("zoo"); vae, a_vae = load_vae("zoo")
    gen = DiTGenerator(dit, vae, num_steps=num_steps, cfg_scale=cfg_scale, sampler="ddpm", name="dit",
                       assets={"dit": a_dit.as_dict(), "vae": a_vae.as_dict()})
    make_pool(gen, cm, max(per_class, pool_per_class), seed, out, batch_size=100, device="cpu")
    return pool_image_set(out, cm, per_class)


def least_confident_real(train: ImageSet, ipc: int) -> ImageSet:
    "Per class, the `ipc` training images the zoo teacher gives the lowest probability of their true class."
    teacher, _ = load_teacher("zoo", train.class_map)
    p = predict_logits(teacher, train.images, 1000, "cpu").softmax(1)[torch.arange(len(train)), train.labels]
    idx = torch.cat([torch.nonzero(train.labels == c)[:, 0][p[train.labels == c].argsort()[:ipc]] for c in range(len(train.class_map))])
    s = train.subset(idx)
    s.source = dict(s.source, kind="least_confident_real", ipc=ipc)
    return s


def panel(ipc: int, train: ImageSet, smoke: bool = False) -> dict:
    "{set name: ImageSet} of the study panel at `ipc` (all loaded in memory, 3×32×32 uint8)."
    sets = {"random real s0": random_real_subset(train, ipc, 0), "random real s1": random_real_subset(train, ipc, 1)}
    s0 = sets["random real s0"]
    g = torch.Generator().manual_seed(derive_seed(0, "study", "shuffle", ipc))
    sets["shuffled labels"] = ImageSet(s0.class_map, s0.labels[torch.randperm(len(s0), generator=g)], s0.images,
                                       source=dict(s0.source, kind="shuffled_labels"))
    for c in (CFG_SCALES[-1:] if smoke else CFG_SCALES):
        sets[f"DiT pool CFG {c:g}"] = dit_pool_set(c, ipc, num_steps=5 if smoke else 50, pool_per_class=ipc if smoke else 50)
    if not smoke:
        pc = PoolConfig(generator="minimax", ipc=50, pool_factor=1, threads=0)     # the demo's shared Minimax pool
        build_pool(pc)
        sets["Minimax pool"] = pool_image_set(pc.out_dir, train.class_map, ipc)
    sets["least confident real"] = least_confident_real(train, ipc)
    return {k: (v if v.images is not None else v.load(32)) for k, v in sets.items()}


def overrides_for(preset: str, protocol: str, ipc: int) -> tuple[str, dict]:
    "(base preset, EvalConfig overrides) of a study preset at `protocol` and `ipc`."
    if preset not in PRESETS: raise SystemExit(f"preset {preset!r}: expected one of {sorted(PRESETS)}")
    o = dict(PRESETS[preset])
    base = o.pop("base", "embedded")
    f, cap, final_only = o.pop("epochs_factor", None), o.pop("epochs_cap", None), o.pop("final_only", False)
    e = eval_config(protocol, base, "fashion_mnist", ipc, student="convnet").epochs
    if f: e = e * f
    if cap: e = min(e, cap)
    if f or cap: o["epochs"] = e
    if final_only: o["eval_every"] = e
    return base, o


def set_stats(long: pd.DataFrame) -> pd.DataFrame:
    "Per (ipc, protocol, preset, set): final accuracy mean, sd and count over training seeds, and mean seconds."
    g = long.groupby(["ipc", "protocol", "preset", "set"])
    return g["final"].agg(["mean", "std", "count"]).reset_index().merge(g["seconds"].mean().reset_index(),
                                                                       on=["ipc", "protocol", "preset", "set"])


def separated_sets(d: pd.DataFrame) -> list[str]:
    """The sets a preset separates beyond its own noise: those whose mean differs from every other set's mean by more
    than twice the standard error of a difference (√(sd_a²/n_a + sd_b²/n_b))."""
    d = d.set_index("set")
    se2 = (d["std"] ** 2 / d["count"]).fillna(0)
    return [a for a in d.index if all(abs(d.at[a, "mean"] - d.at[b, "mean"]) > 2 * math.sqrt(se2[a] + se2[b])
                                      for b in d.index if b != a)]


def spearman(a: pd.Series, b: pd.Series) -> float:
    "Spearman rank correlation of two aligned series (Pearson on average ranks)."
    return float(a.rank().corr(b.rank())) if len(a) >= 3 else float("nan")


def summarise(long: pd.DataFrame, reference: str | None, max_seconds: float = 120.0) -> pd.DataFrame:
    """Per (ipc, protocol, preset): the mean gap random real − generated pools (random real = mean of its seeds'
    subsets), the mean run sd over all sets, the gap in run-sd units, the gap as a fraction of the reference's gap,
    Spearman vs the reference over the sets the reference separates, seconds per evaluation, and the criteria
    (a) gap ≥ ⅔ reference gap and ≥ 3 run sd, (b) Spearman ≥ 0.9, (c) seconds per evaluation ≤ `max_seconds`."""
    s = set_stats(long)
    rows = []
    for (ipc, prot, pre), d in s.groupby(["ipc", "protocol", "preset"]):
        di = d.set_index("set")
        real = di[di.index.str.startswith("random real")]["mean"].mean()
        synth = di[di.index.str.startswith(POOL_SETS)]["mean"]
        sd = float(d["std"].mean())
        gap = float(real - synth.mean()) if len(synth) else float("nan")
        ref = s[(s.ipc == ipc) & (s.protocol == prot) & (s.preset == reference)].set_index("set") if reference else None
        ref_gap = rho = float("nan"); n_sep = 0
        if ref is not None and len(ref) and pre != reference:
            rg = ref[ref.index.str.startswith("random real")]["mean"].mean() - ref[ref.index.str.startswith(POOL_SETS)]["mean"].mean()
            ref_gap = float(rg)
            sep = [x for x in separated_sets(ref.reset_index()) if x in di.index]
            n_sep = len(sep)
            rho = spearman(di.loc[sep, "mean"], ref.loc[sep, "mean"])
        secs = float(d["seconds"].mean())
        rel = gap / ref_gap if ref_gap == ref_gap and ref_gap > 0 else float("nan")
        rows.append(dict(ipc=ipc, protocol=prot, preset=pre, random_real=100 * real, mean_gap_points=100 * gap,
                         run_sd_points=100 * sd, gap_in_sd=gap / sd if sd > 0 else float("nan"),
                         reference_gap_points=100 * ref_gap, gap_vs_reference=rel, spearman_vs_reference=rho,
                         sets_reference_separates=n_sep, seconds_per_eval=secs, sets=len(d),
                         a_gap=bool(rel >= 2 / 3 and gap / sd >= 3) if rel == rel else None,
                         b_rank=bool(rho >= 0.9) if rho == rho else None,
                         c_time=bool(secs <= max_seconds) if ipc == 50 else None))
    return pd.DataFrame(rows)


def random_real_order(long: pd.DataFrame) -> pd.DataFrame:
    "Random-real accuracy per (protocol, preset) and IPC, and whether it increases with IPC (IPC 1 < 10 < 50)."
    s = set_stats(long)
    s = s[s["set"].str.startswith("random real")].groupby(["protocol", "preset", "ipc"])["mean"].mean().unstack("ipc") * 100
    s["increasing"] = [bool((r.dropna().diff().dropna() > 0).all()) for _, r in s.iterrows()]
    return s.reset_index()


def plot(long: pd.DataFrame, path: Path, repeats: int) -> None:
    "Accuracy per set for each preset (mean ± sd over runs), one panel per IPC × protocol, references included."
    import seaborn as sns
    known = ["random real s0", "random real s1", *(f"DiT pool CFG {c:g}" for c in CFG_SCALES), "Minimax pool",
             "least confident real", "shuffled labels"]
    order = [x for x in known if x in set(long["set"])] + sorted(set(long["set"]) - set(known))
    n_presets = long["preset"].nunique()
    g = sns.catplot(data=long.assign(accuracy=100 * long["final"]), x="set", y="accuracy", hue="preset", order=order,
                    col="ipc", row="protocol", kind="point", errorbar="sd", dodge=0.5 if n_presets > 1 else False, linestyle="none",
                    height=3.2, aspect=1.9, sharey=False)
    for ax in g.axes.flat:
        ax.tick_params(axis="x", labelrotation=35, labelbottom=True)
    g.set_axis_labels("", "final top-1 accuracy (%)")
    g.figure.subplots_adjust(hspace=0.75)             # room for the rotated set names under the top row
    g.figure.suptitle(f"Fashion-MNIST panel: final accuracy per set and evaluation preset (mean ± sd, ≤ {repeats} training seeds)", y=1.02)
    g.figure.savefig(path, dpi=110, bbox_inches="tight")


def write_csv(df: pd.DataFrame, path: Path) -> None:
    "Write `df` to `path` atomically (temp file + rename)."
    with atomic_write(path) as f: df.to_csv(f, index=False)


def collect(eval_dir: Path) -> pd.DataFrame:
    """The long table (ipc, protocol, preset, set, seed, final, seconds, git_sha, git_dirty) of every finished
    evaluation record under `eval_dir/ipc<IPC>_<protocol>_<preset>/<set>_convnet/`, so that separate invocations
    (other presets, IPCs or protocols) add up to one study."""
    rows = []
    for rec in sorted(eval_dir.glob("ipc*_*_*/*/record.json")):
        m = re.fullmatch(r"ipc(\d+)_(hard|soft)_(.+)", rec.parent.parent.name)
        r = json.loads(rec.read_text())
        if not m or r.get("status") != "complete": continue
        res = r["results"]
        for seed, final in zip(res["seeds"], res["finals"]):
            rows.append(dict(ipc=int(m[1]), protocol=m[2], preset=m[3], set=r["params"]["name"].removesuffix("_convnet"),
                             seed=seed, final=final, seconds=res["run_s"], git_sha=r["git"].get("sha"),
                             git_dirty=r["git"].get("dirty")))
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipcs", default="10,50"); ap.add_argument("--protocols", default="hard,soft")
    ap.add_argument("--presets", default="rrc,dsa"); ap.add_argument("--reference", default="paper300")
    ap.add_argument("--repeats", type=int, default=3); ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sets", default=None, help="comma list: only these panel sets (default: all)")
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--out", default=None)
    ap.add_argument("--tables-only", action="store_true", help="evaluate nothing: rebuild the tables from the records")
    ap.add_argument("--figures", action="store_true",
                    help="also copy the tables and plot to figures/eval_sensitivity_* (refused unless every record "
                         "comes from one clean commit)")
    a = ap.parse_args(argv)
    presets = a.presets.split(",")
    unknown = [p for p in presets + [a.reference] if p not in PRESETS]
    if unknown: raise SystemExit(f"--presets/--reference {unknown}: expected some of {sorted(PRESETS)}")
    protocols = a.protocols.split(",")
    if set(protocols) - {"hard", "soft"}: raise SystemExit(f"--protocols {a.protocols!r}: expected hard and/or soft")
    ipcs = [] if a.tables_only else [2] if a.smoke else [int(x) for x in a.ipcs.split(",")]
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    out = Path(a.out) if a.out else study_root()
    for ipc in ipcs:
        sets = panel(ipc, train, a.smoke)
        if a.sets:
            want = a.sets.split(",")
            if set(want) - set(sets): raise SystemExit(f"--sets {sorted(set(want) - set(sets))}: the panel has {list(sets)}")
            sets = {k: v for k, v in sets.items() if k in want}
        for protocol in protocols:
            for preset in presets:
                base, o = overrides_for(preset, protocol, ipc)
                if a.smoke: o = dict(o, epochs=2, eval_every=1)
                t0 = time.perf_counter()
                evaluate_sets(sets, test, ["convnet"], protocol=protocol, preset=base, repeats=a.repeats, seed=0,
                              teacher="zoo" if protocol == "soft" else None,
                              out_dir=out / "eval" / f"ipc{ipc}_{protocol}_{preset}", device="cpu", workers=a.workers, **o)
                print(f"IPC {ipc} {protocol} {preset}: {len(sets)} sets in {time.perf_counter() - t0:.0f} s", flush=True)
    long = collect(out / "eval")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(long, out / "sensitivity_long.csv")
    summary = summarise(long, a.reference)
    write_csv(summary, out / "sensitivity_summary.csv")
    order = random_real_order(long)
    write_csv(order, out / "sensitivity_random_real.csv")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(summary.round(3).to_string(index=False)); print(order.round(1).to_string(index=False))
    plot(long, out / "sensitivity.png", int(long.groupby(["ipc", "protocol", "preset", "set"]).size().max()))
    if a.figures: publish(out, project_root() / "figures", long)
    return long, summary


def publish(out: Path, figures: Path, long: pd.DataFrame) -> list[Path]:
    "Copy the study's tables and plot to `figures/eval_sensitivity_*`, only when all its records share one clean commit."
    from ddrepro.reports import publish_figures
    names = ("sensitivity_long.csv", "sensitivity_summary.csv", "sensitivity_random_real.csv", "sensitivity.png")
    return publish_figures({out / n: f"eval_{n}" for n in names}, long[["git_sha", "git_dirty"]].itertuples(index=False), figures)

if __name__ == "__main__":
    main()
