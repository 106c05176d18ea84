"""DsCo's Dope Trigger (Liu et al., arXiv:2603.27987, §4.2.1, Eq. 30) measured on NOpt sets: for each IPC M of a
schedule, a student φ_S trained on the DsCo set S_M (the Doping student: soft labels from the teacher φ_T, the
embedded preset) labels every real training image; N_M = how many it labels as φ_T does (Conf < 0, Eq. 31).
ΔN/ΔM between consecutive IPCs is the number of real images recognised per added synthetic image; the trigger is on
where it is ≤ 1 (one synthetic image no longer buys more than one real image), and Doping starts at that IPC.

    .venv/bin/python benchmarks/dsco_dope_trigger.py [--sets 10=<folder>,50=<folder>] [--threads 2] [--figures]

Default sets: the DsCo sets of the embedded Tables 1-2 cells (runs/tables/dsco/embedded/table1/ipc-<M>/distilled/dsco,
written by `ddrepro-table dsco/embedded/table1`). The scores are those `dsco.dope` caches (same student, same seed), so
a run's Doping and this benchmark agree. Writes runs/bench/dsco_dope_trigger/{trigger.csv, trigger.md, record.json};
`--figures` copies them to figures/dsco_embedded_dope_trigger* from a clean commit only.
"""
import argparse
from pathlib import Path

import pandas as pd


def parse_sets(text: str) -> dict[int, Path]:
    "'10=a,50=b' → {10: Path('a'), 50: Path('b')}, IPCs strictly increasing."
    from ddrepro.core import ConfigError
    out = {}
    for part in [p for p in text.split(",") if p.strip()]:
        k, sep, v = part.partition("=")
        if not sep or not k.strip().isdigit() or not v.strip():
            raise ConfigError(f"--sets {text!r}: expected IPC=folder pairs separated by commas, e.g. 10=runs/a,50=runs/b; got {part!r}")
        out[int(k)] = Path(v.strip())
    if len(out) < 2: raise ConfigError(f"--sets {text!r}: Eq. 30 needs at least two IPCs")
    if list(out) != sorted(out): raise ConfigError(f"--sets {text!r}: expected increasing IPCs")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=None); ap.add_argument("--threshold", type=float, default=1.0)
    ap.add_argument("--student", default="convnet"); ap.add_argument("--protocol", default="soft")
    ap.add_argument("--real-per-class", type=int, default=None, help="score this many random real images per class (default: all)")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None); ap.add_argument("--figures", action="store_true")
    ap.add_argument("--eval-overrides", default="{}", help="EvalConfig fields of φ_S as YAML, e.g. '{epochs: 2}' for a smoke run")
    a = ap.parse_args(argv)
    import torch, yaml
    torch.set_num_threads(a.threads)
    from ddrepro.core import ConfigError, DataError, RunRecord, atomic_write, project_root
    from ddrepro.data import load_real, load_distilled, class_map
    from ddrepro.backbones import load_teacher
    from ddrepro.evaluate import random_real_subset
    from ddrepro.dsco import dope, dope_trigger
    root = project_root()
    sets = parse_sets(a.sets) if a.sets else {m: root / "runs" / "tables" / "dsco" / "embedded" / "table1" / f"ipc-{m}" / "distilled" / "dsco"
                                             for m in (10, 50)}
    missing = [str(p) for p in sets.values() if not p.is_dir()]
    if missing: raise DataError(f"DsCo set folder(s) not found: {missing}; run `ddrepro-table dsco/embedded/table1` or pass --sets")
    overrides = yaml.safe_load(a.eval_overrides) or {}
    if not isinstance(overrides, dict): raise ConfigError(f"--eval-overrides {a.eval_overrides!r}: expected a YAML mapping")
    out = Path(a.out) if a.out else root / "runs" / "bench" / "dsco_dope_trigger"
    rec = RunRecord.start(out, dict(vars(a), sets={k: str(v) for k, v in sets.items()}), kind="bench")
    cm = class_map("fashion_mnist")
    real = load_real("fashion_mnist", "train")
    if a.real_per_class: real = random_real_subset(real, a.real_per_class, a.seed)
    real = real if real.images is not None else real.load(32)
    teacher, _ = load_teacher("zoo", cm, 32)
    rows = []
    for m, folder in sets.items():
        base = load_distilled(folder, cm, m, exact=True)
        base = base if base.images is not None else base.load(32)
        scores, _ = dope(base, real, teacher, [], out / "scores", student=a.student, protocol=a.protocol, seed=a.seed,
                         device="cpu", **overrides)
        rows.append(dict(ipc=m, synthetic=m * len(cm), n_recognized=int((scores.conf < 0).sum()), n_scored=len(scores.conf),
                         from_cache=scores.from_cache, student_s=scores.meta.get("student_s"), folder=str(folder)))
        print(f"IPC {m}: φ_S recognises {rows[-1]['n_recognized']} / {len(scores.conf)} real images", flush=True)
    trig = dope_trigger([r["ipc"] for r in rows], [r["n_recognized"] for r in rows], len(cm), a.threshold)
    df = pd.DataFrame(rows)
    df["recognised %"] = (100 * df.n_recognized / df.n_scored).round(2)
    df["ΔN/ΔM to next"] = list(trig.gains.round(3)) + [None]
    df["trigger on"] = list(trig.on) + [None]
    from ddrepro.reports import df_to_markdown
    show = df.drop(columns=["folder", "from_cache"])
    md = ("### DsCo Dope Trigger (embedded, Eq. 30): real images recognised by φ_S trained on the DsCo set at each IPC\n\n"
          + df_to_markdown(show) + f"\n\nN_M: real training images ({df.n_scored.iloc[0]}) that φ_S ({a.student}, {a.protocol} labels "
          f"from the zoo teacher, embedded preset, seed {a.seed}) labels as the teacher does. ΔN/ΔM: recognised images per "
          f"added synthetic image between consecutive IPCs; the trigger is on at ≤ {a.threshold:g}. "
          + (f"**Trigger on from IPC {trig.base_ipc}**: Doping starts there.\n" if trig.base_ipc is not None else
             "**Trigger off on this schedule**: every added synthetic image still buys more than "
             f"{a.threshold:g} recognised real image(s).\n"))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "trigger.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "trigger.md") as f: f.write(md)
    rec.results.update(rows=rows, gains=trig.gains.tolist(), base_ipc=trig.base_ipc)
    rec.finish(base_ipc=trig.base_ipc)
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        publish_figures({out / "trigger.csv": "dsco_embedded_dope_trigger.csv", out / "trigger.md": "dsco_embedded_dope_trigger.md",
                         rec.path: "dsco_embedded_dope_trigger_record.json"}, [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df, trig


if __name__ == "__main__":
    main()
