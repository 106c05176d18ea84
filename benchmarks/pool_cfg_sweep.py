"""Which classifier-free guidance scale gives the embedded SAS pool work for a selector? (SAS: Semantic-aware Sampling
for Generative Dataset Distillation, arXiv:2605.18012; the embedded default of `nbs/run_sas.ipynb`.)

    .venv/bin/python benchmarks/pool_cfg_sweep.py [--cfgs 1,1.5,2,4] [--ipcs 10,50] [--pool-factor 4]
                                                  [--train-ipc 10] [--repeats 5] [--draws 3] [--figures]

For each CFG scale the embedded Minimax pool (the zoo DiT fine-tuned with Minimax, 50 DDPM steps, pool_factor ×
max(IPC) images per class, shared under runs/pools/ with run_sas) is built or reused, then measured with the zoo
image-text encoder and the zoo teacher (ResNet-18):

* the pool (`sas.pool_report`): teacher accuracy, fraction of negative margins (Eq. 8), within-class margin sd,
  within-class angular spread — beside as many real training images per class;
* SAS's selection at each IPC (the first pool_factor × IPC pool images per class, p = 0.5) against 20 random draws
  of the same size (`selection.selection_diagnostics`): z of teacher accuracy and of spread;
* after training (`--train-ipc`, default 10; 0 skips): SAS and `--draws` random-from-pool draws (selection seeds
  0, 1, …) with the embedded hard-label evaluator, `--repeats` training seeds, SAS − random paired over seeds ± SE.

Choice rule, fixed before the measurement: the embedded default is the scale whose SAS selection raises teacher
accuracy furthest above chance — the largest mean z(teacher accuracy) over the IPCs — among the scales whose pool
the teacher still labels ≥ 80 % correct (below that the pool is mostly not the class it is labelled). The trained
comparison is reported beside it, not used to choose.

Writes runs/bench/pool_cfg_sweep/{sweep.csv, sweep.md, sweep.png, record.json}; the record carries the git
commit and dirty flag. `--figures` copies the table, plot and record to figures/sas_embedded_pool_sweep* and refuses
unless the commit is clean. `--smoke`: a tiny version (2 scales, IPC 2, 5 sampler steps, 2 epochs).
"""
import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

MIN_TEACHER_ACC = 0.80


def measure(cfg_scale: float, a, train, enc, teacher, cm) -> list[dict]:
    "Rows of one CFG scale: the pool, real images of the same size, SAS's selection per IPC (and after training)."
    from ddrepro.evaluate import evaluate_sets, paired_rows, random_real_subset
    from ddrepro.pools import PoolConfig, build_pool, pool_image_set
    from ddrepro.sas import pool_baselines, pool_report, select
    from ddrepro.selection import embed_images, embed_pool, selection_diagnostics
    from ddrepro.students import correct_predictions
    per_class = a.pool_factor * max(a.ipcs)
    pcfg = PoolConfig(dataset="fashion_mnist", ipc=max(a.ipcs), pool_factor=a.pool_factor, generator="minimax",
                      cfg_scale=cfg_scale, num_steps=a.steps, seed=0, threads=0,
                      **({"minimax_steps": 20, "minimax_per_class": 20} if a.smoke else {}))
    build_pool(pcfg)
    pool = pool_image_set(pcfg.out_dir, cm, per_class).load()
    emb = embed_pool(pool, enc, template="A photo of a {}", cache_dir=pcfg.out_dir, encoder_id="zoo")
    correct = correct_predictions(teacher, pool, device="cpu")
    rows = [dict(cfg_scale=cfg_scale, set="pool", ipc=None, **pool_report(emb.image_emb, emb.text_emb, emb.labels, correct))]
    real = random_real_subset(train, per_class, 0)
    real_emb = embed_images(enc, real.images, device="cpu", desc="embed real")
    rows.append(dict(cfg_scale=cfg_scale, set="real", ipc=None,
                     **pool_report(real_emb, emb.text_emb, real.labels.numpy(), correct_predictions(teacher, real, device="cpu"))))
    for ipc in a.ipcs:
        keep = np.concatenate([np.nonzero(emb.labels == c)[0][: a.pool_factor * ipc] for c in range(len(cm))])
        keep.sort()
        V, y, ok = emb.image_emb[keep], emb.labels[keep], correct[keep]
        sel = select("sas", V, emb.text_emb, y, ipc, keep_ratio=0.5)
        d = selection_diagnostics(sel.indices, V, y, ok, draws=20, seed=0)
        row = dict(cfg_scale=cfg_scale, set="SAS selection", ipc=ipc, n=d["selection"]["n"],
                   teacher_acc=d["selection"]["teacher_acc"], spread=d["selection"]["spread"],
                   random_teacher_acc=d["random"]["teacher_acc_mean"], random_teacher_acc_sd=d["random"]["teacher_acc_sd"],
                   random_spread=d["random"]["spread_mean"], random_spread_sd=d["random"]["spread_sd"],
                   z_teacher_acc=d["z_teacher_acc"], z_spread=d["z_spread"])
        if ipc == a.train_ipc:
            sub = pool.subset(keep)
            sets = {("minimax", "sas"): sub.subset(sel.indices)}
            for (code, draw), b in pool_baselines(["random_pool"], "sas", V, y, ipc, 0, a.draws).items():
                sets[("minimax", code, draw)] = sub.subset(b.indices)
            out = a.out_dir / f"eval_cfg{cfg_scale:g}_ipc{ipc}"
            res = paired_rows(evaluate_sets(sets, a.test, ["convnet"], repeats=a.repeats, out_dir=out, device="cpu",
                                            workers=a.workers, **({"epochs": 2} if a.smoke else {})), ("minimax", "A"))
            own = next(r for r in res if r["selector"] == "sas")
            rnd = [r["acc_final_mean"] for r in res if r["selector"] == "A"]
            row.update(trained_sas=own["acc_final_mean"], trained_random=float(np.mean(rnd)), trained_delta=own["delta_mean"],
                       trained_delta_se=own["delta_se"], trained_runs=own["n_runs"], settings=own["settings"])
        rows.append(row)
    return rows


def project_dir() -> Path:
    from ddrepro.core import project_root
    return project_root() / "runs" / "bench" / "pool_cfg_sweep"


def choose(df: pd.DataFrame) -> float | None:
    "The rule of the module docstring (`sas.choose_pool_cfg`, the one implementation the notebook also checks)."
    from ddrepro.sas import choose_pool_cfg
    return choose_pool_cfg(df, MIN_TEACHER_ACC)


def markdown(df: pd.DataFrame, chosen: float | None, settings: str) -> str:
    "The sweep as two readable tables and the choice."
    pool = df[df["set"].isin(["pool", "real"])]
    lines = ["### Embedded SAS pool: guidance scale sweep (Minimax-fine-tuned zoo DiT, Fashion-MNIST)", "",
             "| CFG scale | set | images | teacher accuracy | negative margins | margin sd (rad) | within-class spread (rad) |",
             "|---|---|---|---|---|---|---|"]
    for r in pool.itertuples():
        lines.append(f"| {r.cfg_scale:g} | {'pool' if r.set == 'pool' else 'real images (same count)'} | {int(r.n)} | "
                     f"{r.teacher_acc:.3f} | {r.negative_margin:.3f} | {r.margin_sd:.4f} | {r.spread:.3f} |")
    sel = df[df["set"] == "SAS selection"]
    lines += ["", "| CFG scale | IPC | SAS teacher acc | random draws (20) | z | SAS spread | random draws | z | "
                  "trained: SAS − random from pool (paired, points) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sel.itertuples():
        tr = getattr(r, "trained_delta", float("nan"))
        trained = (f"{100 * tr:+.1f} ± {100 * r.trained_delta_se:.1f} ({100 * r.trained_sas:.1f} vs {100 * r.trained_random:.1f}, "
                   f"{int(r.trained_runs)} runs)") if tr == tr else "not trained"
        lines.append(f"| {r.cfg_scale:g} | {int(r.ipc)} | {r.teacher_acc:.3f} | {r.random_teacher_acc:.3f} ± {r.random_teacher_acc_sd:.3f} | "
                     f"{r.z_teacher_acc:+.1f} | {r.spread:.3f} | {r.random_spread:.3f} ± {r.random_spread_sd:.3f} | {r.z_spread:+.1f} | {trained} |")
    lines += ["", f"Chosen by the rule (largest mean z of teacher accuracy among pools the teacher labels ≥ "
                  f"{MIN_TEACHER_ACC:.0%} correct): CFG {chosen:g}." if chosen is not None else "No scale passes the rule."]
    if settings: lines += ["", f"Trained with the evaluator {settings}; random from pool = the mean of its draws, "
                               "Δ paired over training seeds, SE over the draws' mean differences."]
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, path: Path, chosen: float | None) -> None:
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pool, real = df[df["set"] == "pool"], df[df["set"] == "real"]
    sel = df[df["set"] == "SAS selection"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
    for ax, col, lab in ((axes[0], "teacher_acc", "teacher accuracy"), (axes[1], "negative_margin", "fraction of negative margins"),
                         (axes[2], "spread", "within-class spread (rad)")):
        ax.plot(pool["cfg_scale"], pool[col], "o-", label="pool")
        ax.axhline(float(real[col].mean()), color="grey", ls="--", label="real images")
        ax.set_xlabel("CFG scale"); ax.set_ylabel(lab); ax.legend(fontsize=7)
    for ipc, g in sel.groupby("ipc"):
        axes[3].plot(g["cfg_scale"], g["z_teacher_acc"], "o-", label=f"z teacher acc, IPC {ipc}")
        axes[3].plot(g["cfg_scale"], g["z_spread"], "s--", label=f"z spread, IPC {ipc}")
    axes[3].axhline(0, color="grey", lw=0.8); axes[3].set_xlabel("CFG scale"); axes[3].set_ylabel("SAS vs 20 random draws (z)")
    axes[3].legend(fontsize=6)
    for ax in axes:
        if chosen is not None: ax.axvline(chosen, color="green", alpha=0.25, lw=6)
    fig.suptitle("Embedded SAS pool vs guidance scale: pool measurements and SAS's selection against random draws"
                 + (f" (shaded: CFG {chosen:g}, chosen by the stated rule)" if chosen is not None else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120); plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfgs", default="1,1.5,2,4"); ap.add_argument("--ipcs", default="10,50")
    ap.add_argument("--pool-factor", type=int, default=4); ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-ipc", type=int, default=10); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--draws", type=int, default=3); ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true"); ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    a.cfgs = [float(x) for x in a.cfgs.split(",")]; a.ipcs = [int(x) for x in a.ipcs.split(",")]
    if a.smoke: a.cfgs, a.ipcs, a.steps, a.train_ipc, a.repeats, a.draws = a.cfgs[:2], [2], 5, 2, 2, 2
    if a.train_ipc and a.train_ipc not in a.ipcs: raise SystemExit(f"--train-ipc {a.train_ipc} must be one of --ipcs {a.ipcs}")
    import torch
    from ddrepro.core import RunRecord, atomic_write
    from ddrepro.data import load_real
    from ddrepro.backbones import load_image_text_encoder, load_teacher
    torch.set_num_threads(2)
    out = a.out_dir = Path(a.out) if a.out else project_dir()
    rec = RunRecord.start(out, {k: v for k, v in vars(a).items()}, kind="bench")
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "val")
    a.test = test if not a.smoke else test.subset(np.arange(0, 10000, 50))
    cm = train.class_map
    enc = load_image_text_encoder("zoo", device="cpu")
    teacher, _ = load_teacher("zoo", cm, 32, None, "cpu")
    rows = []
    for c in a.cfgs:
        with rec.stage(f"cfg{c:g}"):
            rows += measure(c, a, train, enc, teacher, cm)
    df = pd.DataFrame(rows)
    chosen = choose(df)
    settings = next((s for s in df.get("settings", pd.Series(dtype=str)).dropna()), "")
    with atomic_write(out / "sweep.csv") as f: df.drop(columns=["settings"], errors="ignore").to_csv(f, index=False)
    md = markdown(df, chosen, settings)
    with atomic_write(out / "sweep.md") as f: f.write(md)
    plot(df, out / "sweep.png", chosen)
    rec.finish(chosen_cfg_scale=chosen, rows=rows)
    print(md)
    if a.figures:                                      # the record goes too: the gallery reads its commit
        from ddrepro.reports import publish_figures
        publish_figures({out / "sweep.csv": "sas_embedded_pool_sweep.csv", out / "sweep.md": "sas_embedded_pool_sweep.md",
                         out / "sweep.png": "sas_embedded_pool_sweep.png", rec.path: "sas_embedded_pool_sweep_record.json"},
                        [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df, chosen


if __name__ == "__main__":
    main()
