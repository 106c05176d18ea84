"Tests of ddrepro.pools: generators by name, resumable byte-identical pools, settings that must not mix, per-item context, processes."
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ddrepro.core import AssetError, ConfigError, derive_seed
from ddrepro.data import class_map
from ddrepro.diffusion import GaussianDenoiser, make_scheduler, random_dit, random_vae
from ddrepro.pools import DiTGenerator, load_pool_generator, make_pool
import ddrepro.minimax as mm


POOL_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from ddrepro.diffusion import random_dit, random_vae
    from ddrepro.data import class_map
    from ddrepro.pools import DiTGenerator, make_pool
    torch.set_num_threads(1)
    class Slow(DiTGenerator):
        def generate(self, labels, seeds, ids=None, payload=None):
            time.sleep(float(sys.argv[2]))
            return super().generate(labels, seeds, ids, payload)
    gen = Slow(random_dit("tiny"), random_vae(), num_steps=4, cfg_scale=2.0, name="tiny-dit")
    make_pool(gen, class_map("fashion_mnist"), per_class=3, seed=5, out_dir=sys.argv[1], batch_size=4, device="cpu")
""")


def _pngs(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*.png"))}


def test_pool_resume_after_kill_is_byte_identical(tmp_path):
    script = tmp_path / "pool.py"; script.write_text(POOL_SCRIPT)
    env = dict(os.environ, DDREPRO_PROGRESS="0")
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "0.3"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.rglob("*.png"))) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_before = len(list(killed.rglob("*.png")))
    assert 6 <= n_before < 30, f"kill did not land mid-run ({n_before} images)"
    from ddrepro.data import read_image
    for p in killed.rglob("*.png"): read_image(p)          # atomic writes: every PNG present is complete
    runs = [subprocess.Popen([sys.executable, str(script), str(d), "0"], env=env) for d in (killed, full)]
    assert [p.wait() for p in runs] == [0, 0]
    a, b = _pngs(killed), _pngs(full)
    assert len(a) == 30 and a.keys() == b.keys()
    assert not list(killed.rglob("*.tmp"))                  # temp files of the killed write were cleaned up
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    from ddrepro.core import RunRecord
    rec = RunRecord.load(killed)
    assert rec.status == "complete" and rec.stages["generate"]["resumed_with"] == n_before
    assert rec.stages["generate"]["images"] == 30 - n_before and rec.params["num_steps"] == 4


def test_pool_refuses_to_mix_settings(tmp_path):
    cm = class_map("fashion_mnist")
    gen = DiTGenerator(random_dit("tiny"), random_vae(), num_steps=2, name="tiny-dit")
    rec = make_pool(gen, cm, per_class=1, seed=0, out_dir=tmp_path, batch_size=16, classes=[0, 3], device="cpu")
    assert sorted(p.parent.name for p in tmp_path.rglob("*.png")) == ["0", "3"]
    assert rec.results["images"] == 2
    with pytest.raises(ConfigError, match="seed=0"):
        make_pool(gen, cm, per_class=1, seed=1, out_dir=tmp_path, batch_size=16, classes=[0, 3], device="cpu")


def test_pixel_ddpm_generator_known_answer():
    # pixel space x ∈ [−1, 1]: class means −0.5 / 0.5 must come out as 0.25 / 0.75 in [0, 1]
    from ddrepro.pools import PixelDDPMGenerator
    means = torch.stack([torch.full((3, 8, 8), v) for v in (-0.5, 0.5)])
    gen = PixelDDPMGenerator(GaussianDenoiser(means, 0.2, make_scheduler("ddpm").alphas_cumprod), num_steps=1000)
    labels = [0] * 8 + [1] * 8
    imgs = gen.generate(labels, [derive_seed(2, i) for i in range(16)])
    assert imgs.shape == (16, 3, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1
    assert abs(imgs[:8].mean().item() - 0.25) < 0.01 and abs(imgs[8:].mean().item() - 0.75) < 0.01
    assert abs(imgs[:8].std().item() - 0.1) < 0.01                     # σ 0.2 in [−1,1] = 0.1 in [0,1]
    assert gen.settings()["cfg_scale"] is None and gen.settings()["num_steps"] == 1000


@pytest.fixture
def fake_zoo(monkeypatch):
    "The real `ddrepro.zoo` whose `load` returns tiny random models of the zoo's interfaces (for this test only)."
    import ddrepro.zoo as zoo
    monkeypatch.setattr(zoo, "load", lambda name, device="cpu", **kw: {"dit": lambda: random_dit("tiny"), "vae": random_vae}[name]())
    return zoo


def test_embedded_dit_and_minimax_pool_generators(fake_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(mm, "minimax_cache_dir", lambda *a: tmp_path / "mm")
    g = load_pool_generator("dit", device="cpu")
    assert g.class_ids is None and g.cfg_channels is None and g.scheduler_config is None and g.sampler == "ddpm"
    assert g.assets["dit"]["source"] == "zoo" and g.generate([0, 9], [1, 2]).shape == (2, 3, 16, 16)
    m = load_pool_generator("minimax", device="cpu", minimax_steps=3, minimax_per_class=8)
    assert (tmp_path / "mm" / "ema" / "config.json").exists() and m.assets["minimax"]["sha256"]
    m2 = load_pool_generator("minimax", device="cpu", minimax_steps=3, minimax_per_class=8)   # from the cache
    assert all(torch.equal(a, b) for a, b in zip(m.model.state_dict().values(), m2.model.state_dict().values()))
    assert not torch.equal(m.model.proj_out_2.bias, g.model.proj_out_2.bias)


def test_ddpm_pool_generator_from_a_local_pipeline_folder(tmp_path):
    from diffusers import DDPMScheduler
    from ddrepro.diffusion import random_class_unet
    from ddrepro.backbones import load_ddpm
    from ddrepro.pools import POOLS, load_pool_generator
    from ddrepro.pools import make_pool
    assert "ddpm" in POOLS
    random_class_unet(sample_size=8).save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(beta_end=0.03).save_pretrained(tmp_path / "ddpm" / "scheduler")
    model, sched, asset = load_ddpm(tmp_path / "ddpm")
    assert sched["beta_end"] == 0.03 and asset.source == "local" and len(asset.sha256) == 64
    gen = load_pool_generator("ddpm", "cifar10", weights=str(tmp_path / "ddpm"), num_steps=3, device="cpu")
    assert gen.settings()["kind"] == "pixel_ddpm" and gen.settings()["scheduler_config"]["beta_end"] == 0.03
    rec = make_pool(gen, class_map("cifar10"), per_class=1, seed=0, out_dir=tmp_path / "pool", batch_size=10, device="cpu")
    assert rec.params["generator"] == "ddpm" and "ddpm" in rec.assets
    assert len(list((tmp_path / "pool").glob("*/0.png"))) == 10


def test_ddpm_pool_errors(tmp_path, monkeypatch):
    from ddrepro.diffusion import random_class_unet
    from ddrepro.backbones import load_ddpm
    from ddrepro.pools import load_pool_generator
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-ddrepro-hf-home")
    with pytest.raises(AssetError, match="Ketansomewhere/cifar10_conditional_diffusion1.*generator_weights="):
        load_pool_generator("ddpm", "cifar10")
    with pytest.raises(ConfigError, match="pool='ddpm' on fashion_mnist"):
        load_pool_generator("ddpm", "fashion_mnist")
    random_class_unet(num_class_embeds=100, sample_size=8).save_pretrained(tmp_path / "c100")
    with pytest.raises(ConfigError, match="num_class_embeds=100; cifar10 has 10 classes"):
        load_pool_generator("ddpm", "cifar10", weights=str(tmp_path / "c100"))
    random_class_unet(num_class_embeds=None, class_embed_type=None).save_pretrained(tmp_path / "uncond")
    with pytest.raises(AssetError, match="no class embedding"):
        load_ddpm(tmp_path / "uncond")


# --- per-item context, hooks in the resume key, class batches, several processes ------------------------------------

class SeeItems:
    "A guidance hook with λ = 0: records (label, item id, seed) of every item at the first step, returns ε unchanged."
    def __init__(self): self.seen = []
    def __call__(self, x_t, t, eps, x0_hat, ctx):
        if ctx.step == 0: self.seen += list(zip(ctx.labels.tolist(), ctx.item_ids, ctx.seeds))
        return eps


def test_guidance_hook_sees_items_and_lambda_zero_pool_is_byte_identical(tmp_path):
    from ddrepro.pools import pool_seed
    cm = class_map("fashion_mnist")
    dit, vae = random_dit("tiny"), random_vae()
    plain = DiTGenerator(dit, vae, num_steps=3, cfg_scale=2.0, name="tiny-dit")
    spy = SeeItems()
    hooked = DiTGenerator(dit, vae, num_steps=3, cfg_scale=2.0, name="tiny-dit", guidance=spy)
    make_pool(plain, cm, 2, 7, tmp_path / "plain", batch_size=6, device="cpu")
    make_pool(hooked, cm, 2, 7, tmp_path / "hooked", batch_size=6, device="cpu")
    assert _pngs(tmp_path / "plain") == _pngs(tmp_path / "hooked")
    assert sorted(spy.seen) == sorted((c, f"{cm.folders[c]}/{k}", pool_seed(7, cm.folders[c], k)) for c in range(10) for k in range(2))
    # a guided run never resumes into an unguided pool (and back)
    with pytest.raises(ConfigError, match="guidance="):
        make_pool(hooked, cm, 2, 7, tmp_path / "plain", batch_size=6, device="cpu")
    with pytest.raises(ConfigError, match="guidance="):
        make_pool(plain, cm, 2, 7, tmp_path / "hooked", batch_size=6, device="cpu")


def test_per_item_prompts_and_init_latents(tmp_path):
    from ddrepro.data import read_image
    from ddrepro.diffusion import random_unet
    from ddrepro.pools import TextGenerator, pool_seed
    cm = class_map("fashion_mnist")
    te = lambda prompts: torch.stack([torch.full((5, 16), float(len(p)) / 10) for p in prompts])
    tg = TextGenerator(random_unet(sample_size=8, cross_attention_dim=16), random_vae(), te, ["a shirt"] * 10,
                       num_steps=4, cfg_scale=None, name="toy-text")
    prompt = lambda c, k: {"prompt": "a shirt" if k % 2 == 0 else "a long grey woollen shirt"}
    make_pool(tg, cm, 4, 0, tmp_path / "p", batch_size=5, device="cpu", payload=prompt, classes=[3])
    im = [read_image(tmp_path / "p" / "3" / f"{k}.png") for k in range(4)]
    assert not torch.equal(im[0], im[1])                          # one class, two prompts → different images
    # the pool is what one batch of the four items with their own prompts makes, to the grey level
    u8 = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8)
    names, seeds = [f"3/{k}" for k in range(4)], [pool_seed(0, "3", k) for k in range(4)]
    batch = tg.generate([3] * 4, seeds, names, {"prompt": [prompt(3, k)["prompt"] for k in range(4)]})
    assert torch.equal(u8(batch), torch.stack(im))
    # item 2 alone with its own prompt repeats it up to float rounding (a batch's sums differ in the last bits); the other
    # prompt moves it far more
    same = tg.generate([3], seeds[2:3], names[2:3], {"prompt": ["a shirt"]})
    other = tg.generate([3], seeds[2:3], names[2:3], {"prompt": ["a long grey woollen shirt"]})
    d_same, d_other = (batch[2] - same[0]).abs().max().item(), (batch[2] - other[0]).abs().max().item()
    assert d_same < 1e-5 and d_other > 100 * max(d_same, 1e-7), (d_same, d_other)
    # per-item init latents (img2img): the init changes the image, the same init and seed repeat it
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    tg.strength = 0.5
    a = tg.generate([3, 3], [1, 1], payload={"init_latents": z})
    b = tg.generate([3, 3], [1, 1], payload={"init_latents": torch.stack([z[0], z[0]])})
    assert not torch.equal(a[0], a[1]) and torch.equal(a[0], b[1])
    with pytest.raises(ConfigError, match="payload"):
        make_pool(tg, cm, 2, 0, tmp_path / "q", device="cpu", payload=lambda c, k: {"prompt": "x"} if k else {}, classes=[3])


def test_encode_pair_replaces_encode_for_both_branches():
    "A pair encoder (VLCP's long prompts) gives the prompt and negative states together; the sampler gets exactly those."
    from ddrepro.diffusion import random_unet
    from ddrepro.pools import TextGenerator
    calls = []
    def pair(prompts, negative):
        calls.append((list(prompts), negative))
        L = 3 + max(len(p) for p in prompts) % 4                  # a length the two branches share, not the single encoder's
        return (torch.stack([torch.full((L, 16), float(len(p)) / 10) for p in prompts]), torch.zeros(len(prompts), L, 16))
    single = lambda prompts: (_ for _ in ()).throw(AssertionError("encode must not be called when encode_pair is set"))
    tg = TextGenerator(random_unet(sample_size=8, cross_attention_dim=16), random_vae(), single, ["a shirt"] * 10,
                       num_steps=3, cfg_scale=2.0, negative_prompt="cartoon", encode_pair=pair, name="pair")
    a = tg.generate([3, 4], [1, 2], payload={"prompt": ["a shirt", "a long grey woollen shirt"]})
    assert calls == [(["a shirt", "a long grey woollen shirt"], "cartoon")] and a.shape == (2, 3, 16, 16)
    assert tg.settings()["encode_pair"]["name"].endswith("pair")


def test_class_batches_and_payload_in_the_resume_key(tmp_path):
    cm = class_map("fashion_mnist")
    seen = []
    class Batches:
        def __call__(self, x_t, t, eps, x0_hat, ctx):
            if ctx.step == 0: seen.append((ctx.labels.tolist(), ctx.item_ids))
            return eps
    gen = DiTGenerator(random_dit("tiny"), None, num_steps=2, cfg_scale=None, name="tiny-dit", guidance=Batches())
    gen.vae = random_vae()
    rec = make_pool(gen, cm, 3, 0, tmp_path / "c", device="cpu", batch_by="class", classes=[2, 5])
    assert seen == [([2, 2, 2], ["2/0", "2/1", "2/2"]), ([5, 5, 5], ["5/0", "5/1", "5/2"])]
    assert rec.params["batch_by"] == "class" and rec.params["batch_size"] == 3
    with pytest.raises(ConfigError, match="batch_size=3, this run has 32|batch_by="):
        make_pool(gen, cm, 3, 0, tmp_path / "c", device="cpu", classes=[2, 5])
    make_pool(gen, cm, 1, 0, tmp_path / "p", device="cpu", classes=[0], payload=lambda c, k: {"latents": torch.zeros(4, 8, 8)})
    with pytest.raises(ConfigError, match="payload="):
        make_pool(gen, cm, 1, 0, tmp_path / "p", device="cpu", classes=[0])


TWO_PROC_SCRIPT = textwrap.dedent("""
    import sys, torch
    from ddrepro.diffusion import random_dit, random_vae
    from ddrepro.data import class_map
    from ddrepro.pools import DiTGenerator, make_pool
    torch.set_num_threads(1)
    gen = DiTGenerator(random_dit("tiny"), random_vae(), num_steps=3, cfg_scale=2.0, name="tiny-dit")
    make_pool(gen, class_map("fashion_mnist"), per_class=3, seed=4, out_dir=sys.argv[1], batch_size=4, device="cpu",
              merge_timeout_s=120)
""")


def test_two_processes_make_the_one_process_pool(tmp_path):
    "torchrun / accelerate launch set RANK and WORLD_SIZE: each process takes every other batch; same bytes as one process."
    from ddrepro.core import RunRecord
    script = tmp_path / "pool.py"; script.write_text(TWO_PROC_SCRIPT)
    env = dict(os.environ, DDREPRO_PROGRESS="0", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "two")],
                              env=dict(env, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r))) for r in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, timeout=300).returncode == 0
    a, b = _pngs(tmp_path / "two"), _pngs(tmp_path / "one")
    assert len(a) == 30 and a == b
    rec = RunRecord.load(tmp_path / "two")
    assert rec.status == "complete" and rec.params["world_size"] == 2 and rec.stages["generate"]["images"] < 30


@pytest.mark.slow
def test_torchrun_command_line_splits_a_pool_over_two_processes(tmp_path):
    "`torchrun --nproc_per_node 2 -m ddrepro.pools key=value …` gives the same PNGs as `python -m ddrepro.pools …`."
    env = dict(os.environ, DDREPRO_PROGRESS="0", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    args = ["generator=dit", "ipc=1", "pool_factor=3", "num_steps=3", "batch_size=4", "device=cpu"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ddrepro.pools", *args, f"out_dir={tmp_path / 'two'}"], env=env, timeout=300,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "ddrepro.pools", *args, f"out_dir={tmp_path / 'one'}"], env=env, timeout=300)
    assert one.returncode == 0
    a, b = _pngs(tmp_path / "two"), _pngs(tmp_path / "one")
    assert len(a) == 30 and a == b
    from ddrepro.core import RunRecord
    r2, r1 = RunRecord.load(tmp_path / "two"), RunRecord.load(tmp_path / "one")
    assert r2.params["world_size"] == 2 and r2.stages["generate"]["processes"] == 2 and r1.stages["generate"]["images"] == 30
    assert r2.assets["dit"]["sha256"] == r1.assets["dit"]["sha256"]
