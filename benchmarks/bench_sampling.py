"""Pool generation speed: ddrepro's batched pool (`make_pool`, per-image seeds, PNG writes overlapped) vs
one-image-at-a-time generation, which is what the Minimax reference `sample.py` does (batch 1 with its CFG twin,
fp32, decode and save each image before starting the next).

Both sides run the same sampler (DDPM, --steps respaced steps, CFG --cfg, null class = number of classes) and
write the same PNGs; the one-at-a-time side is timed on --single images and reported as images/s.

CPU (default): the embedded zoo DiT + VAE (ddrepro.zoo; a randomly initialised DiT/VAE of the zoo's shapes when
the zoo is not installed), 10 classes.
  python benchmarks/bench_sampling.py [--per-class 10] [--batch 100] [--single 20] [--threads 1]
GPU (--gpu): DiT-XL/2 at 256 px (4x32x32 latents, learned sigma, 1000 classes) + an SD-VAE-shaped decoder, both
with random weights (speed does not depend on the weights). Batched side: bf16 autocast; reference side: fp32.
  python benchmarks/bench_sampling.py --gpu [--per-class 2] [--classes 100] [--batch 100] [--single 4]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def zoo_or_random(device):
    "The zoo DiT and VAE, or random models of the zoo's shapes (flagged in the output)."
    import torch
    try:
        from ddrepro import zoo
        return zoo.load("dit").to(device), zoo.load("vae").to(device), "zoo"
    except Exception as e:  # zoo not installed yet
        from ddrepro.diffusion import random_dit, random_vae
        dit = random_dit(dict(num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4, num_layers=6,
                             sample_size=8, patch_size=2, num_embeds_ada_norm=10))
        return dit.to(device), random_vae(block_out_channels=(32, 64, 64)).to(device), f"random zoo-shaped ({type(e).__name__})"


def dit_xl_random(device):
    import torch
    from diffusers import AutoencoderKL
    from ddrepro.diffusion import random_dit
    dit = random_dit("DiT-XL/2", seed=None)                      # diffusers init: fast, and speed ignores values
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256)
    return dit.to(device).eval(), vae.to(device).eval(), "random DiT-XL/2 + SD-VAE shapes"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--classes", type=int, default=None, help="classes in the pool (default 10 CPU, 100 GPU)")
    ap.add_argument("--per-class", type=int, default=None, help="images per class (default 10 CPU, 2 GPU)")
    ap.add_argument("--batch", type=int, default=100, help="batch size of the pooled side")
    ap.add_argument("--single", type=int, default=None, help="images timed one at a time (default 20 CPU, 4 GPU)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    ap.add_argument("--json", type=str, default=None, help="also write the numbers to this file")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from ddrepro.core import derive_seed
    from ddrepro.data import ClassMap, save_image
    from ddrepro.diffusion import sample_dit
    from ddrepro.pools import DiTGenerator, make_pool, pool_seed
    dev = torch.device("cuda" if a.gpu else "cpu")
    if a.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device")
    dit, vae, what = dit_xl_random(dev) if a.gpu else zoo_or_random(dev)
    C = a.classes or (100 if a.gpu else 10)
    per = a.per_class or (2 if a.gpu else 10)
    single = a.single or (4 if a.gpu else 20)
    cm = ClassMap("bench", folders=tuple(f"c{i:04d}" for i in range(C)), names=tuple(map(str, range(C))),
                  prompt_names=tuple(map(str, range(C))))
    sync = torch.cuda.synchronize if a.gpu else (lambda: None)

    def warm():
        sample_dit(dit, vae, [0, 1], [1, 2], num_steps=2, cfg_scale=a.cfg, sampler="ddpm"); sync()

    warm()
    with tempfile.TemporaryDirectory() as d:
        # one image at a time, reference style: fp32, batch 1 (+ its CFG twin), decode and save before the next
        items = [(c, k) for k in range(per) for c in range(C)][:single]
        sync(); t0 = time.perf_counter()
        for c, k in items:
            img = sample_dit(dit, vae, [c], [pool_seed(0, cm.folders[c], k)], num_steps=a.steps, cfg_scale=a.cfg,
                             sampler="ddpm", amp=False)
            save_image(img[0].cpu(), Path(d) / "single" / cm.folders[c] / f"{k}.png")
        sync(); t_single = time.perf_counter() - t0
        # batched pool (bf16 on GPU)
        gen = DiTGenerator(dit, vae, num_steps=a.steps, cfg_scale=a.cfg, sampler="ddpm", name="bench")
        sync(); t0 = time.perf_counter()
        make_pool(gen, cm, per_class=per, seed=0, out_dir=Path(d) / "pool", batch_size=a.batch, device=str(dev))
        sync(); t_pool = time.perf_counter() - t0
        same = sum((Path(d) / "single" / cm.folders[c] / f"{k}.png").read_bytes() ==
                   (Path(d) / "pool" / cm.folders[c] / f"{k}.png").read_bytes() for c, k in items)
    n_pool = C * per
    r_single, r_pool = single / t_single, n_pool / t_pool
    res = dict(device=torch.cuda.get_device_name(0) if a.gpu else f"cpu ({a.threads} thread)", model=what,
               steps=a.steps, cfg=a.cfg, batch=a.batch, single_images=single, single_s=round(t_single, 2),
               single_img_per_s=round(r_single, 3), pool_images=n_pool, pool_s=round(t_pool, 2),
               pool_img_per_s=round(r_pool, 3), speedup=round(r_pool / r_single, 2),
               identical_pngs_single_vs_pool=f"{same}/{len(items)}")
    print(f"{'':24s}{'images':>8s}{'seconds':>10s}{'images/s':>11s}")
    print(f"{'one at a time (ref.)':24s}{single:8d}{t_single:10.2f}{r_single:11.2f}")
    print(f"{'batched pool':24s}{n_pool:8d}{t_pool:10.2f}{r_pool:11.2f}")
    print(f"speed-up {r_pool / r_single:.1f}x  ({res['device']}, {what}, {a.steps} DDPM steps, CFG {a.cfg}, batch {a.batch});"
          f" same PNG bytes for {same}/{len(items)} images generated both ways")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
