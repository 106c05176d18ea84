"Tests of ddrepro.diffusion: step maths vs diffusers, exact Gaussian sampling, seeds, CFG, hooks, img2img, the VAE pair."
import math

import pytest
import torch

from ddrepro.core import ConfigError, derive_seed
from ddrepro.diffusion import (GaussianDenoiser, ddim_step, ddpm_step, encode_latents, generators_for,
                               img2img_timesteps, initial_noise, make_scheduler, model_eps, random_dit, random_unet,
                               random_vae, sample_dit, sample_text, step_alphas, to_eps)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def tiny():
    return random_dit("tiny"), random_vae()


# --- one step ------------------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_diffusers(eta):
    g = torch.Generator().manual_seed(3)
    x, e, z = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    s = make_scheduler("ddim", timestep_spacing="leading"); s.set_timesteps(20)
    for t, ab, abp in step_alphas(s, s.timesteps)[::5]:
        mean, sig, x0 = ddim_step(x, e, ab, abp, eta)
        out = s.step(e, t, x, eta=eta, variance_noise=z)
        assert torch.allclose(mean + sig * z, out.prev_sample, atol=1e-5)
        assert torch.allclose(x0, out.pred_original_sample, atol=1e-4)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_step_matches_diffusers(variance_type):
    g = torch.Generator().manual_seed(4)
    x, e, v = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    v = v.clamp(-1, 1)
    s = make_scheduler("ddpm", variance_type=variance_type); s.set_timesteps(25)
    for t, ab, abp in step_alphas(s, s.timesteps)[::6]:
        out = torch.cat([e, v], 1) if variance_type == "learned_range" else e
        ref = s.step(out, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
        mean, sig, _ = ddpm_step(x, e, ab, abp, variance_type, v)
        assert torch.allclose(mean + sig * z, ref, atol=1e-5), t


def test_ddim_hand_values():
    # ᾱ_t = 0.25, ᾱ_prev = 0.64, x_t = 1, ε = 0.5: x̂₀ = (1 − √0.75·0.5)/0.5, η = 0 → √0.64 x̂₀ + √0.36 ε
    x, e = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.5)
    mean, sig, x0 = ddim_step(x, e, 0.25, 0.64, 0.0)
    x0_hand = (1 - math.sqrt(0.75) * 0.5) / 0.5
    assert abs(x0.item() - x0_hand) < 1e-6
    assert abs(mean.item() - (0.8 * x0_hand + 0.6 * 0.5)) < 1e-6 and sig.item() == 0
    # η = 1: σ² = (1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev) = 0.36/0.75·(1 − 0.390625)
    _, sig, _ = ddim_step(x, e, 0.25, 0.64, 1.0)
    assert abs(sig.item() ** 2 - 0.36 / 0.75 * (1 - 0.25 / 0.64)) < 1e-7


def test_to_eps_roundtrip():
    x0, e = torch.randn(5, 3), torch.randn(5, 3)
    for a in (0.01, 0.5, 0.99):
        xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * e
        assert torch.allclose(to_eps(math.sqrt(a) * e - math.sqrt(1 - a) * x0, xt, a, "v_prediction"), e, atol=1e-4)
        assert torch.allclose(to_eps(x0, xt, a, "sample"), e, atol=1e-3)
    with pytest.raises(ConfigError, match="prediction_type"):
        to_eps(x0, x0, 0.5, "flow")


# --- the whole chain on a model with known answers ------------------------------------------------

def test_gaussian_ddpm_1000_steps_recovers_data_distribution():
    means = torch.stack([torch.full((4, 8, 8), v) for v in (-1.0, 2.0)])
    model = GaussianDenoiser(means, 0.5, make_scheduler("ddpm").alphas_cumprod)
    labels = torch.tensor([0] * 12 + [1] * 12)
    z = sample_dit(model, None, labels, [derive_seed(0, i) for i in range(24)], num_steps=1000, cfg_scale=None,
                   sampler="ddpm")
    for c, m in ((0, -1.0), (1, 2.0)):
        assert abs(z[labels == c].mean().item() - m) < 0.03
        assert abs(z[labels == c].std().item() - 0.5) < 0.015


def test_gaussian_cfg_scales_class_mean():
    # null class has mean 0, so CFG scale s gives ε of a Gaussian with mean s·m_c
    means = torch.full((1, 4, 8, 8), 1.0)
    model = GaussianDenoiser(means, 0.5, make_scheduler("ddim").alphas_cumprod)
    seeds = [derive_seed(1, i) for i in range(16)]
    z = sample_dit(model, None, [0] * 16, seeds, num_steps=100, cfg_scale=3.0)
    assert abs(z.mean().item() - 3.0) < 0.1


# --- seeds, batching, CFG --------------------------------------------------------------------------

def test_ddim_eta0_deterministic_and_seed_dependent(tiny):
    dit, vae = tiny
    seeds = [derive_seed(0, c, 0) for c in range(3)]
    a = sample_dit(dit, vae, [0, 1, 2], seeds, num_steps=8)
    assert torch.equal(a, sample_dit(dit, vae, [0, 1, 2], seeds, num_steps=8))
    b = sample_dit(dit, vae, [0, 1, 2], [s + 1 for s in seeds], num_steps=8)
    assert (a - b).abs().max() > 1e-3
    assert a.shape == (3, 3, 16, 16) and 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_image_independent_of_batch_composition(tiny, sampler):
    dit, _ = tiny
    items = [(0, 0), (5, 0), (9, 3), (5, 1)]
    seeds = [derive_seed(7, c, k) for c, k in items]
    big = sample_dit(dit, None, [c for c, _ in items], seeds, num_steps=6, sampler=sampler, eta=0.3)
    for i in (1, 3):
        alone = sample_dit(dit, None, [items[i][0]], [seeds[i]], num_steps=6, sampler=sampler, eta=0.3)
        assert rel_err(alone[0], big[i]) < 1e-5
    pair = sample_dit(dit, None, [items[3][0], items[0][0]], [seeds[3], seeds[0]], num_steps=6, sampler=sampler, eta=0.3)
    assert rel_err(pair[0], big[3]) < 1e-5 and rel_err(pair[1], big[0]) < 1e-5


def test_cfg_scale_one_equals_conditional(tiny):
    dit, _ = tiny
    seeds = [derive_seed(2, 0), derive_seed(2, 1)]
    a = sample_dit(dit, None, [3, 4], seeds, num_steps=6, cfg_scale=1.0)
    b = sample_dit(dit, None, [3, 4], seeds, num_steps=6, cfg_scale=None)
    assert rel_err(a, b) < 1e-5
    c = sample_dit(dit, None, [3, 4], seeds, num_steps=6, cfg_scale=4.0)
    assert rel_err(c, b) > 1e-3


def test_learned_sigma_first_channels_are_eps():
    dit8 = random_dit("tiny", out_channels=8)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        raw = dit8(x, timestep=torch.tensor([100, 100]), class_labels=torch.tensor([1, 2])).sample
        eps, var = model_eps(dit8, x, 100, {"class_labels": torch.tensor([1, 2])})
    assert torch.allclose(eps, raw[:, :4]) and torch.allclose(var, raw[:, 4:])


def test_training_mode_model_is_switched_to_eval_and_restored(tiny):
    dit, _ = tiny
    dit.train()
    try:
        a = sample_dit(dit, None, [1], [5], num_steps=3)
        assert dit.training
        dit.eval()
        assert torch.equal(a, sample_dit(dit, None, [1], [5], num_steps=3))
    finally:
        dit.eval()


def test_bad_inputs(tiny):
    dit, _ = tiny
    with pytest.raises(ConfigError, match="0..9"):
        sample_dit(dit, None, [12], [0])
    with pytest.raises(ConfigError, match="one seed per image"):
        sample_dit(dit, None, [1, 2], [0])
    with pytest.raises(ConfigError, match="ddim"):
        make_scheduler("heun")


# --- hooks -----------------------------------------------------------------------------------------

def test_guidance_hook_gets_graph_and_changes_samples():
    means = torch.full((1, 4, 8, 8), -1.0)
    model = GaussianDenoiser(means, 0.5, make_scheduler("ddim").alphas_cumprod)
    got = {}

    class Pull:
        requires_grad = True
        def __call__(self, x_t, t, eps, x0_hat, ctx):
            assert x_t.requires_grad and x0_hat.grad_fn is not None
            got.setdefault("steps", []).append(ctx.step)
            g, = torch.autograd.grad(((x0_hat - 1.0) ** 2).sum(), x_t)
            return eps + 2.0 * math.sqrt(1 - ctx.alpha_bar) * g

    seeds = [derive_seed(3, i) for i in range(8)]
    plain = sample_dit(model, None, [0] * 8, seeds, num_steps=10, cfg_scale=None)
    pulled = sample_dit(model, None, [0] * 8, seeds, num_steps=10, cfg_scale=None, guidance=Pull())
    assert got["steps"] == list(range(10))
    assert pulled.mean() > plain.mean() + 1.0


def test_noise_hook_replaces_step_noise(tiny):
    dit, _ = tiny
    seen = []

    def hook(step, x_t, mean, sigma, ctx):
        seen.append((step, tuple(mean.shape), float(sigma.flatten()[0])))
        return torch.zeros_like(x_t)

    z0 = sample_dit(dit, None, [1, 2], [4, 5], num_steps=5, sampler="ddpm", noise=hook)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3] and all(sig > 0 for _, _, sig in seen)
    assert rel_err(z0, sample_dit(dit, None, [1, 2], [4, 5], num_steps=5, sampler="ddpm")) > 1e-4


# --- text-conditional UNet -------------------------------------------------------------------------

def test_text_path_txt2img_and_img2img_start():
    unet, vae = random_unet(), random_vae()
    g = torch.Generator().manual_seed(0)
    states, empty = torch.randn(2, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    seeds = [11, 12]
    txt = sample_text(unet, vae, states, seeds, uncond_states=empty, num_steps=6)
    one = sample_text(unet, vae, states[1:], seeds[1:], uncond_states=empty, num_steps=6)
    assert txt.shape == (2, 3, 16, 16) and torch.allclose(one[0], txt[1], atol=1e-5)
    seen = []
    init = torch.rand(2, 3, 16, 16, generator=g)
    sample_text(unet, vae, states, seeds, uncond_states=empty, num_steps=10, init_images=init, strength=0.5,
                guidance=lambda x_t, t, eps, x0, ctx: seen.append((t, x_t.clone())) or eps)
    sched = make_scheduler("ddim")
    assert [t for t, _ in seen] == img2img_timesteps(sched, 10, 0.5) and len(seen) == 5
    gens = generators_for(seeds)
    with torch.no_grad():
        z0 = encode_latents(vae, init, gens)
    ab = float(sched.alphas_cumprod[seen[0][0]])
    assert torch.allclose(seen[0][1], math.sqrt(ab) * z0 + math.sqrt(1 - ab) * initial_noise(gens, z0.shape[1:]), atol=1e-5)


def test_img2img_timesteps_sd_vlcp():
    sd = make_scheduler("ddim", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                     steps_offset=1, timestep_spacing="leading", set_alpha_to_one=False))
    kept = img2img_timesteps(sd, 50, 0.7)
    assert (len(kept), kept[0], kept[-1]) == (35, 681, 1)
    with pytest.raises(ConfigError, match="strength"):
        img2img_timesteps(sd, 50, 0.0)


def test_v_prediction_unet_runs():
    unet = random_unet()
    sched = make_scheduler("ddim", prediction_type="v_prediction")
    out = sample_text(unet, None, torch.randn(1, 5, 16), [1], uncond_states=torch.zeros(1, 5, 16), num_steps=4,
                      scheduler=sched)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


# --- GPU ------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_bf16_sampling_close_to_cpu_fp32():
    "On a GPU: a DiT samples under bf16 autocast; the exact Gaussian chain gives the right class means."
    means = torch.stack([torch.full((4, 8, 8), v) for v in (-1.0, 2.0)])
    labels, seeds = torch.tensor([0, 1, 1]), [derive_seed(9, i) for i in range(3)]
    out = sample_dit(random_dit("tiny", num_embeds_ada_norm=2).cuda(), random_vae().cuda(), labels, seeds, num_steps=10)
    assert out.shape == (3, 3, 16, 16) and out.is_cuda and torch.isfinite(out).all()
    ref = sample_dit(random_dit("tiny", num_embeds_ada_norm=2), random_vae(), labels, seeds, num_steps=10, amp=False)
    assert rel_err(out.float().cpu(), ref) < 5e-2                      # bf16 on GPU ≈ fp32 on CPU, same seeds
    model = GaussianDenoiser(means, 0.5, make_scheduler("ddpm").alphas_cumprod).cuda()
    z = sample_dit(model, None, labels.repeat(20), [derive_seed(9, i) for i in range(60)], num_steps=50, cfg_scale=None)
    assert abs(z[labels.repeat(20).cuda() == 1].mean().item() - 2.0) < 0.05




# --- per-item context, hooks with gradients ---------------------------------------------------------------------

def _gauss():
    from ddrepro.diffusion import GaussianDenoiser
    means = torch.stack([torch.full((4, 8, 8), v) for v in (-1.0, 0.5, 2.0)])
    return GaussianDenoiser(means, 0.5, make_scheduler("ddpm").alphas_cumprod)


def test_hooks_receive_labels_item_ids_seeds_and_payload(tiny):
    from ddrepro.diffusion import Items
    dit, _ = tiny
    seen = []
    def spy(x_t, t, eps, x0_hat, ctx):
        seen.append((ctx.step, ctx.labels.tolist(), ctx.item_ids, ctx.seeds, ctx.payload["tag"]))
        return eps
    items = Items([3, 1], [21, 22], ids=["3/0", "1/4"], payload={"tag": ["a", "b"]})
    a = sample_dit(dit, None, [3, 1], [21, 22], num_steps=3, guidance=spy, items=items)
    assert seen == [(i, [3, 1], ["3/0", "1/4"], [21, 22], ["a", "b"]) for i in range(3)]
    assert torch.equal(a, sample_dit(dit, None, [3, 1], [21, 22], num_steps=3))     # λ = 0: unchanged
    with pytest.raises(ConfigError, match="3 items for a batch of 2"):
        sample_dit(dit, None, [3, 1], [21, 22], num_steps=2, items=Items([0, 1, 2], [1, 2, 3]))


def test_noise_hook_takes_gradient_steps_inside_the_no_grad_sampler():
    from ddrepro.diffusion import predict_x0
    gauss = _gauss()
    grad_modes = []
    class Towards:
        requires_grad = True
        def __call__(self, step, x_t, mean, sigma, ctx):
            grad_modes.append(torch.is_grad_enabled())
            z = ctx.randn(x_t.shape[1:]).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=0.3)
            for _ in range(3):
                x_prev = mean + sigma * z
                loss = ((predict_x0(x_prev, ctx.eps_fn(x_prev, ctx.t_prev), ctx.alpha_bar_prev) - 1.0) ** 2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
            return z
    lab, seeds = [0] * 16, list(range(16))                                  # class 0: data mean −1
    plain = sample_dit(gauss, None, lab, seeds, num_steps=20, cfg_scale=None, sampler="ddpm")
    opt = sample_dit(gauss, None, lab, seeds, num_steps=20, cfg_scale=None, sampler="ddpm", noise=Towards())
    assert abs(plain.mean().item() + 1) < 0.15
    assert opt.mean().item() > plain.mean().item() + 0.5                   # moved toward the target +1
    assert grad_modes and all(grad_modes) and not opt.requires_grad


# --- denoising error, UNet feature taps, the VAE pair -----------------------------------------------------------

def test_denoising_error_mean_is_the_dit_loss_and_cond_equal_null_gives_zero_difference(tiny):
    import torch.nn.functional as F
    from ddrepro.diffusion import denoising_error, dit_loss, noisy_latents
    dit, _ = tiny
    sch = make_scheduler("ddpm")
    z0, y = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 4])
    xt, t, eps = noisy_latents(z0, sch, torch.Generator().manual_seed(1))
    err = denoising_error(dit, xt, t, eps, {"class_labels": y})
    assert err.shape == (5, 4, 8, 8)
    ref = F.mse_loss(dit(xt, timestep=t, class_labels=y).sample.float(), eps)      # computed independently
    assert abs(err.mean().item() - ref.item()) < 1e-6
    assert abs(dit_loss(dit, z0, y, sch, 0.0, generator=torch.Generator().manual_seed(1)).item() - ref.item()) < 1e-6
    loc = denoising_error(dit, xt, t, eps, {"class_labels": y}, reduce="location")
    assert loc.shape == (5, 8, 8) and torch.allclose(loc, err.mean(1))
    c, n = denoising_error(dit, xt, t, eps, {"class_labels": y}, {"class_labels": y})
    assert (c - n).abs().max().item() == 0.0
    c, n = denoising_error(dit, xt, t, eps, {"class_labels": y}, {"class_labels": torch.full_like(y, 10)})
    assert torch.allclose(c, err, atol=1e-6) and not torch.allclose(c, n)


def test_unet_feature_taps_on_the_zoo_unet():
    from ddrepro import zoo
    from ddrepro.diffusion import unet_features
    unet, te = zoo.load("unet"), zoo.load("text_encoder")
    states = te.encode(["A photo of a Bag", "A photo of a Sandal"])
    x = torch.randn(2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=torch.Generator().manual_seed(0))
    feats = unet_features(unet, x, 261, {"encoder_hidden_states": states})
    n = len(unet.up_blocks)
    assert len(feats) == n
    chans = list(reversed(unet.config.block_out_channels))
    for i, f in enumerate(feats):
        assert f.shape[:2] == (2, chans[i]) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert feats[-1].shape[-1] == unet.config.sample_size                    # the last up block is at full latent size
    assert all(len(b._forward_hooks) == 0 for b in unet.up_blocks)
    again = unet_features(unet, x, 261, {"encoder_hidden_states": states}, blocks=[1])
    assert torch.equal(again[0], feats[1])


def test_encode_latents_is_the_posterior_mean_or_sample_times_the_scale():
    from ddrepro.diffusion import encode_latents, encode_posterior
    vae = random_vae()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mean, std = encode_posterior(vae, x)
    sf = vae.config.scaling_factor
    assert torch.equal(encode_latents(vae, x), mean * sf)
    gens = generators_for([1, 2, 3])
    eps = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators_for([1, 2, 3])])
    assert torch.allclose(encode_latents(vae, x, gens), (mean + std * eps) * sf)
    assert torch.equal(encode_latents(vae, (x * 255).round().to(torch.uint8)), encode_latents(vae, (x * 255).round() / 255))
    with pytest.raises(Exception, match=r"in \[0,1\]"):
        encode_posterior(vae, x * 2 - 1)
