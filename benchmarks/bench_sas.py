"""SAS selection speed: running-row-sum stage 2 (ddrepro.sas.stage2_select) vs a direct transcription of the
paper's stage 2 (recompute every in-set diversity after each insertion, ddrepro.sas.stage2_naive).

Synthetic, L2-normalised 512-d embeddings: 1000 classes x 200-image pools (IPC 50, p = 0.5 -> 100 candidates).
Usage: python benchmarks/bench_sas.py [--classes 1000] [--pool 200] [--dim 512] [--ipc 50] [--threads 2]
                                      [--naive-classes 100] [--repeats 3]
The naive version is timed on --naive-classes classes and extrapolated linearly to all classes (classes are
independent, so its cost is linear in their number), with 1 and --threads BLAS threads (the faster is reported);
the two selections are compared on those classes.
"""
import argparse
import os
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=200, help="images per class (n x IPC)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ipc", type=int, default=50)
    ap.add_argument("--keep-ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads")
    ap.add_argument("--naive-classes", type=int, default=100, help="classes to time the paper's loop on (then extrapolated)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs for the fast path")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(a.threads)                     # before numpy/torch load their BLAS
    import time
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.sas import (check_embeddings, s_rel, s_sep, stage1, stream_order, stage2_select, stage2_naive,
                             sas_select)

    rng = np.random.default_rng(a.seed)
    C, n, d = a.classes, a.pool, a.dim
    T = rng.standard_normal((C, d), dtype=np.float32); T /= np.linalg.norm(T, axis=1, keepdims=True)
    y = np.repeat(np.arange(C), n)
    Z = rng.standard_normal((C * n, d), dtype=np.float32); Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    V = 0.35 * T[y] + 0.94 * Z                               # CLIP-like: cos(image, own prompt) ~ 0.35
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    V = V.astype(np.float32)

    def best(f, k):
        ts, out = [], None
        for _ in range(k):
            t0 = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t0)
        return min(ts), out

    t_check, _ = best(lambda: check_embeddings(V, T, y, ipc=a.ipc), 1)
    t_scores, margin = best(lambda: s_rel(V, T, y) + s_sep(V, T, y), 1)
    t_s1, st1 = best(lambda: stage1(margin, y, a.ipc, a.keep_ratio, C), a.repeats)
    streams = stream_order(st1.candidates)
    t_s2, fast = best(lambda: stage2_select(V, streams, a.ipc, margin), a.repeats)
    k = min(a.naive_classes, C)
    # the paper's loop does many small (IPC+1)x(IPC+1) matmuls, where multi-threaded BLAS can be slower than one
    # thread on a busy machine: time it both ways and keep the faster, so the comparison is not inflated
    from threadpoolctl import threadpool_limits
    t_by_threads = {}
    for th in sorted({1, a.threads}):
        with threadpool_limits(limits=th):
            t0 = time.perf_counter()
            naive = np.stack([stage2_naive(V, s, a.ipc, margin) for s in streams[:k]])
            t_by_threads[th] = time.perf_counter() - t0
    naive_threads = min(t_by_threads, key=t_by_threads.get)
    t_naive_k = t_by_threads[naive_threads]
    t_naive = t_naive_k * C / k
    same = np.array_equal(fast[:k], naive)
    t_e2e, sel = best(lambda: sas_select(V, T, y, a.ipc, a.keep_ratio), 1)
    assert np.array_equal(np.sort(fast.ravel()), sel)

    M = streams.shape[1]
    print(f"SAS selection benchmark: {C} classes x {n} images x {d}-d float32, IPC {a.ipc}, p {a.keep_ratio} "
          f"({M} candidates/class), {a.threads} thread(s), numpy {np.__version__}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    ext = ("" if k == C else f"  (timed on {k} classes: {t_naive_k:.2f} s, x{C / k:g} extrapolated)") + \
          f"; BLAS threads {naive_threads} (" + ", ".join(f"{th}: {t:.2f} s" for th, t in t_by_threads.items()) + ")"
    print()
    print(f"{'stage':<44}{'this implementation':>22}{'paper transcription':>22}{'ratio':>9}")
    print(f"{'stage 2 (all classes)':<44}{t_s2:>20.3f} s{t_naive:>20.2f} s{t_naive / t_s2:>8.0f}x{ext}")
    sel_fast, sel_naive = t_s1 + t_s2, t_s1 + t_naive
    print(f"{'selection = stage 1 + stage 2':<44}{sel_fast:>20.3f} s{sel_naive:>20.2f} s{sel_naive / sel_fast:>8.0f}x")
    print(f"{'scores, Eqs. 5/6/8 (N x C image-text matmul)':<44}{t_scores:>20.3f} s")
    print(f"{'input checks':<44}{t_check:>20.3f} s")
    print(f"{'sas_select end to end (checks+scores+select)':<44}{t_e2e:>20.3f} s")
    print()
    print(f"same selection as the paper's loop on the {k} timed classes: {same}")
    print(f"target: selection of all {C} classes <= 2 s on 2 cores -> {'MET' if sel_fast <= 2 else 'NOT MET'} "
          f"({sel_fast:.2f} s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
