"""SAS's overhead beside the generation it post-processes (SAS paper, arXiv:2605.18012, §4.8: scoring 18 s and
selection 5 s against 2,100 s to generate the 2,000-image pool, on the authors' GPU).

    .venv/bin/python benchmarks/sas_overhead.py [--per-class 200] [--ipc 50] [--cfg-scale 2] [--threads 2] [--figures]

Times, in one run on this machine, for one pool of `--per-class` images per class of the embedded Minimax generator
(the zoo DiT fine-tuned with Minimax, 50 DDPM steps; the cached fine-tune is loaded, not timed):

1. generation: the pool written from scratch into a temporary folder (`pools.make_pool`);
2. scoring: image and prompt embeddings with the zoo image-text encoder (no cache) and the scores of Eqs. 4–8;
3. selection: `sas.select('sas', …)` at `--ipc` (stage 1 + stage 2).

Prints each time beside the paper's and the ratios scoring / generation and selection / generation, the number
the paper's claim rests on (SAS costs ~1 % of generating the pool). Writes runs/bench/sas_overhead/{overhead.csv,
overhead.md, record.json}; `--figures` copies the table and record to figures/sas_embedded_overhead* from a clean commit only.
"""
import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

PAPER = dict(images=2000, generation_s=2100.0, scoring_s=18.0, selection_s=5.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=200); ap.add_argument("--ipc", type=int, default=50)
    ap.add_argument("--cfg-scale", type=float, default=2.0); ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--out", default=None)
    ap.add_argument("--figures", action="store_true"); ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke: a.per_class, a.ipc, a.steps = 4, 2, 2
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.core import RunRecord, atomic_write, project_root
    from ddrepro.data import class_map
    from ddrepro.backbones import load_image_text_encoder
    from ddrepro.pools import load_pool_generator, make_pool, pool_image_set
    from ddrepro.sas import s_div, s_margin, s_rel, s_sep, select
    from ddrepro.selection import embed_pool
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "sas_overhead"
    rec = RunRecord.start(out, vars(a), kind="bench")
    cm = class_map("fashion_mnist")
    gen = load_pool_generator("minimax", "fashion_mnist", num_steps=a.steps, cfg_scale=a.cfg_scale, device="cpu",
                              **({"minimax_steps": 20, "minimax_per_class": 20} if a.smoke else {}))
    enc = load_image_text_encoder("zoo", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_pool(gen, cm, a.per_class, 0, Path(tmp) / "pool", device="cpu")
        t_gen = time.perf_counter() - t0
        pool = pool_image_set(Path(tmp) / "pool", cm, a.per_class)
        t0 = time.perf_counter()
        emb = embed_pool(pool, enc, template="A photo of a {}", cache=False, encoder_id="zoo")
        for f in (s_rel, s_sep, s_margin):
            f(emb.image_emb, emb.text_emb, emb.labels)
        s_div(emb.image_emb, emb.labels)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        select("sas", emb.image_emb, emb.text_emb, emb.labels, a.ipc, keep_ratio=0.5)
        t_sel = time.perf_counter() - t0
    n = a.per_class * len(cm)
    ours = dict(images=n, generation_s=t_gen, scoring_s=t_score, selection_s=t_sel)
    rows = []
    for who, d in (("ours (this machine, CPU, embedded zoo models)", ours), ("paper §4.8 (authors' GPU, DiT-XL/2 + CLIP)", PAPER)):
        rows.append({"": who, "pool images": d["images"], "generation s": round(d["generation_s"], 3), "scoring s": round(d["scoring_s"], 3),
                     "selection s": round(d["selection_s"], 3), "scoring / generation": round(d["scoring_s"] / d["generation_s"], 4),
                     "selection / generation": round(d["selection_s"] / d["generation_s"], 5)})
    df = pd.DataFrame(rows)
    from ddrepro.reports import df_to_markdown
    md = ("### SAS §4.8 overhead (embedded): scoring and selection beside generating the same pool\n\n" + df_to_markdown(df.set_index("")) +
          f"\n\nOne run, torch threads {a.threads}; scoring = embedding {n} pool images and {len(cm)} prompts (no cache) + "
          f"Eqs. 4–8; selection = SAS at IPC {a.ipc}, p = 0.5; generation = {a.steps} DDPM steps, CFG {a.cfg_scale:g}, "
          "the Minimax fine-tune loaded from its cache (not timed).\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "overhead.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "overhead.md") as f: f.write(md)
    rec.finish(**{k: round(v, 4) for k, v in ours.items()})
    print(md)
    if a.figures:                                      # the record goes too: the gallery reads its commit
        from ddrepro.reports import publish_figures
        publish_figures({out / "overhead.csv": "sas_embedded_overhead.csv", out / "overhead.md": "sas_embedded_overhead.md",
                         rec.path: "sas_embedded_overhead_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
