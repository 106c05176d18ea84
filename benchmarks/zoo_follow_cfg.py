"""Does a larger classifier-free guidance scale make the zoo's attribute-aware UNet (`attr_unet`, issue 14's second
zoo generation) follow attribute prompts more often, and what does it cost at class level?

    .venv/bin/python benchmarks/zoo_follow_cfg.py [--cfgs 4,8,12] [--per-prompt 10] [--per-class 50] [--steps 50]
                                                  [--threads 2] [--figures]

For each CFG scale: `zoo.attribute_following` (the rule-based describer applied to samples of one-attribute prompts
such as "A dark t-shirt." recovers the prompted value how often; chance = 1 / number of values) and, at class level,
the zoo teacher's accuracy on class-prompt samples ("A photo of a {class}"), the number the zoo notebook keeps
≥ 87.6 %. Same prompts and seeds at every scale (paired), so a difference between scales is the guidance scale's.
The shipped zoo samples at CFG 4 (its quality table); this measures whether the weak following of the attributes
other than tone is a sampling setting or a property of the trained UNet.

Writes runs/bench/zoo_follow_cfg/{follow.csv, follow.md, record.json}; `--figures` copies them to
figures/zoo_attr_following_cfg* from a clean commit only. `--smoke`: 2 scales, 1 sample per prompt, 3 steps.
"""
import argparse
from pathlib import Path

import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfgs", default="4,8,12"); ap.add_argument("--per-prompt", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=50); ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError, RunRecord, atomic_write, project_root
    try: cfgs = [float(c) for c in a.cfgs.split(",") if c.strip()]
    except ValueError: raise ConfigError(f"--cfgs {a.cfgs!r}: expected comma-separated numbers, e.g. 4,8,12") from None
    if not cfgs or any(c < 1 for c in cfgs): raise ConfigError(f"--cfgs {a.cfgs!r}: expected scales ≥ 1")
    if a.smoke: cfgs, a.per_prompt, a.per_class, a.steps = cfgs[:2], 1, 2, 3
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.data import class_map
    from ddrepro.reports import df_to_markdown
    from ddrepro.zoo import attribute_following, load, sample_labels, teacher_accuracy, text_encoder_for, unet_samples
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "zoo_follow_cfg"
    rec = RunRecord.start(out, dict(vars(a), cfgs=cfgs), kind="bench")
    names = class_map("fashion_mnist").prompt_names
    unet, vae, te, teacher = load("attr_unet"), load("vae"), text_encoder_for("attr_unet"), load("teacher")
    rows = []
    for s in cfgs:
        f = attribute_following(unet, vae, te, names, a.per_prompt, a.seed, a.steps, s)
        y = sample_labels(a.per_class)
        acc = teacher_accuracy(teacher, unet_samples(unet, vae, te, y, names, seed=a.seed, num_steps=a.steps, cfg_scale=s), y)
        for attr, r in f.items():
            if attr != "rows":
                rows.append(dict(cfg_scale=s, attribute=attr, follow=r["follow"], chance=r["chance"], n=r["n"], class_teacher_acc=acc))
        print(f"CFG {s:g}: " + ", ".join(f"{r['attribute']} {100 * r['follow']:.0f} %" for r in rows if r["cfg_scale"] == s)
              + f"; class-prompt teacher accuracy {100 * acc:.1f} %", flush=True)
    df = pd.DataFrame(rows)
    wide = df.pivot(index="attribute", columns="cfg_scale", values="follow").mul(100).round(1)
    wide.columns = [f"CFG {c:g} follow %" for c in wide.columns]
    wide["chance %"] = (100 * df.groupby("attribute").chance.first()).round(1)
    acc = df.groupby("cfg_scale").class_teacher_acc.first().mul(100).round(1)
    md = ("### Zoo attr_unet: attribute following by classifier-free guidance scale (embedded, Fashion-MNIST)\n\n"
          + df_to_markdown(wide.reset_index()) + "\n\nFollow: the describer recovers the prompted value in this share of "
          f"{a.per_prompt} samples per (attribute, class, value) prompt, {a.steps} DDIM steps, seed {a.seed}; the same "
          "prompts and seeds at every scale. Class level, teacher accuracy on class-prompt samples "
          f"({a.per_class} per class): " + ", ".join(f"CFG {c:g} {v} %" for c, v in acc.items()) + ".\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "follow.csv") as fh: df.to_csv(fh, index=False)
    with atomic_write(out / "follow.md") as fh: fh.write(md)
    rec.results.update(rows=rows)
    rec.finish()
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        publish_figures({out / "follow.csv": "zoo_attr_following_cfg.csv", out / "follow.md": "zoo_attr_following_cfg.md",
                         rec.path: "zoo_attr_following_cfg_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
