"""Sensitivity of candidate evaluation presets on a fixed panel of Fashion-MNIST sets (issue: an embedded evaluation
that can see differences). One command builds the panel (cached under runs/study/), evaluates every set with every
candidate preset under each protocol, and writes a long CSV, a summary table and a plot:

    .venv/bin/python benchmarks/eval_sensitivity.py [--ipcs 10,50] [--protocols hard,soft] [--presets embedded,w64x2,dsa]
                                                     [--repeats 3] [--workers 2] [--reference paper]

The panel, per IPC: random real subsets (seeds 0 and 1), the seed-0 subset with shuffled labels, the first IPC
images per class of zoo DiT pools at CFG 1, 1.5 and 4, of the demo's Minimax pool, and a deliberately bad set (the
IPC real training images per class the zoo teacher is least confident about). Per set and preset it reports the
final accuracy mean ± sd over training seeds, the gap to random real (seed 0) in units of the run sd, the Spearman
rank agreement with the reference preset over the sets, and seconds per evaluation. Candidate presets are
EvalConfig overrides on top of the `embedded` preset (PRESETS below); the reference is our evaluator's `paper`
preset (full-width ConvNet, full epochs: hours on 2 CPU cores — run it with --presets paper once, it is cached).

Every evaluation is an `evaluate_set` run with its own record (runs/study/eval/…), so an interrupted study resumes.
`--smoke` runs a tiny version (IPC 2, one preset, 2 epochs) to check the script end to end.
"""
import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from ddrepro.core import derive_seed, project_root
from ddrepro.data import ImageSet, class_map, load_real
from ddrepro.evaluate import evaluate_sets, random_real_subset
from ddrepro.pools import DiTGenerator, PoolConfig, build_pool, make_pool, pool_image_set
from ddrepro.backbones import load_dit, load_teacher, load_vae
from ddrepro.students import predict_logits

# candidate presets: EvalConfig overrides on top of the `embedded` preset (None = the preset itself)
PRESETS = {
    "embedded": {},
    "w64": dict(width=64),
    "x2": dict(epochs_factor=2),
    "w64x2": dict(width=64, epochs_factor=2),
    "w128x3": dict(width=128, epochs_factor=3),
    "dsa": dict(augment="dsa", cutmix_p=0.0),
    "dsa_x2": dict(augment="dsa", cutmix_p=0.0, epochs_factor=2),
    "bs32": dict(batch_size=32),
}
CFG_SCALES = (1.0, 1.5, 4.0)


def study_root() -> Path:
    return project_root() / "runs" / "study"


def dit_pool_set(cfg_scale: float, per_class: int, seed: int = 0, num_steps: int = 50) -> ImageSet:
    "The first `per_class` images per class of a zoo DiT pool at `cfg_scale` (DDPM, as the pools of run_pool)."
    cm = class_map("fashion_mnist")
    out = study_root() / "pools" / f"dit_cfg{cfg_scale:g}_steps{num_steps}_seed{seed}"
    dit, a_dit = load_dit("zoo"); vae, a_vae = load_vae("zoo")
    gen = DiTGenerator(dit, vae, num_steps=num_steps, cfg_scale=cfg_scale, sampler="ddpm", name="dit",
                       assets={"dit": a_dit.as_dict(), "vae": a_vae.as_dict()})
    make_pool(gen, cm, per_class, seed, out, batch_size=100, device="cpu")
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
        sets[f"DiT pool CFG {c:g}"] = dit_pool_set(c, ipc, num_steps=5 if smoke else 50)
    if not smoke:
        pc = PoolConfig(generator="minimax", ipc=50, pool_factor=1, threads=0)     # the demo's shared Minimax pool
        build_pool(pc)
        sets["Minimax pool"] = pool_image_set(pc.out_dir, train.class_map, ipc)
    sets["least confident real"] = least_confident_real(train, ipc)
    return {k: (v if v.images is not None else v.load(32)) for k, v in sets.items()}


def overrides_for(preset: str, protocol: str, ipc: int) -> tuple[str, dict]:
    "(base preset, EvalConfig overrides) of a candidate; `epochs_factor` multiplies the embedded preset's epochs."
    if preset == "paper": return "paper", {}
    from ddrepro.evaluate import eval_config
    o = dict(PRESETS[preset])
    f = o.pop("epochs_factor", None)
    if f: o["epochs"] = eval_config(protocol, "embedded", "fashion_mnist", ipc).epochs * f
    return "embedded", o


def summarise(long: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Per (ipc, protocol, preset): the mean gap random real (seed 0) − generated pools, the mean run sd over all
    sets, the gap in run-sd units, Spearman vs the reference over all sets, seconds per evaluation."""
    g = long.groupby(["ipc", "protocol", "preset", "set"])
    s = g["final"].agg(["mean", "std", "count"]).reset_index().merge(g["seconds"].mean().reset_index(), on=["ipc", "protocol", "preset", "set"])
    rows = []
    for (ipc, prot, pre), d in s.groupby(["ipc", "protocol", "preset"]):
        real = d.set_index("set").loc["random real s0"]
        sd = float(d["std"].mean())
        synth = d[d["set"].str.contains("pool")]                 # the generated sets (DiT / Minimax pools)
        gap = float((real["mean"] - synth["mean"]).mean())
        ref = s[(s.ipc == ipc) & (s.protocol == prot) & (s.preset == reference)] if reference else None
        rho = float("nan")
        if ref is not None and len(ref) == len(d) and pre != reference:
            a, b = d.set_index("set")["mean"], ref.set_index("set")["mean"].reindex(d["set"])
            rho = float(pd.Series(a.values).rank().corr(pd.Series(b.values).rank()))
        rows.append(dict(ipc=ipc, protocol=prot, preset=pre, mean_gap_points=100 * gap, run_sd_points=100 * sd,
                         gap_in_sd=gap / sd if sd > 0 else float("nan"), spearman_vs_reference=rho,
                         seconds_per_eval=float(d["seconds"].mean()), sets=len(d)))
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipcs", default="10,50"); ap.add_argument("--protocols", default="hard,soft")
    ap.add_argument("--presets", default="embedded,w64x2,dsa"); ap.add_argument("--reference", default="paper")
    ap.add_argument("--repeats", type=int, default=3); ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--smoke", action="store_true"); ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    out = Path(a.out) if a.out else study_root()
    ipcs = [2] if a.smoke else [int(x) for x in a.ipcs.split(",")]
    presets = a.presets.split(",")
    unknown = [p for p in presets if p != "paper" and p not in PRESETS]
    if unknown: raise SystemExit(f"--presets {unknown}: expected some of {sorted(PRESETS)} or paper")
    long = []
    for ipc in ipcs:
        sets = panel(ipc, train, a.smoke)
        for protocol in a.protocols.split(","):
            for preset in presets:
                base, o = overrides_for(preset, protocol, ipc)
                if a.smoke: o = dict(o, epochs=2, eval_every=1)
                t0 = time.perf_counter()
                rows = evaluate_sets(sets, test, ["convnet"], protocol=protocol, preset=base, repeats=a.repeats,
                                     seed=0, teacher="zoo" if protocol == "soft" else None,
                                     out_dir=out / "eval" / f"ipc{ipc}_{protocol}_{preset}", device="cpu",
                                     workers=a.workers, **o)
                wall = time.perf_counter() - t0
                for r in rows:
                    run_s = json.loads(Path(r["record"]).read_text())["results"]["run_s"]   # per run, as recorded (also when resumed)
                    for seed, final in zip(r["seeds"], r["finals"]):
                        long.append(dict(ipc=ipc, protocol=protocol, preset=preset, set=r["method"], seed=seed,
                                         final=final, seconds=run_s))
                print(f"IPC {ipc} {protocol} {preset}: {len(rows)} sets in {wall:.0f} s", flush=True)
    long = pd.DataFrame(long)
    out.mkdir(parents=True, exist_ok=True)
    long.to_csv(out / "sensitivity_long.csv", index=False)
    summary = summarise(long, a.reference if a.reference in presets else None)
    summary.to_csv(out / "sensitivity_summary.csv", index=False)
    print(summary.to_string(index=False))
    try:
        import seaborn as sns
        g = sns.catplot(data=long.assign(accuracy=100 * long["final"]), x="set", y="accuracy", hue="preset",
                        col="ipc", row="protocol", kind="point", errorbar="sd", dodge=0.4 if len(presets) > 1 else False, linestyle="none",
                        height=3.2, aspect=1.8)
        for ax in g.axes.flat:
            ax.tick_params(axis="x", labelrotation=30, labelbottom=True)
        g.set_axis_labels("", "final top-1 accuracy (%)")
        g.figure.suptitle(f"Fashion-MNIST panel: accuracy per set and preset (mean ± sd over {a.repeats} training seeds)", y=1.02)
        g.figure.savefig(out / "sensitivity.png", dpi=120, bbox_inches="tight")
    except ImportError:
        print("seaborn not installed: no plot (pip install seaborn)")
    return long, summary


if __name__ == "__main__":
    main()
