"""DsCo Table 13 (Liu et al., arXiv:2603.27987, App. B): how many of N equal regions N uniform draws occupy — the paper's
Monte Carlo (n_exp = 500 experiments of N draws) beside its printed values and the closed form N·(1 − (1 − 1/N)^N).
This table is exact, not an embedded analog: it needs no model or data.

    .venv/bin/python benchmarks/dsco_table13.py [--n-exp 500] [--seeds 0,1,2,3,4] [--figures]

Prints and writes runs/bench/dsco_table13/{table13.csv, table13.md, record.json}: one MC column per seed, their mean,
the closed form and the paper; `--figures` copies them to figures/dsco_table13* from a clean commit only.
"""
import argparse
from pathlib import Path

import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="10,50,100"); ap.add_argument("--n-exp", type=int, default=500)
    ap.add_argument("--seeds", default="0,1,2,3,4"); ap.add_argument("--out", default=None)
    ap.add_argument("--figures", action="store_true")
    a = ap.parse_args(argv)
    from ddrepro.core import ConfigError, RunRecord, atomic_write, project_root
    from ddrepro.dsco import PAPER_TABLE13, expected_occupied, occupied_regions, occupied_std
    from ddrepro.reports import df_to_markdown
    try:
        ns, seeds = [int(v) for v in a.ns.split(",")], [int(v) for v in a.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--ns {a.ns!r} / --seeds {a.seeds!r}: expected comma-separated integers") from None
    out = Path(a.out) if a.out else project_root() / "runs" / "bench" / "dsco_table13"
    rec = RunRecord.start(out, vars(a), kind="bench")
    rows = []
    for n in ns:
        mc = [occupied_regions(n, a.n_exp, s) for s in seeds]
        paper = PAPER_TABLE13.get(n, (float("nan"), float("nan")))
        rows.append({"N": n, "paper mean": paper[0], "paper std": paper[1],
                     "MC mean (mean over seeds)": sum(m for m, _ in mc) / len(mc), "MC mean range": f"{min(m for m, _ in mc):.2f}–{max(m for m, _ in mc):.2f}",
                     "MC std (mean over seeds)": sum(s for _, s in mc) / len(mc),
                     "closed-form mean": expected_occupied(n), "closed-form std": occupied_std(n)})
    df = pd.DataFrame(rows)
    show = df.round(3)
    md = (f"### DsCo Table 13 (App. B): occupied regions of N equal regions after N uniform draws\n\n" + df_to_markdown(show.set_index("N"))
          + f"\n\nMC: the paper's procedure, {a.n_exp} experiments of N draws each, seeds {seeds} (mean over seeds, and the range of "
          "the per-seed means); closed form: mean N·(1 − (1 − 1/N)^N) and its exact std; paper: the printed values (0.1 precision).\n")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "table13.csv") as f: df.to_csv(f, index=False)
    with atomic_write(out / "table13.md") as f: f.write(md)
    rec.finish()
    print(md)
    if a.figures:
        from ddrepro.reports import publish_figures
        publish_figures({out / "table13.csv": "dsco_table13.csv", out / "table13.md": "dsco_table13.md", rec.path: "dsco_table13_record.json"},
                        [(rec.git.get("sha"), rec.git.get("dirty"))])
    return df


if __name__ == "__main__":
    main()
