"""Unit tests of ddrepro.dsco beyond the notebook's hand examples: invariances and brute-force references for the
NOpt losses (Eqs. 19-28), the projector's group structure, gradients reaching the noise through the projector, the
Dope Trigger (Eq. 30) and the confusion score (Eq. 31); NOpt in the sampler (Eq. 29, the noise hook, the diffused and
template targets, nopt_sample) on tiny random models, and one short smoke with the embedded zoo DiT."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrepro.core import ConfigError, DataError
from ddrepro.dsco import (PROJECTORS, AlignTarget, GroupedProjector, ProjectorConfig, absn2, align_loss, align_loss_to,
                          align_target, channel_mean, channel_std, confusion_score, cross_normalize, df_align_loss,
                          diffused_count, dope_trigger, occupation_loss, projector_features, reality_loss, stats_loss)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def align_reference(f_syn, f_diff, lam):
    "Eqs. 20-21 written out channel by channel with Python loops (float64)."
    fs, fd = np.asarray(f_syn, np.float64), np.asarray(f_diff, np.float64)
    n_s, J = fs.shape
    chunk = len(fd) // n_s
    total = 0.0
    for j in range(J):
        m, s = fd[:, j].mean(), fd[:, j].std()           # numpy std: population (ddof=0)
        d = np.sort((fd[:, j] - m) / s)
        x = np.sort((fs[:, j] - m) / s)
        for k in range(n_s):
            piv = d[k * chunk:(k + 1) * chunk].mean()
            total += abs(x[k] - piv) + (x[k] - piv) ** 2
    return lam * n_s * total


# ----------------------------------------------------------------------------------------------- Eqs. 18-19

def test_reality_loss_is_zero_for_noise_of_norm_exactly_sqrt_chw():
    for shape in [(4, 8, 8), (4, 32, 32)]:
        e = torch.randn(6, *shape, generator=gen(1), dtype=torch.float64)
        e = e / e.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) * math.sqrt(math.prod(shape))
        assert reality_loss(e).item() == pytest.approx(0.0, abs=1e-9)


def test_reality_loss_matches_its_formula_and_its_gradient_is_radial():
    e = torch.randn(5, 4, 8, 8, generator=gen(2), dtype=torch.float64) * torch.tensor([0.5, 0.9, 1.0, 1.3, 2.0],
                                                                                        dtype=torch.float64).reshape(-1, 1, 1, 1)
    norms = e.flatten(1).norm(dim=1).numpy()
    expected = sum(abs(n - 16) + (n - 16) ** 2 for n in norms)
    e.requires_grad_()
    loss = reality_loss(e)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    # d/dε absn²(‖ε‖ − 16) = (sign(‖ε‖ − 16) + 2(‖ε‖ − 16)) · ε/‖ε‖: along ε, outward when too long, inward when too short
    for s, n in enumerate(norms):
        g = e.grad[s].flatten().numpy()
        coef = (np.sign(n - 16) + 2 * (n - 16)) / n
        np.testing.assert_allclose(g, coef * e[s].detach().flatten().numpy(), rtol=1e-10, atol=1e-12)


def test_absn2_accepts_python_numbers_and_keeps_shape():
    assert absn2(torch.zeros(2, 3)).shape == (2, 3)
    assert absn2(-1.5).item() == pytest.approx(3.75)


# ----------------------------------------------------------------------------------------------- projector

def test_projector_groups_are_independent_after_the_first_conv():
    "Output channels of group g depend only on the first conv's channels of group g (16 independent projectors)."
    P = GroupedProjector("embedded", seed=0)
    h = torch.randn(1, 64, 8, 8, generator=gen(3))
    tail = P.net[1:]
    h2 = h.clone()
    h2[:, :4] += torch.randn(1, 4, 8, 8, generator=gen(4))          # perturb group 0 of the 64 first-conv channels
    d = (tail(h2) - tail(h)).abs().amax(dim=(0, 2, 3))             # (256,)
    assert d[:16].min() > 0 and d[16:].max() == 0                  # only group 0's 256/16 = 16 output channels move


def test_projector_seed_is_reproducible_and_is_independent_of_the_global_rng():
    torch.manual_seed(123)
    a = GroupedProjector("embedded", seed=7)
    torch.manual_seed(999)
    b = GroupedProjector("embedded", seed=7)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert GroupedProjector("embedded", seed=7).training is False


def test_projector_config_validation_and_output_shape():
    assert PROJECTORS["paper"].downsample == 8 and PROJECTORS["embedded"].downsample == 4
    P = GroupedProjector(ProjectorConfig(in_channels=3, widths=(32, 64), groups=8), seed=0)
    assert P(torch.zeros(2, 3, 6, 6)).shape == (2, 64, 3, 3)
    with pytest.raises(ConfigError, match="expected an integer"):
        GroupedProjector("embedded", seed=1.5)
    with pytest.raises(DataError, match="multiples of 4"):
        GroupedProjector("embedded")(torch.zeros(1, 4, 6, 6))
    with pytest.raises(ConfigError, match="chunk=0"):
        projector_features(P, torch.zeros(2, 3, 6, 6), chunk=0)


# ----------------------------------------------------------------------------------------------- Eqs. 20-21

def test_align_loss_matches_a_loop_reference():
    fs = torch.randn(4, 6, generator=gen(5), dtype=torch.float64)
    fd = torch.randn(20, 6, generator=gen(6), dtype=torch.float64) * 3 + 1
    for lam in (1.0, 5e-4):
        assert align_loss(fs, fd, lam=lam).item() == pytest.approx(align_reference(fs, fd, lam), rel=1e-10)


def test_align_loss_is_invariant_to_row_order_and_to_a_shared_affine_map():
    fs = torch.randn(5, 3, generator=gen(7), dtype=torch.float64)
    fd = torch.randn(25, 3, generator=gen(8), dtype=torch.float64)
    base = align_loss(fs, fd, lam=1.0).item()
    assert align_loss(fs[torch.randperm(5, generator=gen(9))], fd, lam=1.0).item() == pytest.approx(base, rel=1e-12)
    assert align_loss(fs, fd[torch.randperm(25, generator=gen(10))], lam=1.0).item() == pytest.approx(base, rel=1e-12)
    a, b = torch.tensor([0.1, 2.0, 50.0], dtype=torch.float64), torch.tensor([-3.0, 0.0, 7.0], dtype=torch.float64)
    assert align_loss(a * fs + b, a * fd + b, lam=1.0).item() == pytest.approx(base, rel=1e-9)   # scale-invariance


def test_align_loss_is_zero_when_the_candidates_are_the_chunk_means():
    fd = torch.randn(30, 4, generator=gen(11), dtype=torch.float64)
    t = align_target(fd, 6)
    fs = t.pivots * t.std + t.mean                                 # back in feature units
    assert align_loss(fs, fd, lam=1.0).item() == pytest.approx(0.0, abs=1e-10)
    assert align_loss(fs.flip(0), fd, lam=1.0).item() == pytest.approx(0.0, abs=1e-10)
    assert torch.all(t.pivots[1:] >= t.pivots[:-1])                # ascending per channel


def test_align_loss_gradient_reaches_the_candidates_and_matches_finite_differences():
    fs = torch.randn(3, 2, generator=gen(12), dtype=torch.float64).requires_grad_()
    fd = torch.randn(12, 2, generator=gen(13), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: align_loss(x, fd, lam=1.0), (fs,))
    align_loss(fs, fd).backward()
    assert fs.grad.abs().min() > 0


def test_align_loss_to_reuses_a_target_and_checks_its_shape():
    fd = torch.randn(10, 3, generator=gen(14))
    fs = torch.randn(5, 3, generator=gen(15))
    t = align_target(fd, 5)
    assert isinstance(t, AlignTarget) and t.pivots.shape == (5, 3)
    assert align_loss_to(fs, t).item() == pytest.approx(align_loss(fs, fd).item(), rel=1e-6)
    with pytest.raises(DataError, match=r"f_syn has shape \(2, 3\) but the align target has \(5, 3\)"):
        align_loss_to(fs[:2], t)
    # N_S = 1: the single pivot is the mean, 0 after normalisation
    assert align_loss(fs[:1], fd, lam=1.0).item() == pytest.approx(
        absn2((fs[:1] - fd.mean(0)) / fd.std(0, unbiased=False)).sum().item(), rel=1e-5)


def test_diffused_count_is_the_smallest_valid_multiple():
    for n_real, n_s in itertools.product([1, 3, 7, 1300], [1, 2, 10, 33, 100]):
        nd = diffused_count(n_real, n_s)
        assert nd % n_s == 0 and nd >= 5 * n_real and nd // n_s >= 5
        smaller = nd - n_s
        assert not (smaller >= 5 * n_real and smaller // n_s >= 5)


# ----------------------------------------------------------------------------------------------- Eqs. 22-28

def test_occupation_loss_matches_brute_force_and_is_permutation_and_scale_invariant():
    f = torch.randn(6, 3, 2, 2, generator=gen(16), dtype=torch.float64)
    v = f.flatten(1).numpy()
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    ref = sum(max(cos(v[s], v[t]) for t in range(6) if t != s) for s in range(6))
    assert occupation_loss(f).item() == pytest.approx(ref, rel=1e-12)
    assert occupation_loss(f[torch.randperm(6, generator=gen(17))]).item() == pytest.approx(ref, rel=1e-12)
    scale = torch.tensor([0.1, 1, 2, 3, 4, 50], dtype=torch.float64).reshape(-1, 1, 1, 1)
    assert occupation_loss(f * scale).item() == pytest.approx(ref, rel=1e-12)


def test_stats_loss_against_hand_formula_and_code_scale():
    f = torch.randn(4, 3, 2, 2, generator=gen(18), dtype=torch.float64)
    m, s = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    fb = (f - m.reshape(1, 3, 1, 1)) / s.reshape(1, 3, 1, 1)
    mu = fb.permute(1, 0, 2, 3).reshape(3, -1).mean(1)
    sd = fb.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False)
    expected = (mu.abs() + mu ** 2).sum() + ((sd - 1).abs() + (sd - 1) ** 2).sum()
    assert stats_loss(f, m, s).item() == pytest.approx(expected.item(), rel=1e-12)
    assert stats_loss(f, m, s, scale=4).item() == pytest.approx(4 * expected.item(), rel=1e-12)
    assert stats_loss(f, channel_mean(f), channel_std(f)).item() == pytest.approx(0.0, abs=1e-10)
    total = df_align_loss(f, m, s, stats_scale=4)
    assert total.item() == pytest.approx(1e-3 * 4 * expected.item() + 10 * occupation_loss(fb).item(), rel=1e-12)


def test_cross_normalize_of_pooled_features_and_bad_std():
    f = torch.randn(5, 4, generator=gen(19))
    out = cross_normalize(f, channel_mean(f), channel_std(f))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out.std(0, unbiased=False).numpy(), np.ones(4), rtol=1e-5)
    with pytest.raises(DataError, match="first: channel 2"):
        cross_normalize(f, torch.zeros(4), torch.tensor([1.0, 1.0, float("nan"), 1.0]))


def test_noise_gradients_through_the_projector_reduce_both_alignment_losses():
    """A miniature NOpt step on the embedded scale: SGD on ε with z = μ + σε, P frozen. L_real + L_align (DA) and
    L_real + L_align (DF) both go down, and the projector's weights do not change."""
    P = GroupedProjector("embedded", seed=0)
    w0 = P.net[0].weight.clone()
    mu = torch.zeros(4, 4, 8, 8)
    sigma = 0.8
    z_diff = torch.randn(20, 4, 8, 8, generator=gen(20)) * 0.6 + 0.3
    with torch.no_grad():
        target = align_target(projector_features(P, z_diff), 4)
        f_temp = projector_features(P, z_diff, pooled=False)
        t_mean, t_std = channel_mean(f_temp), channel_std(f_temp)
    losses = {
        "da": lambda e: reality_loss(e) + align_loss_to(projector_features(P, mu + sigma * e), target),
        "df": lambda e: reality_loss(e) + df_align_loss(projector_features(P, mu + sigma * e, pooled=False), t_mean, t_std),
    }
    for name, loss_fn in losses.items():
        eps = torch.randn(4, 4, 8, 8, generator=gen(21)).requires_grad_()
        opt = torch.optim.SGD([eps], lr=0.01, momentum=0.9)
        first = loss_fn(eps).item()
        for _ in range(15):
            opt.zero_grad()
            loss = loss_fn(eps)
            loss.backward()
            opt.step()
        assert loss_fn(eps).item() < first, name
    assert torch.equal(P.net[0].weight, w0)


# ----------------------------------------------------------------------------------------------- Eqs. 30-31

def test_dope_trigger_imagenet_like_schedule_and_validation():
    t = dope_trigger([10, 50, 100, 150], [400_000, 700_000, 740_000, 770_000], num_classes=1000)
    np.testing.assert_allclose(t.gains, [7.5, 0.8, 0.6])
    assert t.on.tolist() == [False, True, True] and t.base_ipc == 50
    assert dope_trigger([10, 50], [100, 300], num_classes=10, threshold=0.1).base_ipc is None   # gain 0.5 > 0.1
    with pytest.raises(ConfigError, match="num_classes=0"):
        dope_trigger([10, 50], [1, 2], num_classes=0)
    with pytest.raises(DataError, match="non-negative"):
        dope_trigger([10, 50], [1, float("nan")], num_classes=10)


def test_confusion_score_sign_and_ranking_on_random_predictions():
    logits_s = torch.randn(200, 7, generator=gen(22))
    logits_t = torch.randn(200, 7, generator=gen(23))
    pS, pT = logits_s.softmax(1), logits_t.softmax(1)
    conf = confusion_score(pS, pT)
    assert conf.shape == (200,)
    assert torch.equal(conf > 0, pS.argmax(1) != pT.argmax(1))
    # the authors' code: "clarity" = p_S^{c_T} − max_{c≠c_T} p_S^c, sorted ascending; our score sorted descending
    cT = pT.argmax(1)
    clarity = torch.stack([pS[i, cT[i]] - torch.cat([pS[i, :cT[i]], pS[i, cT[i] + 1:]]).max() for i in range(200)])
    torch.testing.assert_close(conf, -clarity)
    assert torch.equal(conf.argsort(descending=True, stable=True)[:20], clarity.argsort(stable=True)[:20])
    np.testing.assert_allclose(confusion_score(pS.numpy(), pT.numpy()), conf.numpy())


def test_confusion_score_rejects_logits_and_bad_shapes():
    with pytest.raises(DataError, match="not probabilities"):
        confusion_score(torch.randn(3, 4, generator=gen(24)), torch.full((3, 4), 0.25))
    with pytest.raises(DataError, match=r"C ≥ 2, got shape \(3, 1\)"):
        confusion_score(torch.ones(3, 1), torch.ones(3, 1))


# ----------------------------------------------------------------------------------------------- NOpt in the sampler (Eq. 29)

from ddrepro import zoo                                                                  # noqa: E402
from ddrepro.diffusion import Items, StepContext, generators_for, make_scheduler, sample_dit   # noqa: E402
from ddrepro.dsco import (DAAlign, DiffusedTarget, NOptConfig, NOptNoise, TemplateTarget, latin_normal,   # noqa: E402
                          load_template_stats, make_template_stats, model_fingerprint, nopt_loss, nopt_sample,
                          record_template_stats, template_stats_path)


def step_ctx(seeds, label=3, step=0, num_steps=10, ab=0.3, abp=0.35):
    return StepContext(step=step, num_steps=num_steps, t=500, alpha_bar=ab, alpha_bar_prev=abp, cond={},
                       generators=generators_for(seeds), items=Items([label] * len(seeds), seeds))


@pytest.fixture(scope="module")
def tiny_dit():
    return zoo.tiny("dit")


@pytest.fixture(scope="module")
def own_latents(tiny_dit):
    "12 vanilla samples of class 1 of the tiny DiT: a 'real' class the DiT fits, as in the paper."
    return sample_dit(tiny_dit, None, [1] * 12, list(range(100, 112)), num_steps=6, cfg_scale=2.0,
                      scheduler=make_scheduler("ddpm"))


def test_hook_lowers_the_alignment_loss_of_a_step_against_the_plain_noise():
    P = GroupedProjector("embedded", seed=0)
    z0 = torch.randn(40, 4, 8, 8, generator=gen(2))
    x = torch.randn(8, 4, 8, 8, generator=gen(3))
    mean, sigma = 0.9 * x, torch.full((8, 1, 1, 1), 0.6)
    seeds = list(range(20, 28))
    target = DiffusedTarget(P, z0, n_s=8, seed=0)
    hook = NOptNoise(target, iters=100)
    eps = hook(0, x, mean, sigma, step_ctx(seeds))
    plain = step_ctx(seeds).randn((4, 8, 8))
    # the same step target, rebuilt from a fresh generator with the same seed, scores both noises
    align = DiffusedTarget(P, z0, n_s=8, seed=0).at_step(step_ctx(seeds))
    before, after = align(mean + sigma * plain).item(), align(mean + sigma * eps).item()
    h = hook.history[0]
    assert h["align_start"] == pytest.approx(before, rel=1e-5) and h["align_end"] == pytest.approx(after, rel=1e-5)
    assert after < 0.7 * before, (before, after)
    print(f"L_align before {before:.4f} after {after:.4f}, {h['seconds']:.2f} s for 100 iterations")


def test_sort_false_and_matched_pairing_are_real_options():
    P = GroupedProjector("embedded", seed=0)
    z0 = torch.randn(20, 4, 8, 8, generator=gen(4))
    ctx = step_ctx(list(range(4)))
    a = DiffusedTarget(P, z0, 4, seed=1).at_step(ctx)
    b = DiffusedTarget(P, z0, 4, seed=1, sort=False).at_step(ctx)
    z = torch.randn(4, 4, 8, 8, generator=gen(5))
    assert b(z).item() >= a(z).item()
    f_hat = (projector_features(P, z) - a.target.mean) / a.target.std
    assert b(z).item() == pytest.approx(5e-4 * 4 * absn2(f_hat - a.target.pivots).sum().item(), rel=1e-5)
    m = DiffusedTarget(P, z0, 4, seed=1, pairing="matched")
    assert torch.equal(m.diffused(0.35), DiffusedTarget(P, z0, 4, seed=1).diffused(0.35))


def test_reality_term_keeps_noise_norms_near_sqrt_chw():
    "With a strong alignment weight the norms drift without L_real; with it they stay near √(CHW) = 16."
    P = GroupedProjector("embedded", seed=0)
    z0 = torch.randn(40, 4, 8, 8, generator=gen(6)) * 3 + 1          # a target far from the candidates
    x = torch.randn(8, 4, 8, 8, generator=gen(7))
    mean, sigma = 0.5 * x, torch.full((8, 1, 1, 1), 0.8)
    out = {}
    for w in (1.0, 0.0):
        hook = NOptNoise(DiffusedTarget(P, z0, 8, seed=0, lam=5e-3), iters=100, real_weight=w)
        eps = hook(0, x, mean, sigma, step_ctx(list(range(8))))
        out[w] = (eps.flatten(1).norm(dim=1) - 16).abs().max().item()
    print("max |‖ε‖ − 16| with L_real:", round(out[1.0], 3), " without:", round(out[0.0], 3))
    assert out[1.0] < 1.0 and out[0.0] > 2 * out[1.0]


def test_nopt_sample_lowers_the_loss_at_every_step_and_keeps_norms(tiny_dit, own_latents):
    r = nopt_sample(tiny_dit, None, 1, 4, real_latents=own_latents, num_steps=6, iters=20, cfg_scale=2.0)
    assert [h["step"] for h in r.history] == [0, 1, 2, 3, 4]
    assert all(h["loss_end"] < h["loss_start"] and h["align_end"] <= h["align_start"] + 1e-4 for h in r.history)
    assert all(abs(h["norm_min"] - 16) < 1 and abs(h["norm_max"] - 16) < 1 for h in r.history)
    assert r.settings["initial"] == "lhs" and r.settings["pairing"] == "code" and r.settings["class_seed"] == 1


@pytest.mark.parametrize("mode", ["da", "df"])
def test_iters_0_is_plain_sampling_bit_for_bit(tiny_dit, mode):
    vae = zoo.tiny("vae")
    r = nopt_sample(tiny_dit, vae, 2, 3, seed=5, num_steps=5, cfg_scale=3.0, iters=0, init="randn", mode=mode)
    plain = sample_dit(tiny_dit, vae, [2] * 3, r.seeds, num_steps=5, cfg_scale=3.0, scheduler=make_scheduler("ddpm"))
    assert torch.equal(r.images, plain) and r.history == []
    lhs = nopt_sample(tiny_dit, None, 2, 3, seed=5, num_steps=5, cfg_scale=3.0, iters=0, init="lhs", mode=mode)
    x_T = latin_normal(3, (4, 8, 8), torch.Generator().manual_seed(derive_seed_for(5 + 2)))
    ref = sample_dit(tiny_dit, None, [2] * 3, lhs.seeds, num_steps=5, cfg_scale=3.0, scheduler=make_scheduler("ddpm"),
                     latents=x_T)
    assert torch.equal(lhs.latents, ref)


def derive_seed_for(class_seed):
    from ddrepro.core import derive_seed
    return derive_seed(class_seed, "dsco-lhs")


def test_template_stats_match_a_direct_computation_and_do_not_depend_on_batching(tiny_dit):
    st = record_template_stats(tiny_dit, 4, n_temp=5, num_steps=4, cfg_scale=2.0, batch_size=2)
    st1 = record_template_stats(tiny_dit, 4, n_temp=5, num_steps=4, cfg_scale=2.0, batch_size=5)
    torch.testing.assert_close(st.mean, st1.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.std, st1.std, rtol=1e-5, atol=1e-6)
    # direct: capture the latent each step produces under plain sampling, project, Eqs. 22-23
    from ddrepro.core import derive_seed
    P = GroupedProjector("embedded", seed=0)
    seen = {}
    def capture(i, x, mean, sigma, ctx):
        z = ctx.randn(x.shape[1:], x.device)
        seen[i] = mean + sigma * z
        return z
    seeds = [derive_seed(0, "dsco-template", 4, k) for k in range(5)]
    sample_dit(tiny_dit, None, [4] * 5, seeds, num_steps=4, cfg_scale=2.0, scheduler=make_scheduler("ddpm"), noise=capture)
    for i in range(3):
        f = P(seen[i])
        torch.testing.assert_close(st.mean[i], channel_mean(f), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(st.std[i], channel_std(f), rtol=1e-4, atol=1e-5)


def test_template_stats_are_cached_once_and_reused(tiny_dit, tmp_path):
    calls = []
    h = tiny_dit.register_forward_hook(lambda *a: calls.append(1))
    try:
        a = make_template_stats(tiny_dit, 3, tmp_path, n_temp=4, num_steps=4, batch_size=4)
        n = len(calls)
        b = make_template_stats(tiny_dit, 3, tmp_path, n_temp=4, num_steps=4)
        assert n > 0 and len(calls) == n                     # second call: read from disk, no DiT forward
        c = load_template_stats(tmp_path, tiny_dit, 3, n_temp=4, num_steps=4)
    finally:
        h.remove()
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, c.std)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [Path(a.meta["path"]).name] and files[0].startswith("template_c3_s4_seed0_") and files[0].endswith(".pt")
    # every key component changes the file
    meta = {k: v for k, v in a.meta.items() if k != "path"}
    for k, v in [("seed", 1), ("num_steps", 5), ("label", 4), ("model", "x"), ("n_temp", 8)]:
        assert template_stats_path(tmp_path, {**meta, k: v}) != Path(a.meta["path"])
    with pytest.raises(DataError, match="no template statistics for class 3"):
        load_template_stats(tmp_path, zoo.tiny("dit", seed=1), 3, n_temp=4, num_steps=4)
    assert model_fingerprint(tiny_dit) == a.meta["model"] != model_fingerprint(zoo.tiny("dit", seed=1))


def test_df_nopt_uses_the_templates_projector_and_lowers_the_loss(tiny_dit, tmp_path):
    make_template_stats(tiny_dit, 1, tmp_path, n_temp=6, num_steps=5, cfg_scale=2.0, projector_seed=3)
    r = nopt_sample(tiny_dit, None, 1, 4, mode="df", template_dir=tmp_path, n_temp=6, num_steps=5, cfg_scale=2.0,
                    iters=15, template_projector_seed=3)
    assert len(r.history) == 4 and all(h["loss_end"] < h["loss_start"] for h in r.history)
    assert r.settings["initial"] == "randn"
    with pytest.raises(DataError, match="no template statistics"):           # projector seed is part of the key
        nopt_sample(tiny_dit, None, 1, 4, mode="df", template_dir=tmp_path, n_temp=6, num_steps=5, cfg_scale=2.0, iters=1)
    st = load_template_stats(tmp_path, tiny_dit, 1, n_temp=6, num_steps=5, cfg_scale=2.0, projector_seed=3)
    with pytest.raises(DataError, match="recorded with num_steps=5, but the sampler runs 6 steps"):
        nopt_sample(tiny_dit, None, 1, 4, mode="df", template=st, num_steps=6, cfg_scale=2.0, iters=1)


def test_nopt_errors_name_the_value_and_what_was_expected(tiny_dit, own_latents):
    kw = dict(num_steps=4, iters=2, cfg_scale=2.0)
    with pytest.raises(ConfigError, match=r"IPC \(N_S\) = 5 does not divide the diffused pool n_diff = 64"):
        nopt_sample(tiny_dit, None, 1, 5, real_latents=own_latents, n_diff=64, **kw)
    with pytest.raises(DataError, match="class 1 has 12 real latents; expected at least 13"):
        nopt_sample(tiny_dit, None, 1, 13, real_latents=own_latents, **kw)
    nopt_sample(tiny_dit, None, 1, 13, real_latents=own_latents, min_real=12, num_steps=3, iters=1, cfg_scale=2.0)
    with pytest.raises(DataError, match=r"real_latents have shape \(12, 4, 4, 4\); expected \(N_real, 4, 8, 8\)"):
        nopt_sample(tiny_dit, None, 1, 4, real_latents=own_latents[:, :, :4, :4], **kw)
    with pytest.raises(ConfigError, match="mode='df' needs template statistics"):
        nopt_sample(tiny_dit, None, 1, 4, mode="df", **kw)
    with pytest.raises(ConfigError, match="the data-free mode needs at least 2 images"):
        nopt_sample(tiny_dit, None, 1, 1, mode="df", **kw)
    with pytest.raises(ConfigError, match="3 seeds for ipc=4"):
        nopt_sample(tiny_dit, None, 1, 4, seeds=[1, 2, 3], **kw)
    with pytest.raises(ConfigError, match="pairing='same'"):
        NOptConfig(pairing="same")
    with pytest.raises(ConfigError, match="init='gauss'"):
        NOptConfig(init="gauss")
    with pytest.raises(ConfigError, match="projector_seed='all'"):
        NOptConfig(projector_seed="all")


def test_nopt_loss_gradient_is_sigma_times_the_latent_gradient_per_element():
    P = GroupedProjector("embedded", seed=1)
    mean = torch.randn(3, 4, 8, 8, generator=gen(8))
    sigma = torch.rand(3, 4, 8, 8, generator=gen(9)) + 0.1               # learned-range σ: per element
    tgt = align_target(projector_features(P, torch.randn(30, 4, 8, 8, generator=gen(10))), 3)
    align = DAAlign(P, tgt)
    eps = torch.randn(3, 4, 8, 8, generator=gen(11), requires_grad=True)
    nopt_loss(eps, mean, sigma, align, real_weight=0.0)[0].backward()
    z = (mean + sigma * eps.detach()).requires_grad_()
    align(z).backward()
    torch.testing.assert_close(eps.grad, sigma * z.grad)


def test_embedded_smoke_zoo_dit_on_fashion_mnist():
    "One short NOpt run with the embedded zoo DiT and VAE on real Fashion-MNIST latents of one class (~10 s on 2 cores)."
    import time
    from ddrepro.data import load_fashion_mnist
    from ddrepro.diffusion import encode_latents
    ds = load_fashion_mnist("train")
    dit, vae = zoo.load("dit"), zoo.load("vae")
    imgs = ds.images[ds.labels == 0][:40]
    z0 = encode_latents(vae, imgs, generators_for(range(40)))
    t0 = time.perf_counter()
    r = nopt_sample(dit, vae, 0, 4, real_latents=z0, num_steps=10, iters=10)
    base = nopt_sample(dit, vae, 0, 4, num_steps=10, iters=0)
    dt = time.perf_counter() - t0
    print(f"zoo DiT, IPC 4, 10 steps × 10 iterations: {dt:.1f} s; per step L_align",
          [f"{h['align_start']:.2f}→{h['align_end']:.2f}" for h in r.history])
    assert r.images.shape == (4, 3, 32, 32) and len(r.history) == 9
    assert all(h["loss_end"] < h["loss_start"] for h in r.history)
    assert not torch.equal(r.images, base.images)


# ----------------------------------------------------------------------------------------------- App. B, Table 13

from ddrepro.dsco import (PAPER_TABLE13, expected_occupied, occupied_regions, occupied_std,   # noqa: E402
                          table13_frame)


def test_table13_monte_carlo_matches_closed_form_and_paper():
    t = table13_frame()
    assert list(t.index) == ["mean", "std"] and t.shape == (2, 9)
    for n, (mean, std) in PAPER_TABLE13.items():
        mc_mean, mc_std = occupied_regions(n, 500, 0)
        assert t[(n, "MC")].tolist() == [mc_mean, mc_std]
        assert t[(n, "paper")].tolist() == [mean, std]
        assert abs(mc_mean - expected_occupied(n)) < 0.15 and abs(mc_mean - mean) < 0.15, n
        assert abs(mc_std - std) < 0.3 and abs(occupied_std(n) - std) < 0.1, n


def test_occupied_closed_form_against_enumeration_and_a_long_monte_carlo():
    for n in (1, 2, 3, 4):
        k = [len(set(d)) for d in itertools.product(range(n), repeat=n)]        # all n^n equally likely draws
        assert expected_occupied(n) == pytest.approx(np.mean(k), abs=1e-12)
        assert occupied_std(n) == pytest.approx(np.std(k), abs=1e-12)
    m, s = occupied_regions(30, n_exp=20000, seed=1)
    assert abs(m - expected_occupied(30)) < 4 * occupied_std(30) / 20000 ** 0.5
    assert s == pytest.approx(occupied_std(30), rel=0.03)
    assert expected_occupied(10 ** 6) / 10 ** 6 == pytest.approx(1 - math.exp(-1), abs=1e-6)
    assert occupied_regions(7, seed=2) == occupied_regions(7, seed=2) != occupied_regions(7, seed=3)
    with pytest.raises(ConfigError, match="n_exp=1: expected an integer ≥ 2"):
        occupied_regions(5, n_exp=1)


# ----------------------------------------------------------------------------------------------- Figs. 5-8

import matplotlib                                                                        # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt                                                          # noqa: E402

from ddrepro.data import ClassMap, ImageSet                                              # noqa: E402
from ddrepro.dsco import (LatentTSNE, confusion_ordered_indices, group_distance_matrix, latent_tsne,   # noqa: E402
                          plot_class_grids, plot_confusion_ordered, plot_group_distances, plot_latent_tsne)

CM3 = ClassMap("toy3", ("a", "b", "c"), ("ant", "bee", "cat"), ("ant", "bee", "cat"))


def toy_set(labels, seed=0, size=8):
    labels = torch.as_tensor(labels)
    imgs = torch.randint(0, 256, (len(labels), 3, size, size), dtype=torch.uint8, generator=gen(seed))
    return ImageSet(CM3, labels, images=imgs)


def test_plot_class_grids_one_panel_per_set_with_the_first_images_of_the_class():
    real, syn = toy_set([0, 1, 1, 2, 1, 1, 1]), toy_set([1, 1, 0, 0, 2, 2], seed=1)
    fig = plot_class_grids({"real": real, "syn": syn}, 1, n=3, nrow=2)
    try:
        assert len(fig.axes) == 2
        assert [a.get_title() for a in fig.axes] == ["real: first 3 of 5", "syn: first 2 of 2"]
        grid = fig.axes[0].images[0].get_array()
        assert grid.shape == (2 * 10 - 2, 2 * 10 - 2, 3)                          # 2 × 2 cells of 8 px, 2 px gaps
        np.testing.assert_allclose(grid[:8, 10:18], real.images[2].permute(1, 2, 0).numpy() / 255, atol=1e-6)
        np.testing.assert_allclose(grid[10:18, :8], real.images[4].permute(1, 2, 0).numpy() / 255, atol=1e-6)
        assert (grid[10:, 10:] == 1).all()                                        # 3 images in 4 cells: the last white
    finally:
        plt.close(fig)
    with pytest.raises(ConfigError, match="label=3: expected a class index of real's class map, 0..2"):
        plot_class_grids({"real": real}, 3)
    with pytest.raises(DataError, match="syn: no images of class 1 \\(bee\\)"):
        plot_class_grids({"real": real, "syn": syn.subset([2, 3])}, 1)
    with pytest.raises(DataError, match="expected a non-empty dict"):
        plot_class_grids({}, 0)


def test_latent_tsne_joint_embedding_shapes_and_plot():
    real = torch.randn(30, 4, 4, 4, generator=gen(1))
    sets = {"A": torch.randn(5, 4, 4, 4, generator=gen(2)), "B": torch.randn(7, 4, 4, 4, generator=gen(3))}
    emb = latent_tsne(sets, real, seed=0, max_iter=250)
    assert isinstance(emb, LatentTSNE) and emb.real.shape == (30, 2)
    assert {k: v.shape for k, v in emb.sets.items()} == {"A": (5, 2), "B": (7, 2)}
    assert emb.perplexity == pytest.approx(41 / 3) and emb.pca_dims == 50                # 42 points < 30·3 + 1
    again = latent_tsne(sets, real, seed=0, max_iter=250)
    np.testing.assert_allclose(again.real, emb.real, atol=1e-6)
    fig = plot_latent_tsne(emb, "bee")
    try:
        assert len(fig.axes) == 2 and fig.axes[0].get_title() == "A: 5 synthetic on 30 real"
        assert len(fig.axes[1].collections) == 2                                  # real points, then the set's
    finally:
        plt.close(fig)
    with pytest.raises(DataError, match="differ from the real latents' 64"):
        latent_tsne({"A": torch.randn(3, 4, 2, 2)}, real)
    with pytest.raises(DataError, match="latent_sets\\['A'\\]: expected a non-empty floating-point tensor"):
        latent_tsne({"A": torch.zeros(3, 4, 4, 4, dtype=torch.long)}, real)
    with pytest.raises(DataError, match="3 latents in all"):
        latent_tsne({"A": real[:1]}, real[:2])


def test_confusion_ordered_indices_and_plot():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    conf = rng.uniform(-1, 1, size=60)
    cls = np.nonzero(labels == 2)[0]
    srt = cls[np.argsort(conf[cls], kind="stable")]
    assert confusion_ordered_indices(conf, labels, 2, 1000).tolist() == srt.tolist()
    assert confusion_ordered_indices(conf, labels, 2, 4, "lowest").tolist() == srt[:4].tolist()
    assert confusion_ordered_indices(conf, labels, 2, 4, "highest").tolist() == srt[-4:].tolist()
    spread = confusion_ordered_indices(conf, labels, 2, 5)
    assert spread[0] == srt[0] and spread[-1] == srt[-1] and len(set(spread.tolist())) == 5
    assert (np.diff(conf[spread]) > 0).all()
    real = toy_set(labels.tolist())
    fig = plot_confusion_ordered(real, conf, 2, n=5, per_row=3)
    try:
        assert len(fig.axes) == 6                                                 # 2 rows × 3, the last one empty
        titles = [a.get_title() for a in fig.axes]
        assert titles[:5] == [f"{conf[i]:+.3f}  #{int(np.nonzero(srt == i)[0][0])}" for i in spread] and titles[5] == ""
    finally:
        plt.close(fig)
    with pytest.raises(DataError, match="conf has shape \\(59,\\) and labels \\(60,\\)"):
        plot_confusion_ordered(real, conf[:59], 2)
    with pytest.raises(ConfigError, match="pick='top'"):
        confusion_ordered_indices(conf, labels, 2, pick="top")


def group_distance_reference(z, y, conf, g, top):
    "Fig. 8 by brute force: Python loops over the ranked images."
    order = sorted(range(len(conf)), key=lambda i: (-conf[i], i))[:top]
    size = top // g
    grp = {i: k // size for k, i in enumerate(order)}
    out = np.full((g, g), np.nan)
    for a in range(g):
        for b in range(g):
            d = [float(np.linalg.norm(z[i] - z[j])) for i in order for j in order
                 if grp[i] == a and grp[j] == b and i != j and y[i] == y[j]]
            if d: out[a, b] = np.mean(d)
    return out


def test_group_distance_matrix_hand_case_brute_force_and_symmetry():
    z = torch.tensor([0., 1, 3, 6]).reshape(4, 1)
    np.testing.assert_allclose(group_distance_matrix(z, [0, 0, 0, 0], [.9, .8, .2, .1], n_groups=2), [[1, 4], [4, 3]])
    np.testing.assert_allclose(group_distance_matrix(z, [0, 0, 0, 0], [.1, .2, .8, .9], n_groups=2), [[3, 4], [4, 1]])
    rng = np.random.default_rng(1)
    zr = torch.randn(23, 2, 3, 3, generator=gen(5), dtype=torch.float64)
    y, conf = rng.integers(0, 3, size=23), rng.uniform(size=23)
    conf[5] = conf[6]                                                             # a tie: lower index first
    ref = group_distance_reference(zr.flatten(1).numpy(), y, conf, 4, 20)
    for chunk in (1024, 3):
        m = group_distance_matrix(zr, torch.as_tensor(y), conf, n_groups=4, top=20, chunk=chunk)
        np.testing.assert_allclose(m, ref, rtol=1e-10)
        assert (m == m.T).all()
    np.testing.assert_allclose(group_distance_matrix(zr, y, conf, n_groups=4),   # top=None: 23 → 20
                               group_distance_matrix(zr, y, conf, n_groups=4, top=20))
    fig = plot_group_distances(ref)
    try:
        assert len(fig.axes) == 2                                                 # heatmap + colour bar
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "2", "3", "4"]
    finally:
        plt.close(fig)
    with pytest.raises(ConfigError, match="top=21: expected a multiple of n_groups=4"):
        group_distance_matrix(zr, y, conf, n_groups=4, top=21)
    with pytest.raises(ConfigError, match="top=24: expected at most the 23 latents"):
        group_distance_matrix(zr, y, conf, n_groups=4, top=24)
    with pytest.raises(DataError, match="finite confusion scores"):
        group_distance_matrix(zr, y, np.full(23, np.nan))
    with pytest.raises(DataError, match="expected a square"):
        plot_group_distances(np.zeros((2, 3)))


# ----------------------------------------------------------------------------------------------- bad input

from ddrepro.dsco import (DsCoConfig, class_latents, dope, dope_indices, doping_count, doping_order,   # noqa: E402
                          score_real, synthesize_set)


class _Fixed(torch.nn.Module):
    "A 'network' with `k` outputs: logits = the mean of the first colour channel times (1, 2, …, k)."
    def __init__(self, k):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(1., k + 1))

    def forward(self, x):
        return x[:, :1].mean((2, 3)) * self.w


def _no_training(*a, **k):
    raise AssertionError("trained a student although the input was bad")


def test_bad_ipc_that_does_not_divide_the_diffused_pool(tmp_path):
    z0 = torch.randn(12, 4, 8, 8, generator=gen(0))
    P = GroupedProjector("embedded", seed=0)
    with pytest.raises(ConfigError, match=r"IPC \(N_S\) = 7 does not divide the diffused pool n_diff = 60.*e\.g\. 63"):
        DiffusedTarget(P, z0, 7, n_diff=60)
    with pytest.raises(ConfigError, match="n_diff = 64 is not a multiple of ipc = 10"):
        DsCoConfig(out_dir=str(tmp_path), ipc=10, nopt_overrides={"n_diff": 64})
    DsCoConfig(out_dir=str(tmp_path), ipc=8, nopt_overrides={"n_diff": 64})
    with pytest.raises(ConfigError, match="n_diff=0: expected None"):
        NOptConfig(n_diff=0)
    with pytest.raises(DataError, match="N_Diff=10 rows but N_S=4"):
        align_target(torch.randn(10, 3, generator=gen(1)), 4)


def test_bad_class_with_fewer_real_images_than_needed(tiny_dit, tmp_path):
    cm = ClassMap("toy2", ("a", "b"), ("a", "b"), ("a", "b"))
    lat = {0: torch.randn(5, 4, 8, 8, generator=gen(0)), 1: torch.randn(2, 4, 8, 8, generator=gen(1))}
    vae = zoo.tiny("vae")
    with pytest.raises(DataError, match=r"classes \{1: 2\} \(class: real latents\) have fewer than 3"):
        synthesize_set(tiny_dit, vae, cm, 3, "da", real_latents=lat, num_steps=3, iters=1)   # before any sampling
    with pytest.raises(DataError, match=r"classes \{1: 0\}"):
        synthesize_set(tiny_dit, vae, cm, 3, "da", real_latents={0: lat[0]}, num_steps=3, iters=1)
    with pytest.raises(DataError, match="class 1 has 2 real latents; expected at least 3"):
        nopt_sample(tiny_dit, None, 1, 3, real_latents=lat[1], num_steps=3, iters=1)
    with pytest.raises(ConfigError, match="real_per_class=5: expected None .* an integer ≥ ipc = 10"):
        DsCoConfig(out_dir=str(tmp_path), ipc=10, real_per_class=5)
    real = ImageSet(cm, torch.tensor([0, 0]), images=torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"class 1 \(b\) has no real images"):
        class_latents(vae, real)


def test_bad_missing_template_statistics_for_df(tiny_dit, tmp_path):
    with pytest.raises(DataError, match=r"no template statistics for class 2 \(num_steps=4, seed=0, n_temp=3") as e:
        load_template_stats(tmp_path, tiny_dit, 2, n_temp=3, num_steps=4)
    msg = str(e.value)
    assert str(tmp_path) in msg and "expected template_c2_s4_seed0_" in msg and "make_template_stats(dit, 2" in msg
    with pytest.raises(DataError, match="no template statistics for class 2"):
        load_template_stats(tmp_path / "missing", tiny_dit, 2, n_temp=3, num_steps=4)     # no such folder either
    with pytest.raises(DataError, match="no template statistics for class 1"):
        nopt_sample(tiny_dit, None, 1, 3, mode="df", template_dir=tmp_path, n_temp=3, num_steps=4, iters=1)


def test_bad_teacher_head_that_does_not_match_the_class_map(tmp_path, monkeypatch):
    imgs = torch.rand(4, 3, 8, 8, generator=gen(0))
    with pytest.raises(ConfigError, match="teacher has 5 outputs but the class map has 3 classes"):
        score_real(_Fixed(3), _Fixed(5), imgs, [0, 1, 2, 0], 3, device="cpu")
    with pytest.raises(ConfigError, match="student has 2 outputs but the class map has 3 classes"):
        score_real(_Fixed(2), _Fixed(3), imgs, [0, 1, 2, 0], 3, device="cpu")
    import ddrepro.dsco as dsco
    monkeypatch.setattr(dsco, "train_student", _no_training)                    # dope must refuse before training
    base, real = toy_set([0, 1, 2] * 2, size=32), toy_set([0, 1, 2] * 4, seed=1, size=32)
    for proto in ("soft", "hard"):
        with pytest.raises(ConfigError, match="teacher has 5 outputs but the class map has 3 classes"):
            dope(base, real, _Fixed(5), [3], tmp_path, protocol=proto, device="cpu")
    with pytest.raises(ConfigError, match="teacher=None"):
        dope(base, real, None, [3], tmp_path, protocol="hard", device="cpu")


def test_bad_doping_budget_below_the_base_ipc(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="budget=3: expected a doping budget ≥ the base IPC 5"):
        doping_count(3, 5, 10)
    with pytest.raises(ConfigError, match="budget=3: expected a doping budget ≥ the base IPC 5"):
        dope_indices(doping_order(np.linspace(0, 1, 100)), 3, 5, 10)
    with pytest.raises(ConfigError, match=r"doping_budgets=\[5, 20\]: expected budgets above the base IPC ipc = 10.*below or at it: \[5\]"):
        DsCoConfig(out_dir=str(tmp_path), ipc=10, doping_budgets=[5, 20])
    with pytest.raises(ConfigError, match=r"below or at it: \[10\]"):
        DsCoConfig(out_dir=str(tmp_path), ipc=10, doping_budgets=[10])
    import ddrepro.dsco as dsco
    monkeypatch.setattr(dsco, "train_student", _no_training)
    base, real = toy_set([0, 1, 2] * 2, size=32), toy_set([0, 1, 2] * 4, seed=1, size=32)
    with pytest.raises(ConfigError, match="budget=1: expected a doping budget ≥ the base IPC 2"):
        dope(base, real, _Fixed(3), [4, 1], tmp_path, protocol="hard", device="cpu")


# ----------------------------------------------------------------------------------------------- Table 8's stage ablation

def test_doping_base_select_and_phi_s_overrides_are_validated_naming_the_value(tmp_path):
    "Table 8's options (doping_base, doping_select) and φ_S's own recipe (doping_eval_overrides): bad values fail in the config."
    kw = dict(out_dir=str(tmp_path), ipc=10)
    cases = [
        (dict(doping_base="dsco_set"), r"doping_base='dsco_set': expected 'dsco' \(Doping fills up the DsCo set.*'random_real'"),
        (dict(doping_select="topk"), r"doping_select='topk': expected 'confusion' \(the Eq\. 31 ranking.*'random'"),
        (dict(doping_budgets=[20], modes=["df", "off"]),
         r"doping_base='dsco': expected 'da' in modes .*modes=\['df', 'off'\].*doping_base 'random_real'"),
        (dict(doping_eval_overrides={"epoch": 5}), r"doping_eval_overrides=\{'epoch': 5\}: expected EvalConfig fields .*not EvalConfig fields: \['epoch'\]"),
        (dict(doping_eval_overrides=["epochs"]), r"doping_eval_overrides=\['epochs'\]: expected a dict of EvalConfig fields"),
        (dict(doping_budgets=[20, 40], doping_real_per_class=25), r"doping_real_per_class=25: expected None or ≥ 30: budget 40"),
        (dict(doping_budgets=[20], doping_real_per_class=15, doping_base="random_real"), r"≥ 20: .*without the random-real base's 10"),
        (dict(dataset="imagenette", doping_budgets=[20]), r"doping_teacher=None: expected a teacher spec for imagenette"),
    ]
    for bad, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            DsCoConfig(**kw, **bad)
    # what is allowed: a random-real base needs no 'da' set; a random fill needs no teacher; φ_S's overrides replace the evaluation's
    rr = DsCoConfig(**kw, doping_budgets=[20], modes=["off"], doping_base="random_real", doping_real_per_class=20)
    assert rr.doped_method() == "random_doped"
    DsCoConfig(**kw, dataset="imagenette", doping_budgets=[20], doping_select="random")
    assert DsCoConfig(**kw, doping_select="random").doped_method() == "dsco_randfill"
    assert DsCoConfig(**kw).doped_method() == "dsco_doped"
    assert DsCoConfig(**kw, doping_base="random_real", doping_select="random").doped_method() is None    # ××: the random rows
    ev = DsCoConfig(**kw, eval_overrides={"epochs": 500})
    assert ev.doping_overrides() == {"epochs": 500}
    phi = DsCoConfig(**kw, eval_overrides={"epochs": 500}, doping_eval_overrides={"epochs": 1000})
    assert phi.doping_overrides() == {"epochs": 1000} and phi.eval_overrides == {"epochs": 500}
    with pytest.raises(ConfigError, match=r"eval_overrides \['epoch'\]: not EvalConfig fields"):   # EvalSettings' own check
        DsCoConfig(**kw, eval_overrides={"epoch": 5})


def test_random_doping_order_and_pool_without():
    from ddrepro.dsco import pool_without, random_doping_order
    o = random_doping_order(50, seed=3)
    assert sorted(o.tolist()) == list(range(50)) and o.dtype == np.int64
    assert np.array_equal(o, random_doping_order(50, seed=3)) and not np.array_equal(o, random_doping_order(50, seed=4))
    small, big = dope_indices(o, 3, 2, 5), dope_indices(o, 6, 2, 5)          # 5 and 20 images, prefixes of one permutation
    assert len(small) == 5 and len(big) == 20 and set(small) <= set(big)
    pool = np.array([8, 3, 5, 1, 9, 0])
    assert pool_without(pool, [5, 0, 42]).tolist() == [8, 3, 1, 9]
    assert pool_without(pool, []).tolist() == pool.tolist()
    with pytest.raises(DataError, match="repeated pool indices"):
        pool_without([1, 2, 2], [1])
    with pytest.raises(ConfigError, match="n=0: expected a positive integer"):
        random_doping_order(0)


# ----------------------------------------------------------------------------------------------- the shared synthesis cache

# Computed with run_dsco's own `synthesis_key` (in the run notebook) before it moved to ddrepro.dsco. Existing caches
# under runs/cache/dsco/<key> are named by these keys: a change here orphans them.
KEY_ASSETS = {"dit": {"id": "zoo/dit", "revision": "r1", "sha256": "ab" * 32, "path": "/somewhere/dit", "source": "zoo"},
              "vae": {"id": "zoo/vae", "sha256": "cd" * 32, "path": "/x/vae"}}
PINNED_KEYS = {"small": {"da": "2a82831f7b4b96c4", "df": "57b6252fa694e90b", "off": "c9e6305b7bff912b"},
               "small, real_per_class 100, lam_align 1e-3": {"da": "f228c9bdf019f46b", "df": "57b6252fa694e90b",
                                                             "off": "c9e6305b7bff912b"},
               "defaults, no assets": {"da": "e425f40a03c0cb7a", "df": "57bf92c564e3d0f6", "off": "cdca5269ced87c9f"}}


def key_config(**kw):
    from ddrepro.dsco import DsCoConfig
    return DsCoConfig(**{"out_dir": "/tmp/ddrepro-unused", "ipc": 10, "iters": 5, "num_steps": 4, **kw})


def test_synthesis_key_is_byte_stable():
    from ddrepro.dsco import DsCoConfig, synthesis_key
    cfgs = {"small": (key_config(), KEY_ASSETS),
            "small, real_per_class 100, lam_align 1e-3": (key_config(real_per_class=100, nopt_overrides={"lam_align": 1e-3}), KEY_ASSETS),
            "defaults, no assets": (DsCoConfig(out_dir="/tmp/ddrepro-unused"), {})}
    assert {n: {m: synthesis_key(m, c, a) for m in ("da", "df", "off")} for n, (c, a) in cfgs.items()} == PINNED_KEYS


def test_synthesis_key_reads_exactly_the_settings_of_its_mode():
    "Every NOpt field changed one at a time: a mode's key moves iff the mode reads the field (not in UNUSED_BY[mode])."
    from ddrepro.dsco import UNUSED_BY, synthesis_key
    changed = dict(lam_stats=2e-3, lam_maxoc=5.0, stats_scale=16.0, template_seed=1, template_projector_seed=1,
                   lam_align=1e-3, copies=6, n_diff=100, min_real=20, pairing="matched", sort=False, projector_seed=3,
                   chunk=128, lr=0.2, momentum=0.5, real_weight=2.0, projector="paper", amp=False, init="randn")
    base = {m: synthesis_key(m, key_config(), KEY_ASSETS) for m in ("da", "df", "off")}
    for m in base:
        for f, v in changed.items():
            moved = synthesis_key(m, key_config(nopt_overrides={f: v}), KEY_ASSETS) != base[m]
            reads = f not in UNUSED_BY[m] and not (m == "off" and f == "init")      # DiT†: init randn, always
            assert moved == reads, (m, f)
        for f, v in dict(n_temp=50, iters=7, num_steps=8, cfg_scale=2.0, ipc=20, seed=1, dataset="imagenette",
                         real_per_class=200).items():
            moved = synthesis_key(m, key_config(**{f: v}), KEY_ASSETS) != base[m]
            reads = {"n_temp": m == "df", "iters": m != "off", "real_per_class": m == "da"}.get(f, True)
            assert moved == reads, (m, f)
    # the weights count by id / revision / sha256, not where they lie
    moved = {k: dict(v, path="/elsewhere", source="hub") for k, v in KEY_ASSETS.items()}
    assert synthesis_key("da", key_config(), moved) == base["da"]
    for k, f in (("dit", "sha256"), ("dit", "revision"), ("vae", "id")):
        other = dict(KEY_ASSETS, **{k: dict(KEY_ASSETS[k], **{f: "other"})})
        assert synthesis_key("off", key_config(), other) != base["off"], (k, f)


def test_shared_synthesis_dir_sits_beside_the_eval_cache(monkeypatch, tmp_path):
    from ddrepro.core import project_root
    from ddrepro.dsco import shared_synthesis_dir
    monkeypatch.delenv("DDREPRO_EVAL_CACHE", raising=False)
    assert shared_synthesis_dir("k") == project_root() / "runs" / "cache" / "dsco" / "k"
    monkeypatch.setenv("DDREPRO_EVAL_CACHE", str(tmp_path / "c" / "eval"))
    assert shared_synthesis_dir("k") == tmp_path / "c" / "dsco" / "k"
    for off in ("off", "0", "", "no", "false"):
        monkeypatch.setenv("DDREPRO_EVAL_CACHE", off)
        assert shared_synthesis_dir("k") is None


def _finished_set(run: Path, key: str, tag: str):
    "A run folder's finished set, as run_dsco leaves it: distilled/dsco/<class>/*.png and distilled/dsco.json."
    from ddrepro.core import write_json
    folder, done = run / "distilled" / "dsco", run / "distilled" / "dsco.json"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(2): (folder / c / f"{i}.png").write_bytes(f"{tag}-{c}-{i}".encode())
    write_json(done, dict(key=key, settings=[dict(run=tag)]))
    return folder, done


def _tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_share_set_first_writer_wins_and_leaves_no_temporary(tmp_path):
    from ddrepro.core import read_json
    from ddrepro.dsco import share_set
    shared = tmp_path / "cache" / "dsco" / "k1"
    fa, da = _finished_set(tmp_path / "runA", "k1", "A")
    fb, db = _finished_set(tmp_path / "runB", "k1", "B")
    assert share_set(fa, da, None) is None and not (tmp_path / "cache").exists()       # sharing off
    share_set(fa, da, shared)
    share_set(fb, db, shared)
    assert _tree(shared / "images") == _tree(fa) and read_json(shared / "set.json")["settings"] == [dict(run="A")]
    assert sorted(p.name for p in shared.parent.iterdir()) == ["k1"]
    assert _tree(fb) != _tree(fa) and read_json(db)["settings"] == [dict(run="B")]      # the second writer's own set untouched


def test_reuse_set_own_folder_cache_copy_and_interrupted_copy(tmp_path):
    from ddrepro.core import read_json
    from ddrepro.dsco import reuse_set, share_set
    shared = tmp_path / "cache" / "dsco" / "k1"
    fa, da = _finished_set(tmp_path / "runA", "k1", "A")
    before = _tree(tmp_path / "runA")
    # an interrupted run: its own finished set, no cache needed; another key is not it
    assert reuse_set(fa, da, "k1", None) is True and _tree(tmp_path / "runA") == before
    assert reuse_set(fa, da, "k2", None) is False
    # no shared cache, or nothing under this key (or a folder without set.json): False, nothing written
    fc, dc = tmp_path / "runC" / "distilled" / "dsco", tmp_path / "runC" / "distilled" / "dsco.json"
    assert reuse_set(fc, dc, "k1", None) is False and reuse_set(fc, dc, "k1", shared) is False
    (shared / "images").mkdir(parents=True)                                              # not a finished set
    assert reuse_set(fc, dc, "k1", shared) is False and not (tmp_path / "runC").exists()
    (shared / "images").rmdir(); shared.rmdir()
    share_set(fa, da, shared)
    # copied from the shared cache into a fresh folder; afterwards it is the run's own
    assert reuse_set(fc, dc, "k1", shared) is True
    assert _tree(fc) == _tree(fa) and read_json(dc) == read_json(da)
    assert sorted(p.name for p in fc.parent.iterdir()) == ["dsco", "dsco.json"]
    assert reuse_set(fc, dc, "k1", None) is True
    # killed mid-copy before: a stale .tmp and an old set of another key are both replaced
    fe, de = _finished_set(tmp_path / "runE", "k0", "E")
    (fe.parent / "dsco.tmp" / "a").mkdir(parents=True)
    (fe.parent / "dsco.tmp" / "a" / "junk.png").write_bytes(b"half")
    assert reuse_set(fe, de, "k1", shared) is True
    assert _tree(fe) == _tree(fa) and read_json(de)["key"] == "k1"
    assert sorted(p.name for p in fe.parent.iterdir()) == ["dsco", "dsco.json"]
