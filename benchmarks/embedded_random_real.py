"""Random real subsets of Fashion-MNIST at IPC 1 / 10 / 50 under both protocols with the `embedded` preset
(one command; prints the table and the time per evaluation):

    .venv/bin/python benchmarks/embedded_random_real.py [--teacher zoo | PATH --teacher_arch convnet] [--threads 1]

Records go to runs/eval/embedded_random_real/<protocol>_ipc<ipc>/record.json. The soft protocol needs a
teacher: the embedded zoo's (`--teacher zoo`, default) or a local checkpoint (`--teacher PATH --teacher_arch ARCH`,
ARCH a student name; its width is the preset's, 32).
"""
import argparse
import time

from ddrepro.core import project_root
from ddrepro.data import load_real
from ddrepro.evaluate import evaluate_set, random_real_subset, results_table


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipcs", default="1,10,50"); ap.add_argument("--protocols", default="hard,soft")
    ap.add_argument("--teacher", default="zoo"); ap.add_argument("--teacher_arch", default=None)
    ap.add_argument("--repeats", type=int, default=1); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None); ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    rows, out = [], project_root() / "runs" / "eval" / "embedded_random_real"
    for protocol in a.protocols.split(","):
        for ipc in map(int, a.ipcs.split(",")):
            sub = random_real_subset(train, ipc, a.seed)
            t = time.perf_counter()
            s = evaluate_set(sub, test, protocol, "embedded", repeats=a.repeats, seed=a.seed, device=a.device,
                             teacher=a.teacher if protocol == "soft" else None, teacher_arch=a.teacher_arch,
                             out_dir=out / f"{protocol}_ipc{ipc}", name="random_real", threads=a.threads)
            rows.append((f"random real, IPC {ipc}", s))
            print(f"{protocol} IPC {ipc}: {time.perf_counter() - t:.1f} s wall, {s['cpu_s']:.1f} s CPU "
                  f"({s['images_per_s']:.0f} train img/s, {s['eval_s']:.1f} s per test-set evaluation)", flush=True)
    print("\nFashion-MNIST, preset 'embedded' (ConvNet-3 width 32; not comparable to paper numbers)\n")
    print(results_table(rows))


if __name__ == "__main__":
    main()
