"""Diffusion-driven patch selection (ddrepro.patchsel): bad input fails with errors that name the value, the method is
deterministic and IPC-independent up to the ranking, the patch-mode path works on tiny random models, and (slow) the
score's default sign is checked on the embedded zoo against the teacher."""
import numpy as np
import pytest
import torch

from ddrepro.core import ConfigError, DataError
from ddrepro.data import ClassMap, ImageSet
from ddrepro.diffusion import make_scheduler, random_unet, random_vae
from ddrepro.patchsel import (EMBEDDED, DPSConfig, dift_features, dps_distill, loss_difference_maps, sign_check,
                              stage1_candidates)


class TinyBackbone:
    "unet + vae + encode(prompts): a random UNet on 4-channel latents of a /2 VAE, prompts hashed to fixed states."
    def __init__(self):
        self.unet = random_unet(sample_size=8, cross_attention_dim=8, block_out_channels=(8, 16))
        self.vae = random_vae(block_out_channels=(8, 16), sample_size=16)
    def encode(self, prompts):
        return torch.stack([torch.randn(5, 8, generator=torch.Generator().manual_seed(sum(map(ord, p)))) for p in prompts])


def tiny_set(n_per_class=6, size=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cm = ClassMap("tiny", tuple(str(i) for i in range(classes)), tuple(f"c{i}" for i in range(classes)),
                  tuple(f"c{i}" for i in range(classes)))
    imgs = torch.randint(0, 256, (classes * n_per_class, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageSet(cm, torch.arange(classes).repeat_interleave(n_per_class), imgs)


SCH = make_scheduler("ddpm")
TINY = dict(short_side=None, n_draws=2, dift_ensemble=1, dift_block=0, n_clusters=3, n_top=2, batch_size=16)


def test_whole_mode_deterministic_and_ipc_independent_ranking():
    real, bb = tiny_set(), TinyBackbone()
    cfg = DPSConfig(ipc=2, out_size=16, **TINY)
    a = dps_distill(real, bb, SCH, cfg)
    b = dps_distill(real, bb, SCH, cfg)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[2]["score"], b[2]["score"])
    assert a[0].shape == (6, 3, 16, 16) and a[1].tolist() == [0, 0, 1, 1, 2, 2]
    sel = a[2]["is_selected"]
    assert np.bincount(a[2]["label"][sel]).tolist() == [2, 2, 2]
    # whole mode: a distilled image is one of the real images, unchanged
    src = a[2]["source_index"][sel][np.argsort(a[2]["image"][sel])]
    assert torch.equal(a[0], real.images[torch.as_tensor(src)])
    # another IPC from the stored rankings equals a fresh run at that IPC
    c = dps_distill(real, bb, SCH, DPSConfig(ipc=3, out_size=16, **TINY), rankings=a[3])
    d = dps_distill(real, bb, SCH, DPSConfig(ipc=3, out_size=16, **TINY))
    assert torch.equal(c[0], d[0])


def test_stage_two_alone_from_stored_candidates():
    "(candidates, None) per class recomputes Stage II only and equals a fresh run with the new Stage II settings."
    real, bb = tiny_set(), TinyBackbone()
    a = dps_distill(real, bb, SCH, DPSConfig(ipc=2, out_size=16, **TINY))
    other = dict(TINY, n_clusters=2, dift_t=40)
    stage1 = {c: (cand, None) for c, (cand, _) in a[3].items()}
    b = dps_distill(real, bb, SCH, DPSConfig(ipc=2, out_size=16, **other), rankings=stage1)
    fresh = dps_distill(real, bb, SCH, DPSConfig(ipc=2, out_size=16, **other))
    assert torch.equal(b[0], fresh[0]) and np.array_equal(b[2]["cluster"], fresh[2]["cluster"])
    assert b[2]["cluster"].max() == 1 and a[2]["cluster"].max() == 2           # Stage II did run again, with M = 2
    assert all(b[3][c][0] is a[3][c][0] for c in a[3])                          # the same Stage I candidates, reused


def test_patch_mode_stitch_and_single():
    real, bb = tiny_set(n_per_class=8, size=24), TinyBackbone()
    st = dps_distill(real, bb, SCH, DPSConfig(ipc=2, assembly="stitch", window=16, stride=4, out_size=16, **TINY))
    assert st[0].shape == (6, 3, 16, 16) and st[2]["is_selected"].sum() == 3 * 2 * 4
    assert set(st[2]["cell"][st[2]["is_selected"]].tolist()) == {0, 1, 2, 3}
    si = dps_distill(real, bb, SCH, DPSConfig(ipc=2, assembly="single", window=16, stride=4, out_size=16, **TINY))
    assert si[0].shape == (6, 3, 16, 16) and (si[2]["size"] == 16).all()


def test_rankings_hold_no_patches_and_recut_patches_equal_stage_one():
    "One class's patches at a time: the rankings keep boxes and scores; patches re-cut from them give the same sets."
    real, bb = tiny_set(n_per_class=8, size=24), TinyBackbone()
    kw = dict(assembly="stitch", window=16, stride=4, out_size=16, **TINY)
    a = dps_distill(real, bb, SCH, DPSConfig(ipc=1, **kw))
    assert all(not {"patches", "features"} & (set(cand) | set(rk)) for cand, rk in a[3].values())
    fresh = dps_distill(real, bb, SCH, DPSConfig(ipc=2, **kw))
    again = dps_distill(real, bb, SCH, DPSConfig(ipc=2, **kw), rankings=a[3])                     # another IPC, re-cut
    stage2 = dps_distill(real, bb, SCH, DPSConfig(ipc=2, **kw), rankings={c: (cand, None) for c, (cand, _) in a[3].items()})
    assert torch.equal(again[0], fresh[0]) and torch.equal(stage2[0], fresh[0])
    assert np.array_equal(stage2[2]["cluster"], fresh[2]["cluster"])                              # DIFT on re-cut patches
    with pytest.raises(DataError, match=r"rankings\[0\] holds 8 candidates but class 0 draws 6 real images"):
        dps_distill(real, bb, SCH, DPSConfig(ipc=1, per_class=6, **kw), rankings=a[3])


@pytest.mark.parametrize("make,error,match", [
    (lambda: DPSConfig(score_sign="plus"), ConfigError, r"score_sign='plus': expected 'neg'"),
    (lambda: DPSConfig(window=0), ConfigError, r"window=0: expected a positive integer"),
    (lambda: DPSConfig(dift_t=1.6), ConfigError, r"dift_t=1.6: expected an integer timestep"),
    (lambda: DPSConfig(assembly="grid"), ConfigError, r"assembly='grid': expected one of"),
    (lambda: DPSConfig(ipc=10, assembly="stitch", per_class=39), ConfigError, r"per_class=39 .* needs 40"),
])
def test_bad_config(make, error, match):
    with pytest.raises(error, match=match): make()


def test_images_smaller_than_the_window():
    bb = TinyBackbone()
    imgs = [torch.rand(3, 16, 16)]
    cfg = DPSConfig(ipc=1, window=32, stride=2, **{k: v for k, v in TINY.items()})
    with pytest.raises(DataError, match=r"images of 16×16 px are smaller than the window of 32 px"):
        stage1_candidates(imgs, [0], bb.unet, bb.vae, SCH, torch.randn(1, 5, 8), torch.zeros(1, 5, 8), cfg)


def test_class_with_too_few_images():
    real, bb = tiny_set(n_per_class=6, size=24), TinyBackbone()
    with pytest.raises(DataError, match=r"class 0 \(c0\) has 6 real images but IPC 2 with assembly 'stitch' needs 8"):
        dps_distill(real, bb, SCH, DPSConfig(ipc=2, assembly="stitch", window=16, stride=4, out_size=16, **TINY))


def test_dift_layer_that_does_not_exist():
    bb = TinyBackbone()
    with pytest.raises(ConfigError, match=r"dift_block=7: this UNet has 2 up blocks \(0..1\)"):
        dift_features(bb.unet, torch.randn(2, 4, 8, 8), torch.randn(1, 5, 8), SCH, block=7)


def test_paired_estimator_is_zero_for_equal_prompts():
    bb = TinyBackbone()
    s = torch.randn(1, 5, 8)
    R = loss_difference_maps(bb.unet, torch.randn(3, 4, 8, 8), s, s, SCH, n_draws=3)
    assert R.abs().max().item() == 0.0


@pytest.mark.slow
def test_default_sign_on_the_embedded_zoo():
    """On the zoo, images the teacher is confident about must score higher under the default sign (s = −R): the
    per-class Spearman ρ(s, teacher p(true)) is positive on average and the upper half by s is the more confident."""
    from ddrepro import zoo
    from ddrepro.backbones import load_text_backbone
    from ddrepro.data import load_real
    from ddrepro.students import predict_logits
    test = load_real("fashion_mnist", "test").load()
    idx = torch.cat([torch.nonzero(test.labels == c)[:24, 0] for c in range(10)])
    x, y = test.images[idx], test.labels[idx]
    bb = load_text_backbone("zoo")
    cfg = DPSConfig(**{**EMBEDDED, "n_draws": 8})
    cond, null = bb.encode([cfg.label_prompt.format(n) for n in test.class_map.prompt_names]), bb.encode([cfg.null_prompt])
    cand = stage1_candidates(list(x), y.numpy(), bb.unet, bb.vae, make_scheduler("ddpm"), cond, null, cfg, mode="whole")
    p = predict_logits(zoo.load("teacher"), x).softmax(1)[torch.arange(len(y)), y].numpy()
    neg = sign_check(cand["score"], p, y.numpy())
    pos = sign_check(-cand["score"], p, y.numpy())
    assert neg["mean_rho"] > 0.15 and neg["conf_upper"] > neg["conf_lower"], neg
    assert pos["mean_rho"] < 0, pos


def test_ranking_code_version_follows_the_stage_code(monkeypatch):
    "The cache key's code digest is stable, and changes when a function Stages I-II run is replaced."
    import ddrepro.patchsel as ps
    v = ps.ranking_code_version()
    assert len(v) == 16 and int(v, 16) >= 0 and v == ps.ranking_code_version()
    def loss_difference_maps(*a, **k): return None             # another Stage I implementation
    monkeypatch.setattr(ps, "loss_difference_maps", loss_difference_maps)
    assert ps.ranking_code_version() != v
    monkeypatch.undo()
    monkeypatch.setattr(ps, "plot_clusters", lambda *a, **k: None)   # a figure function is not part of the key
    assert ps.ranking_code_version() == v
