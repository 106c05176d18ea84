"""Unit tests of ddrepro.rded (RDED, Sun et al., CVPR 2024, arXiv 2312.03526): the crop windows, the realism score of
a hand-made linear observer, key-patch and per-class selection with ties, the stitch order of RDED's `mix_images`,
bad input (each error names the value), RDEDConfig, and a tiny zoo-free end-to-end run that must equal the pipeline
assembled from the public parts, be deterministic and give a valid Selection table."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddrepro.core import ConfigError, DataError
from ddrepro.data import ClassMap, ImageSet, to_uint8
from ddrepro.evaluate import crop_resize
from ddrepro.rded import (CROP_RATIO, CROP_SCALE, RDEDConfig, best_crops, canvas_fill, crop_scores, random_crops,
                          rded_distill, select_candidates, stitch)
from ddrepro.selection import Selection
from ddrepro.students import IMAGENET_MEAN


class MeanColour(nn.Module):
    "Hand-made observer: logits = W · mean RGB (no bias)."
    def __init__(self, W):
        super().__init__()
        self.fc = nn.Linear(3, len(W), bias=False)
        self.fc.weight.data = torch.as_tensor(W, dtype=torch.float32)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def toy_set(n=6, size=8, seed=0):
    "3 classes × n uint8 images: grey with one square of the class colour (red / green / blue)."
    g = torch.Generator().manual_seed(seed)
    imgs, labels = [], []
    for c in range(3):
        for _ in range(n):
            im = torch.full((3, size, size), 0.5)
            s = int(torch.randint(2, size - 1, (1,), generator=g))
            t, l = torch.randint(0, size - s + 1, (2,), generator=g).tolist()
            im[:, t:t + s, l:l + s] = 0.0
            im[c, t:t + s, l:l + s] = 1.0
            imgs.append(im)
            labels.append(c)
    cm = ClassMap("toy_rgb", ("0", "1", "2"), ("red", "green", "blue"), ("red", "green", "blue"))
    return ImageSet(cm, torch.tensor(labels), (torch.stack(imgs) * 255).round().to(torch.uint8))


RGB8 = torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]])


# ---------------------------------------------------------------- random_crops
def test_random_crops_are_the_windows_at_their_boxes():
    img = torch.arange(2 * 36, dtype=torch.float32).view(2, 1, 6, 6) / 71
    crops, boxes = random_crops(img, 4, 2, scale=(1 / 9, 1 / 9), generator=torch.Generator().manual_seed(0))
    assert crops.shape == (2, 4, 1, 2, 2) and crops.dtype == torch.float32
    assert boxes.shape == (2, 4, 4) and boxes.dtype == torch.int64
    for i in range(2):
        for j in range(4):
            t, l, h, w = boxes[i, j].tolist()
            assert (h, w) == (2, 2)
            torch.testing.assert_close(crops[i, j, 0], img[i, 0, t:t + 2, l:l + 2], atol=1e-6, rtol=0)


def test_random_crops_square_in_bounds_seeded_and_dtype_free():
    x = torch.randint(0, 256, (3, 3, 12, 10), dtype=torch.uint8)
    c1, b1 = random_crops(x, 5, 4, generator=torch.Generator().manual_seed(7))
    c2, b2 = random_crops(x.float() / 255, 5, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(b1, b2)
    torch.testing.assert_close(c1, c2, atol=1e-6, rtol=0)
    assert (b1[..., 2] == b1[..., 3]).all()                          # RDED: ratio (1, 1)
    assert (b1[..., 0] + b1[..., 2] <= 12).all() and (b1[..., 1] + b1[..., 3] <= 10).all() and (b1[..., :2] >= 0).all()
    assert CROP_SCALE == (0.08, 1.0) and CROP_RATIO == (1.0, 1.0)
    # full-area crop at the image's own size is the image
    full, fb = random_crops(x[:1, :, :10, :10], 1, 10, scale=(1, 1))
    assert fb[0, 0].tolist() == [0, 0, 10, 10]
    torch.testing.assert_close(full[0, 0], x[0, :, :10, :10].float() / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kw, msg", [(dict(num_crops=0), "num_crops=0"), (dict(size=-2), "size=-2"),
                                     (dict(scale=(0.5, 0.2)), "scale=(0.5, 0.2)"), (dict(scale=(0.1, 2.0)), "scale=(0.1, 2.0)"),
                                     (dict(ratio=(2.0, 1.0)), "ratio=(2.0, 1.0)")])
def test_random_crops_bad_parameters(kw, msg):
    args = dict(num_crops=2, size=2) | kw
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        random_crops(torch.rand(1, 3, 6, 6), args.pop("num_crops"), args.pop("size"), **args)


def test_random_crops_bad_images():
    with pytest.raises(DataError, match=r"\(3, 6, 6\)"):
        random_crops(torch.rand(3, 6, 6), 2, 2)
    with pytest.raises(DataError, match="non-empty"):
        random_crops(torch.rand(0, 3, 6, 6), 2, 2)


# ---------------------------------------------------------------- crop_scores / canvas_fill
def test_crop_scores_hand_values_of_a_linear_observer():
    obs = MeanColour(torch.eye(3))
    col = torch.tensor([[1., 0, 0], [0.5, 0.5, 0.5]]).view(2, 1, 3, 1, 1).expand(2, 3, 3, 2, 2)
    s = crop_scores(obs, col, [0, 1])
    assert s.shape == (2, 3) and s.dtype == torch.float64
    assert s[0].tolist() == pytest.approx([1 - math.log(math.e + 2)] * 3, abs=1e-6)      # red as class 0: −0.5514
    assert s[1].tolist() == pytest.approx([-math.log(3)] * 3, abs=1e-6)                 # grey: uniform
    assert crop_scores(obs, col, [1, 0])[0, 0].item() == pytest.approx(-math.log(math.e + 2), abs=1e-6)
    # on a 4×4 black canvas a 2×2 red crop has mean colour (1/4, 0, 0)
    c = crop_scores(obs, col[:1], [0], canvas=4, fill=(0, 0, 0))
    assert c[0, 0].item() == pytest.approx(0.25 - math.log(math.exp(0.25) + 2), abs=1e-6)
    # batch size does not change the scores; uint8 crops are scaled to [0,1]
    torch.testing.assert_close(crop_scores(obs, col, [0, 1], batch_size=1), s)
    torch.testing.assert_close(crop_scores(obs, (col * 255).round().to(torch.uint8), [0, 1]), s, atol=1e-6, rtol=0)


class RedPixels(nn.Module):
    "Observer with one logit per pixel: 10 × the red value of that pixel (row-major)."
    def forward(self, x):
        return 10 * x[:, 0].flatten(1)


def test_canvas_is_centred_as_rdeds_pad():
    "RDED's pad: top = left = (canvas − side) // 2, so a 2×2 crop on a 5×5 canvas covers pixels (1..2, 1..2)."
    red = torch.tensor([1., 0, 0]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    lse = math.log(4 * math.exp(10) + 21)
    for label, hit in ((6, True), (7, True), (11, True), (12, True), (0, False), (8, False), (18, False)):
        got = crop_scores(RedPixels(), red, [label], canvas=5, fill=(0, 0, 0))[0, 0].item()
        assert got == pytest.approx((10 if hit else 0) - lse, abs=1e-6), label


def test_canvas_fill_reads_the_observer_normalisation():
    from ddrepro import zoo
    assert canvas_fill(zoo.tiny("teacher")) == (0.5, 0.5, 0.5)
    assert canvas_fill(MeanColour(torch.eye(3))) == pytest.approx(tuple(IMAGENET_MEAN))


def test_crop_scores_bad_input():
    obs = MeanColour(torch.eye(3))
    col = torch.rand(2, 2, 3, 2, 2)
    with pytest.raises(DataError, match="label 3 is not a column of the observer's 3 logits"):
        crop_scores(obs, col, [0, 3])
    with pytest.raises(DataError, match="expected 2 integer class indices"):
        crop_scores(obs, col, [0])
    with pytest.raises(DataError, match="expected 2 integer class indices"):
        crop_scores(obs, col, [0.0, 1.0])
    with pytest.raises(DataError, match=r"\(2, 3, 2, 2\)"):
        crop_scores(obs, col[:, 0], [0, 1])
    with pytest.raises(DataError, match="do not fit on canvas=1"):
        crop_scores(obs, col, [0, 1], canvas=1)
    with pytest.raises(ConfigError, match="batch_size=0"):
        crop_scores(obs, col, [0, 1], batch_size=0)


# ---------------------------------------------------------------- best_crops / select_candidates
def test_best_crops_ties_to_lower_index():
    assert best_crops(np.array([[-1.0, -0.5, -0.5], [-2.0, -3.0, -0.1]])).tolist() == [1, 2]
    assert best_crops(torch.zeros(2, 3)).dtype == np.int64
    with pytest.raises(DataError, match="image 1 contain NaN"):
        best_crops(np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(DataError, match=r"shape \(3,\)"):
        best_crops(np.zeros(3))


def test_select_candidates_order_and_ties():
    s = np.array([-0.2, -0.5, -0.1, -0.2, -0.9, -0.5, -1.0])
    y = np.array([0, 1, 0, 0, 1, 1, 0])
    assert select_candidates(s, y, 2).tolist() == [2, 0, 1, 5]          # ties −0.2 (0, 3) and −0.5 (1, 5) → lower index
    assert select_candidates(s, y, 3).tolist() == [2, 0, 3, 1, 5, 4]
    assert select_candidates(torch.tensor(s), torch.tensor(y), 1).dtype == np.int64


def test_select_candidates_errors_name_the_class_and_counts():
    s, y = np.array([-0.2, -0.5, -0.1, -0.2, -0.9, -0.5, -1.0]), np.array([0, 1, 0, 0, 1, 1, 0])
    with pytest.raises(DataError, match=r"class 1 has 3 candidate\(s\) but per_class=4 are needed"):
        select_candidates(s, y, 4)
    with pytest.raises(DataError, match=r"class 2 has 0 candidate\(s\)"):
        select_candidates(s, y, 1, num_classes=3)
    with pytest.raises(DataError, match="label 1 is outside"):
        select_candidates(s, y, 1, num_classes=1)
    with pytest.raises(ConfigError, match="per_class=0"):
        select_candidates(s, y, 0)
    with pytest.raises(DataError, match="candidate 1 is NaN"):
        select_candidates(np.where(y == 1, np.nan, s), y, 1)
    with pytest.raises(DataError, match="expected 7 integer class indices"):
        select_candidates(s, y.astype(float), 1)


# ---------------------------------------------------------------- stitch
def test_stitch_order_is_rdeds_mix_images():
    "Patch k·n + i → cell k (row-major) of image i: 8 colours, factor 2, n = 2."
    patches = RGB8.view(8, 3, 1, 1).expand(8, 3, 2, 2)
    out = stitch(patches, 2, 4)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    def cell(i, r, c): return out[i, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
    for i in range(2):
        for k in range(4):
            assert torch.equal(cell(i, k // 2, k % 2), RGB8[k * 2 + i].view(3, 1, 1).expand(3, 2, 2)), (i, k)
    # image 0: red | blue / cyan | white; image 1: green | yellow / magenta | black
    assert torch.equal(out[0, :, 0, 0], RGB8[0]) and torch.equal(out[0, :, 0, 3], RGB8[2])
    assert torch.equal(out[0, :, 3, 0], RGB8[4]) and torch.equal(out[0, :, 3, 3], RGB8[6])
    assert torch.equal(out[1, :, 3, 3], RGB8[7])


def test_stitch_factor3_factor1_and_resize():
    p9 = torch.arange(18.).view(18, 1, 1, 1).expand(18, 1, 2, 2) / 17          # n = 2 images, 9 cells
    out = stitch(p9, 3, 6)
    assert (out[0, 0, ::2, ::2] * 17).round().tolist() == [[0, 2, 4], [6, 8, 10], [12, 14, 16]]
    assert (out[1, 0, ::2, ::2] * 17).round().tolist() == [[1, 3, 5], [7, 9, 11], [13, 15, 17]]
    g = torch.rand(3, 3, 8, 8)
    assert torch.equal(stitch(g, 1, 8), g)                                     # same size: a copy
    torch.testing.assert_close(stitch(g, 1, 4), F.interpolate(g, size=(4, 4), mode="bilinear", antialias=True,
                                                              align_corners=False))
    assert torch.equal(stitch(RGB8.view(8, 3, 1, 1).expand(8, 3, 6, 6), 2, 4), stitch(RGB8.view(8, 3, 1, 1).expand(8, 3, 2, 2), 2, 4))
    u8 = (RGB8.view(8, 3, 1, 1).expand(8, 3, 2, 2) * 255).to(torch.uint8)
    assert torch.equal(stitch(u8, 2, 4), stitch(u8.float() / 255, 2, 4))


def test_stitch_bad_input():
    p = torch.rand(8, 3, 2, 2)
    with pytest.raises(DataError, match="7 patches is not a positive multiple of factor²=4"):
        stitch(p[:7], 2, 4)
    with pytest.raises(ConfigError, match="out_size=5 is not divisible by factor=2"):
        stitch(p, 2, 5)
    with pytest.raises(ConfigError, match="factor=0"):
        stitch(p, 0, 4)
    with pytest.raises(ConfigError, match="out_size=0"):
        stitch(p, 2, 0)
    with pytest.raises(DataError, match=r"\(3, 2, 2\)"):
        stitch(p[0], 1, 2)


# ---------------------------------------------------------------- RDEDConfig
def test_config_defaults_are_rdeds_imagenet_scripts():
    c = RDEDConfig()
    assert (c.ipc, c.factor, c.num_crops, c.mipc, c.crop_scale, c.out_size, c.seed) == (10, 2, 5, 300, (0.08, 1.0), None, 0)
    assert c.per_class == 40 and RDEDConfig(factor=1).per_class == 10
    assert RDEDConfig(crop_scale=[0.5, 1]).crop_scale == (0.5, 1.0)
    assert RDEDConfig(pad_fill=[0, 0.5, 1]).pad_fill == (0.0, 0.5, 1.0)


@pytest.mark.parametrize("kw, msg", [
    (dict(ipc=0), "ipc=0"), (dict(ipc=1.5), "ipc=1.5"), (dict(ipc=True), "ipc=True"), (dict(factor=0), "factor=0"),
    (dict(num_crops=0), "num_crops=0"), (dict(mipc=-3), "mipc=-3"), (dict(crop_scale=(0.5, 0.1)), "crop_scale=(0.5, 0.1)"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale=(0.0, 1.0)"), (dict(crop_scale=(0.1, 1.2)), "crop_scale=(0.1, 1.2)"),
    (dict(crop_scale="big"), "crop_scale='big'"), (dict(crop_ratio=(1.0,)), "crop_ratio=(1.0,)"),
    (dict(out_size=33), "out_size=33 is not divisible by factor=2"), (dict(out_size=-1), "out_size=-1"),
    (dict(seed=-1), "seed=-1"), (dict(seed="0"), "seed='0'"), (dict(pad_fill=(0.5, 0.5)), "pad_fill=(0.5, 0.5)"),
    (dict(pad_fill=(0, 0, 2)), "pad_fill=(0, 0, 2)"), (dict(load_size=0), "load_size=0"),
    (dict(ipc=100), "mipc=300 real images per class give at most 300 key patches, but ipc·factor² = 100·2² = 400"),
])
def test_config_errors_name_the_value(kw, msg):
    with pytest.raises(ConfigError) as e:
        RDEDConfig(**kw)
    assert msg in str(e.value)


# ---------------------------------------------------------------- rded_distill, zoo-free
def manual_pipeline(real, observer, cfg):
    "RDED from the public parts, one class at a time (the same seeds as rded_distill)."
    from ddrepro.core import derive_seed
    C, y, S = len(real.class_map), real.labels.numpy(), real.images.shape[-1]
    scores, boxes, src, lab = [], [], [], []
    for c in range(C):
        pool = np.nonzero(y == c)[0]
        if len(pool) > cfg.mipc:
            pool = np.sort(np.random.default_rng(derive_seed(cfg.seed, "rded.real", c)).permutation(pool)[:cfg.mipc])
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "rded.crops", c))
        crops, bx = random_crops(real.images[pool], cfg.num_crops, S // cfg.factor, cfg.crop_scale, g)
        sc = crop_scores(observer, crops, torch.full((len(pool),), c), canvas=S)
        b = best_crops(sc)
        scores.append(sc.numpy()[np.arange(len(pool)), b]); boxes.append(bx.numpy()[np.arange(len(pool)), b])
        src.append(pool); lab.append(np.full(len(pool), c))
    scores, boxes, src, lab = map(np.concatenate, (scores, boxes, src, lab))
    sel = select_candidates(scores, lab, cfg.per_class, C)
    patches = crop_resize(real.images[src[sel]].float() / 255, torch.from_numpy(boxes[sel]), S // cfg.factor)
    k = cfg.per_class
    return to_uint8(torch.cat([stitch(patches[c * k:(c + 1) * k], cfg.factor, S) for c in range(C)]).clamp(0, 1))


@pytest.mark.parametrize("cfg", [RDEDConfig(ipc=1, factor=2, mipc=6), RDEDConfig(ipc=1, factor=2, mipc=5, seed=3),
                                 RDEDConfig(ipc=3, factor=1, mipc=4, num_crops=2)])
def test_rded_distill_equals_the_pipeline_of_its_parts(cfg):
    real, obs = toy_set(), MeanColour(5 * torch.eye(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                    # mipc ≤ |class| here: no warning
        images, labels, table = rded_distill(real, obs, cfg)
    assert images.dtype == torch.uint8 and images.shape == (3 * cfg.ipc, 3, 8, 8)
    assert labels.tolist() == np.repeat(np.arange(3), cfg.ipc).tolist()
    assert torch.equal(images, manual_pipeline(real, obs, cfg))


def test_rded_distill_table_and_selection():
    real, obs, cfg = toy_set(), MeanColour(5 * torch.eye(3)), RDEDConfig(ipc=1, factor=2, mipc=6)
    images, labels, t = rded_distill(real, obs, cfg)
    assert list(t) == ["label", "source_index", "crop", "top", "left", "height", "width", "score", "rank",
                       "is_selected", "image", "cell"]
    assert all(isinstance(v, np.ndarray) and v.shape == (18,) for v in t.values())
    assert t["label"].tolist() == [0] * 6 + [1] * 6 + [2] * 6 and t["source_index"].tolist() == list(range(18))
    for c in range(3):
        m = t["label"] == c
        assert t["score"][m & t["is_selected"]].min() >= t["score"][m & ~t["is_selected"]].max()
        assert sorted(t["rank"][m].tolist()) == [1, 2, 3, 4, 5, 6]
        assert sorted(t["cell"][m & t["is_selected"]].tolist()) == [0, 1, 2, 3]
        assert set(t["image"][m & t["is_selected"]].tolist()) == {c}
        assert t["cell"][m][t["rank"][m] == 1].tolist() == [0]             # the class's best patch: image c, top-left
        assert t["cell"][m][t["rank"][m] == 2].tolist() == [1]             # ipc = 1: the second best goes top-right
    assert (t["image"][~t["is_selected"]] == -1).all() and (t["cell"][~t["is_selected"]] == -1).all()
    assert (t["height"] == t["width"]).all() and (t["top"] + t["height"] <= 8).all() and (t["left"] + t["width"] <= 8).all()
    assert (images.float().mean((2, 3)).argmax(1) == labels).all()       # each image is mostly its class colour
    sel = Selection("rded", cfg.per_class, np.nonzero(t["is_selected"])[0], t)
    assert sel.per_class().tolist() == [4, 4, 4]


def test_rded_distill_is_deterministic_and_seeded():
    real, obs = toy_set(n=8), MeanColour(5 * torch.eye(3))
    cfg = RDEDConfig(ipc=1, factor=2, mipc=5)
    a, b = rded_distill(real, obs, cfg), rded_distill(real, obs, cfg)
    assert torch.equal(a[0], b[0]) and all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    c = rded_distill(real, obs, RDEDConfig(ipc=1, factor=2, mipc=5, seed=1))
    assert not np.array_equal(a[2]["source_index"], c[2]["source_index"]) or not np.array_equal(a[2]["top"], c[2]["top"])
    # mipc < |class|: a seeded draw of 5 of the 8, in index order
    for k in range(3):
        s = a[2]["source_index"][a[2]["label"] == k]
        assert len(s) == 5 and s.tolist() == sorted(s.tolist()) and set(s.tolist()) <= set(range(8 * k, 8 * k + 8))


def test_rded_distill_bad_input():
    real, obs = toy_set(), MeanColour(5 * torch.eye(3))
    with pytest.raises(DataError, match=r"class 0 \(red\) has 6 real image\(s\) but ipc·factor² = 8"):
        rded_distill(real, obs, RDEDConfig(ipc=2, mipc=8))
    with pytest.raises(ConfigError, match=r"out_size=8 \(the real images' side\) is not divisible by factor=3"):
        rded_distill(toy_set(n=9), obs, RDEDConfig(ipc=1, factor=3, mipc=9))
    with pytest.raises(ConfigError, match="expected an RDEDConfig"):
        rded_distill(real, obs, dict(ipc=1))
    with pytest.raises(DataError, match="is not a column of the observer's 2 logits"):
        rded_distill(real, MeanColour(torch.eye(3)[:2]), RDEDConfig(ipc=1, mipc=6))
    with pytest.warns(UserWarning, match="mipc=10: 3 class"):
        rded_distill(real, obs, RDEDConfig(ipc=1, mipc=10))


def test_rded_distill_out_size_and_pad_fill():
    real, obs = toy_set(), MeanColour(5 * torch.eye(3))
    big, _, _ = rded_distill(real, obs, RDEDConfig(ipc=1, factor=2, mipc=6, out_size=16))
    assert big.shape == (3, 3, 16, 16)
    # a small crop is scored on the canvas: a red canvas favours class 0 over a blue one (a grey one would not
    # change this observer's softmax at all)
    _, _, t0 = rded_distill(real, obs, RDEDConfig(ipc=1, factor=2, mipc=6, pad_fill=(1, 0, 0)))
    _, _, t1 = rded_distill(real, obs, RDEDConfig(ipc=1, factor=2, mipc=6, pad_fill=(0, 0, 1)))
    assert (t0["score"][t0["label"] == 0] > t1["score"][t1["label"] == 0]).all()
    assert (t0["score"][t0["label"] == 2] < t1["score"][t1["label"] == 2]).all()
