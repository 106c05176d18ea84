"""Unit tests of ddrepro.dsco beyond the notebook's hand examples: invariances and brute-force references for the
NOpt losses (Eqs. 19-28), the projector's group structure, gradients reaching the noise through the projector, the
Dope Trigger (Eq. 30) and the confusion score (Eq. 31)."""
import itertools
import math

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
