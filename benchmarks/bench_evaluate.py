"""Benchmark of the evaluation training loop (one command, no arguments needed):

    .venv/bin/python benchmarks/bench_evaluate.py [--device auto] [--width 128] [--steps 8] [--rounds 5]

Trains ConvNet-3 (width 128, instance norm) on a 500-image Fashion-MNIST set (IPC 50) with the hard
protocol's augmentation (RandomResizedCrop 0.5–1, flip, colour jitter, PCA lighting, CutMix p = 1)
and prints side by side, measured in interleaved rounds in one run (median over rounds):
  * ddrepro      — `ddrepro.evaluate.train_step`: set on the device, batched per-sample augmentation;
  * dataloader   — a plain torchvision DataLoader over the same images with per-image v2 transforms
                   (+ the same CutMix and step), num_workers 0 (and --workers N if given);
  * bare         — forward + backward + step on pre-augmented batches already on the device (the bound);
and the seconds per test-set evaluation (10,000 Fashion-MNIST test images).
Targets: CPU ≥ 85 % of bare; GPU ≥ 5× the DataLoader loop.
"""
import argparse, math, statistics, time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T

from ddrepro.core import pick_device, autocast
from ddrepro.data import load_real
from ddrepro.data import to_float01
from ddrepro.students import predict_logits
from ddrepro.evaluate import (eval_config, make_student, train_step, augment_batch, apply_cutmix, cutmix_box,
                              cutmix_ce, random_real_subset, lighting_offset)


class _Lighting:
    "Per-image PCA lighting (the IDC transform) for the DataLoader baseline."
    def __call__(self, img): return img + lighting_offset(1, 0.1)[0].view(3, 1, 1)


class _Set(torch.utils.data.Dataset):
    def __init__(self, images, labels, tf): self.images, self.labels, self.tf = images, labels, tf
    def __len__(self): return len(self.images)
    def __getitem__(self, i): return self.tf(self.images[i]), self.labels[i]


def _sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto"); ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per method per round")
    ap.add_argument("--rounds", type=int, default=5); ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = pick_device(a.device)
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "test")
    sub = random_real_subset(train, 50, 0)
    cfg = eval_config("hard", "paper", "fashion_mnist", 50, student="convnet", width=a.width)
    X, Y = sub.images.to(dev), sub.labels.to(dev)
    gen, rng = torch.Generator(device=dev).manual_seed(0), np.random.default_rng(0)
    bs = cfg.batch_size
    model, opt, _ = make_student(cfg, dev)

    def ours(steps):
        for _ in range(steps):
            idx = torch.randint(0, len(X), (bs,), generator=gen, device=dev)
            train_step(model, opt, X[idx], Y[idx], cfg, gen, rng)

    tf = T.Compose([T.RandomResizedCrop(cfg.size, scale=cfg.rrc_scale, antialias=True), T.RandomHorizontalFlip(),
                    T.ToDtype(torch.float32, scale=True), T.ColorJitter(0.4, 0.4, 0.4), _Lighting()])
    loaders = {w: torch.utils.data.DataLoader(_Set(sub.images, sub.labels, tf), batch_size=bs, shuffle=True, drop_last=True,
                                              num_workers=w, persistent_workers=w > 0, pin_memory=dev.type == "cuda")
               for w in sorted({0, a.workers})}
    iters = {w: iter(l) for w, l in loaders.items()}

    def dataloader(steps, w):
        for _ in range(steps):
            try: x, y = next(iters[w])
            except StopIteration:
                iters[w] = iter(loaders[w]); x, y = next(iters[w])
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            lam = float(rng.beta(1.0, 1.0)); p = torch.randperm(len(x), device=dev)
            x, r = apply_cutmix(x, p, cutmix_box(x.shape[2], x.shape[3], lam, rng))
            if dev.type == "cuda": x = x.contiguous(memory_format=torch.channels_last)
            with autocast(dev): logits = model(x)
            loss = cutmix_ce(logits.float(), y, y[p], r)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    pre = []
    for _ in range(a.steps):
        idx = torch.randint(0, len(X), (bs,), generator=gen, device=dev)
        x = augment_batch(to_float01(X[idx]), cfg, gen)
        p = torch.randperm(bs, generator=gen, device=dev)
        x, r = apply_cutmix(x, p, cutmix_box(cfg.size, cfg.size, 0.7, rng))
        if dev.type == "cuda": x = x.contiguous(memory_format=torch.channels_last)
        pre.append((x, Y[idx], Y[idx][p], r))

    def bare(steps):
        for i in range(steps):
            x, y, yb, r = pre[i % len(pre)]
            with autocast(dev): logits = model(x)
            loss = cutmix_ce(logits.float(), y, yb, r)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    methods = {"ddrepro (on-device batched aug)": ours, "bare forward+backward (bound)": bare}
    for w in loaders: methods[f"torchvision DataLoader (workers={w})"] = (lambda s, w=w: dataloader(s, w))
    for f in methods.values(): f(2)                       # warm-up
    rates = {k: [] for k in methods}
    for _ in range(a.rounds):                             # interleaved rounds: load changes hit all methods alike
        for k, f in methods.items():
            _sync(dev); t = time.perf_counter(); f(a.steps); _sync(dev)
            rates[k].append(a.steps * bs / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}

    evals = []
    for w in sorted({a.width, 32}):
        c = eval_config("hard", "paper", "fashion_mnist", 50, student="convnet", width=w)
        m, _, _ = make_student(c, dev)
        Xt = test.images.to(dev)
        predict_logits(m, Xt[:1000], 500, dev)
        _sync(dev); t = time.perf_counter(); predict_logits(m, Xt, c.eval_batch_size, dev); _sync(dev)
        evals.append((w, time.perf_counter() - t))

    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{torch.get_num_threads()} torch threads'}), "
          f"ConvNet-3 width {a.width} (instance norm), batch {bs}, 500-image Fashion-MNIST set, hard-protocol augmentation, "
          f"{a.rounds} rounds × {a.steps} steps (median)")
    bare_r = med["bare forward+backward (bound)"]
    dl_r = max(v for k, v in med.items() if k.startswith("torchvision DataLoader"))   # the fastest DataLoader measured
    print(f"{'loop':44s} {'img/s':>8s} {'× bare':>8s} {'× best DataLoader':>18s}")
    for k, v in med.items():
        print(f"{k:44s} {v:8.1f} {v / bare_r:8.2f} {v / dl_r:18.2f}")
    ours_r = med["ddrepro (on-device batched aug)"]
    target = "≥ 0.85 × bare" if dev.type == "cpu" else "≥ 5 × DataLoader"
    ok = ours_r >= 0.85 * bare_r if dev.type == "cpu" else ours_r >= 5 * dl_r
    print(f"target ({dev.type}): {target} -> {'MET' if ok else 'NOT met'} (ratio to bare {ours_r / bare_r:.2f}, to DataLoader {ours_r / dl_r:.2f})")
    for w, s in evals:
        print(f"test-set evaluation (10,000 images, ConvNet-3 width {w}): {s:.2f} s")


if __name__ == "__main__":
    main()
