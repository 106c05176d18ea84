"""Tests of ddrepro.evaluate (and the students and teachers it trains with): students, schedules, augmentation, losses, bad inputs, runs, merging, records."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddrepro.core import ConfigError, DataError, RunRecord
from ddrepro.data import ImageSet, class_map, save_image_set
from ddrepro import backbones as bb, evaluate as ev, students as st

CM = class_map("fashion_mnist")


def _set(per_class=3, size=16, seed=0, cm=CM):
    "A tiny learnable set: class c has a bright square at a class-dependent place."
    g = torch.Generator().manual_seed(seed)
    k = len(cm)
    labels = torch.arange(k).repeat_interleave(per_class)
    x = (torch.rand(len(labels), 3, size, size, generator=g) * 60).to(torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 4)
        x[i, :, r * 4:r * 4 + 4, q * 4:q * 4 + 4] = 255
    return ImageSet(cm, labels, x, source=dict(kind="synthetic"))


class TinyTeacher(nn.Module):
    "A random frozen teacher: float [0,1] N×3×H×W → 10 logits."
    def __init__(self, k=10):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, k))
    def forward(self, x): return self.net(x)


# ---------------------------------------------------------------- students: parameter counts
# Pinned against the reference definitions: IDC models/convnet.py, models/resnet_ap.py and
# models/resnet.py (built with the same arguments), and torchvision's models for the rest.
@pytest.mark.parametrize("name,size,protocol,dataset,count", [
    ("convnet", 32, "hard", "fashion_mnist", 320_010),    # ConvNet-3 width 128, 32 px, 10 classes
    ("convnet", 128, "hard", "imagewoof", 615_690),       # ConvNet-5
    ("convnet", 224, "hard", "imagewoof", 754_570),       # ConvNet-6 (Minimax at 224 px)
    ("convnet", 256, "hard", "imagewoof", 763_530),       # ConvNet-6 at 256 px
    ("resnet_ap10", 224, "hard", "imagewoof", 4_910_922),
    ("resnet_ap10", 32, "hard", "cifar10", 1_228_970),    # IDC CIFAR variant (widths 32..256)
    ("resnet18", 224, "hard", "imagewoof", 11_181_642),   # IDC ResNet-18, instance norm
    ("resnet18", 32, "hard", "cifar10", 2_797_610),
    ("resnet18", 224, "soft", "imagenet1k", 11_181_642),  # torchvision ResNet-18
    ("resnet18", 32, "soft", "cifar10", 11_173_962),      # RDED resnet18_modified (3x3 stem, no max-pool)
    ("resnet50", 224, "soft", "imagenet1k", 23_528_522),
    ("resnet101", 224, "soft", "imagenet1k", 42_520_650),
    ("mobilenet_v2", 224, "soft", "imagenet1k", 2_236_682),
    ("efficientnet_b0", 224, "soft", "imagenet1k", 4_020_358),
])
def test_student_parameter_counts(name, size, protocol, dataset, count):
    m = st.build_student(name, 10, size, protocol, dataset)
    assert st.count_params(m) == count


def test_convnet_hand_count_and_norms():
    assert st.count_params(st.ConvNet(10, 32)) == 3 * 128 * 9 + 128 + 2 * (128 * 128 * 9 + 128) + 3 * 256 + 128 * 16 * 10 + 10
    assert isinstance(st.build_student("convnet", 10, 32, "hard").net.features[1], nn.GroupNorm)
    assert st.build_student("convnet", 10, 32, "hard").net.features[1].num_groups == 128   # instance norm
    assert isinstance(st.build_student("convnet", 10, 32, "soft").net.features[1], nn.BatchNorm2d)  # RDED
    assert [st.convnet_depth(s) for s in (32, 64, 128, 224, 256)] == [3, 4, 5, 6, 6]


def test_timm_counts_equal_torchvision_reference():
    import torchvision
    for ours, ref in [("resnet50", "resnet50"), ("mobilenet_v2", "mobilenet_v2"), ("efficientnet_b0", "efficientnet_b0")]:
        assert st.count_params(st.build_student(ours, 10, 64, "soft")) == \
            st.count_params(torchvision.models.get_model(ref, weights=None, num_classes=10))


def test_students_normalise_inside():
    m = st.build_student("convnet", 10, 32, "hard", "fashion_mnist", width=8)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m(x), m.net((x - 0.2861) / 0.3530))
    assert st.norm_stats("imagewoof", "hard") == (st.IMAGENET_MEAN, st.IMAGENET_STD)
    assert st.norm_stats("cifar10", "soft") == (st.IMAGENET_MEAN, st.IMAGENET_STD)   # RDED uses ImageNet stats everywhere


# ---------------------------------------------------------------- schedules
def test_hard_epochs_by_ipc():
    assert [ev.hard_epochs(i) for i in (1, 2, 10, 11, 20, 50, 51, 100, 200, 201, 500, 501)] == \
        [3000, 2000, 2000, 1500, 1500, 1500, 1000, 1000, 1000, 500, 500, 300]
    assert [ev.hard_epochs(i, 100) for i in (1, 10, 50, 100, 500, 1000)] == [2000, 1300, 1000, 600, 300, 200]
    assert ev.hard_epochs(10, 10, "cifar10") == 1000


def test_lr_milestones_and_multistep_schedule():
    assert ev.multistep_milestones(1500) == [1000, 1250]
    assert ev.multistep_milestones(2000) == [2 * 2000 // 3, 5 * 2000 // 6] == [1333, 1666]
    assert ev.multistep_milestones(1) == [1, 1]          # never decay before the first epoch
    cfg = ev.eval_config("hard", "paper", "imagewoof", 10, student="convnet", width=4, size=32, epochs=12)
    model, opt, sched = ev.make_student(cfg, torch.device("cpu"))
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    assert lrs[:8] == [0.01] * 8 and all(math.isclose(v, 0.002) for v in lrs[8:10]) and all(math.isclose(v, 0.0004) for v in lrs[10:])


def test_rded_schedule_optimizer_and_batch_sizes():
    assert ev.rded_lr_factor(0, 300) == 1.0 and math.isclose(ev.rded_lr_factor(300, 300), 0.5)
    assert math.isclose(ev.rded_lr_factor(150, 300), 0.5 * (1 + math.cos(math.pi / 4)))
    assert [ev.rded_batch_size(i, 10) for i in (1, 10, 50)] == [10, 50, 100]
    assert [ev.rded_batch_size(i, 1000) for i in (1, 10, 50)] == [20, 100, 200]
    assert ev.rded_batch_size(1, 5) == 5                     # capped at ipc × classes
    cfg = ev.eval_config("soft", "paper", "imagenet1k", 10)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.temperature, cfg.shuffle_factor) == ("adamw", 1e-3, 0.01, 300, 20.0, 2)
    assert cfg.rrc_scale == (0.5, 1.0) and cfg.eval_epochs() == [250, 260, 270, 280, 290, 300]
    groups = ev.param_groups(st.build_student("convnet", 10, 32, "soft", width=4), 0.01)
    assert groups[0]["weight_decay"] == 0.01 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])
    assert ev.eval_config("soft", "paper", "imagewoof", 10, student="mobilenet_v2").lr == 0.0025


def test_dsco_recipe_options_weight_decay_on_all_params_and_warmup_cosine():
    "DsCo's train.py AdamW decays every parameter (wd_all_params); its IN-1K high-IPC schedule warms up for E/10 epochs."
    cfg = ev.eval_config("soft", "paper", "imagenette", 10, student="convnet", width=4, size=32)
    assert cfg.wd_all_params is False and cfg.schedule == "rded_cosine"     # default: today's RDED groups
    model, opt, _ = ev.make_student(cfg, torch.device("cpu"))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    cfg = ev.eval_config("soft", "paper", "imagenette", 10, student="convnet", width=4, size=32, wd_all_params=True)
    model, opt, _ = ev.make_student(cfg, torch.device("cpu"))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())
    assert any(p.ndim == 1 for p in opt.param_groups[0]["params"])        # biases / norm parameters decay too
    assert [ev.warmup_cosine_factor(e, 100) for e in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert math.isclose(ev.warmup_cosine_factor(55, 100), 0.5) and abs(ev.warmup_cosine_factor(100, 100)) < 1e-12
    assert ev.warmup_cosine_factor(101, 100) == 0.0
    cfg = ev.eval_config("soft", "paper", "imagenet1k", 50, student="convnet", width=4, size=32, epochs=20,
                         schedule="warmup_cosine")
    _, opt, sched = ev.make_student(cfg, torch.device("cpu"))
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    assert math.isclose(lrs[0], 0.5e-3) and math.isclose(lrs[1], 1e-3) and math.isclose(lrs[2], 1e-3)
    assert math.isclose(lrs[11], 0.5e-3) and abs(lrs[20]) < 1e-12 and lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)
    with pytest.raises(ConfigError, match="warmup_cosine"):
        ev.make_student(ev.eval_config("hard", "paper", "imagenette", 10, student="convnet", width=4, size=32,
                                       schedule="cosine"), torch.device("cpu"))


def test_paper_and_embedded_presets():
    c = ev.eval_config("hard", "paper", "imagewoof", 50)
    assert (c.student, c.size, c.epochs, c.batch_size, c.optimizer, c.lr, c.momentum, c.weight_decay, c.gamma) == \
        ("resnet_ap10", 224, 1500, 64, "sgd", 0.01, 0.9, 5e-4, 0.2)
    assert (c.rrc_scale, c.flip, c.jitter, c.lighting, c.cutmix_p, c.cutmix_beta) == ((0.5, 1.0), True, 0.4, 0.1, 1.0, 1.0)
    assert c.eval_every == 15
    e = {(p, i): ev.eval_config(p, "embedded", "fashion_mnist", i) for p in ("hard", "soft") for i in (1, 10, 50)}
    assert [e["hard", i].epochs for i in (1, 10, 50)] == [100, 67, 50]
    assert [e["soft", i].epochs for i in (1, 10, 50)] == [150, 60, 30]
    for (p, i), c in e.items():
        assert c.width == 32 and c.student == "convnet" and len(c.eval_epochs()) == 2 and c.eval_epochs()[-1] == c.epochs
        assert c.optimizer == ("sgd" if p == "hard" else "adamw")
    with pytest.raises(ConfigError, match="unknown setting"):
        ev.eval_config("hard", "embedded", "fashion_mnist", 10, epoch=3)


# ---------------------------------------------------------------- augmentation
def test_rrc_boxes_follow_torchvision_rule():
    g = torch.Generator().manual_seed(0)
    b = ev.rrc_boxes(50000, 32, 32, (0.5, 1.0), generator=g)
    frac = (b[:, 2] * b[:, 3]).float() / 1024
    assert (b >= 0).all() and ((b[:, 0] + b[:, 2]) <= 32).all() and ((b[:, 1] + b[:, 3]) <= 32).all()
    assert frac.min() > 0.45 and frac.max() <= 1.0
    ar = (b[:, 3] / b[:, 2]).float()
    assert ar.min() > 0.6 and ar.max() < 1.5
    assert ev.rrc_boxes(3, 32, 32, (1.0, 1.0), generator=g).tolist() == [[0, 0, 32, 32]] * 3   # central fallback


def test_crop_resize_matches_grid_sample_and_slices():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 20, 24, generator=g)
    boxes = ev.rrc_boxes(32, 20, 24, (0.2, 1.0), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    torch.testing.assert_close(ev.crop_resize(x, boxes, 16, flip), ev.crop_resize_grid(x, boxes, 16, flip), atol=1e-5, rtol=1e-5)
    full = torch.tensor([[0, 0, 20, 24]] * 32)
    torch.testing.assert_close(ev.crop_resize(x, full, (20, 24)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.crop_resize(x, full, (20, 24), torch.ones(32, dtype=torch.bool)), x.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.crop_resize(x, torch.tensor([[2, 3, 8, 8]] * 32), 8), x[:, :, 2:10, 3:11], atol=1e-5, rtol=0)


def test_color_jitter_affine_equals_sequential_ops():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 3, 8, 8, generator=g)
    alpha, order = ev._jitter_draws(16, (0.4, 0.4, 0.4), g, "cpu")
    ref = []
    for i in range(16):
        xi = x[i:i + 1]
        for op in order[i].tolist(): xi = ev.jitter_ops(xi, alpha[i:i + 1])[op]
        ref.append(xi)
    torch.testing.assert_close(ev.color_affine(x, *ev.jitter_affine(alpha, order, x.mean((2, 3)))), torch.cat(ref), atol=1e-5, rtol=1e-5)
    # hand values: brightness 0.25 → ×0.75; saturation 1 → grey; contrast 1 → mean grey everywhere
    one = torch.tensor([[0.25, 0.0, 0.0]])
    torch.testing.assert_close(ev.jitter_ops(x[:1], one)[0], 0.75 * x[:1])
    grey = 0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    torch.testing.assert_close(ev.jitter_ops(x[:1], torch.tensor([[0, 0, 1.0]]))[2][0, 1], grey)
    torch.testing.assert_close(ev.jitter_ops(x[:1], torch.tensor([[0, 1.0, 0]]))[1], torch.full_like(x[:1], float(grey.mean())))
    assert (order.sort(1).values == torch.arange(3)).all()


def test_pca_lighting_offsets():
    off = ev.lighting_offset(20000, 0.1, torch.Generator().manual_seed(0))
    cov = torch.cov(off.T)
    # cov = V diag((0.1·λ)²) Vᵀ with the AlexNet eigen-pairs
    ref = ev._EIGVEC @ torch.diag((0.1 * ev._EIGVAL) ** 2) @ ev._EIGVEC.T
    torch.testing.assert_close(cov, ref, atol=2e-5, rtol=0.05)
    x = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(ev.pca_lighting(x, 0.0), x)


def test_cutmix_box_ratio_and_loss():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.5, 0.9):
        for _ in range(50):
            x1, y1, x2, y2 = ev.cutmix_box(32, 32, lam, rng)
            side = int(32 * math.sqrt(1 - lam))
            assert 0 <= x1 <= x2 <= 32 and 0 <= y1 <= y2 <= 32
            assert x2 - x1 <= 2 * (side // 2) and y2 - y1 <= 2 * (side // 2)
    x = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    xm, r = ev.apply_cutmix(x, torch.tensor([1, 0]), (0, 0, 16, 8))
    assert xm.shape == x.shape and math.isclose(r, 1 - 16 * 8 / 1024)
    assert float(xm[0].mean()) == pytest.approx(16 * 8 / 1024) and float(xm[1].mean()) == pytest.approx(1 - 16 * 8 / 1024)
    assert float(xm[0, :, :16, :8].min()) == 1.0 and float(xm[0, :, 16:].max()) == 0.0      # box on dims (2, 3)
    logits, y = torch.randn(6, 10), torch.arange(6)
    torch.testing.assert_close(ev.cutmix_ce(logits, y, y.roll(1), 0.25),
                               0.25 * F.cross_entropy(logits, y) + 0.75 * F.cross_entropy(logits, y.roll(1)))


def test_shuffle_patches_shapes_and_permutations():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8).repeat(30, 1, 1, 1)
    out = ev.shuffle_patches(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for i in range(len(x)):
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)
        cands = {(a, b): x[i].roll(4 * a, 2).roll(3 * b, 1) for a in (0, 1) for b in (0, 1)}
        hit = [k for k, v in cands.items() if torch.equal(out[i], v)]
        assert len(hit) == 1; seen.add(hit[0])
    assert len(seen) == 4                                       # all four half-swaps occur
    assert torch.equal(ev.shuffle_patches(x, 1), x)
    assert ev._strip_index(torch.tensor([[2, 0, 1]]), 9).tolist() == [[6, 7, 8, 0, 1, 2, 3, 4, 5]]
    o4 = ev.shuffle_patches(torch.rand(3, 3, 8, 8), 4, torch.Generator().manual_seed(0))
    assert o4.shape == (3, 3, 8, 8)


def test_augment_batch_shapes_per_protocol():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 40, 40)
    hard = ev.eval_config("hard", "paper", "imagewoof", 10, size=32)
    soft = ev.eval_config("soft", "paper", "imagewoof", 10, size=32, shuffle_factor=2)
    assert ev.augment_batch(x, hard, g).shape == (5, 3, 32, 32)
    assert ev.augment_batch(x, soft, g).shape == (5, 3, 32, 32)
    no = ev.eval_config("hard", "paper", "imagewoof", 10, size=40, rrc_scale=(1.0, 1.0), flip=False, jitter=0, lighting=0)
    torch.testing.assert_close(ev.augment_batch(x, no, g), x, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- soft-label loss
def test_soft_kl_temperature_scaling():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[20 * math.log(3.0), 0.0]])
    assert float(ev.soft_kl(s, t, 20.0)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    assert float(ev.soft_kl(a * 20, b * 20, 20.0)) == pytest.approx(float(ev.soft_kl(a, b, 1.0)), rel=1e-5)
    p, logq = F.softmax(b / 4, 1), F.log_softmax(a / 4, 1)
    assert float(ev.soft_kl(a, b, 4.0)) == pytest.approx(float((p * (p.log() - logq)).sum() / 4), rel=1e-5)   # batchmean, no T²


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    train, test = _set(3), _set(2, seed=1)
    with pytest.raises(DataError, match="fewer images than ipc=5: class 0"):
        ev.evaluate_set(train, test, ipc=5, device="cpu")
    bad = ImageSet(CM, torch.tensor([0, 1, 10]), torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"labels \[10\] are outside the class map of fashion_mnist"):
        ev.check_sets(bad)
    wrong = _set(1, cm=class_map("cifar100"))
    with pytest.raises(DataError, match="wrong number of classes"):
        ev.evaluate_set(train, wrong, device="cpu")
    missing = train.subset(torch.nonzero(train.labels != 4)[:, 0])
    with pytest.raises(DataError, match=r"no images of class\(es\) \[4\] \(Coat\)"):
        ev.check_sets(missing, test)
    with pytest.raises(ConfigError, match="has 1000 outputs but fashion_mnist has 10 classes"):
        bb.load_teacher(TinyTeacher(1000), CM, 16)
    with pytest.raises(ConfigError, match="has 7 outputs but imagewoof has 10 classes"):
        bb.load_teacher(TinyTeacher(7), class_map("imagewoof"), 16)
    with pytest.raises(ConfigError, match="needs a teacher"):
        bb.load_teacher(None, class_map("imagewoof"), 16)


def test_teacher_head_selection_and_checkpoint(tmp_path):
    woof = class_map("imagewoof")
    t, _ = bb.load_teacher(TinyTeacher(1000), woof, 16)
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(t(x), TinyTeacher(1000)(x)[:, list(woof.head_idx)])
    assert not any(p.requires_grad for p in t.parameters())
    s = st.build_student("convnet", 10, 32, "soft", "fashion_mnist", width=8)
    torch.save({"state_dict": {"module." + k: v for k, v in s.net.state_dict().items()}}, tmp_path / "t.pth")
    t2, _ = bb.load_teacher(str(tmp_path / "t.pth"), CM, 32, arch="convnet", width=8)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(t2(x), s.eval()(x))
    with pytest.raises(ConfigError, match="pass arch="):
        bb.load_teacher(str(tmp_path / "t.pth"), CM, 32)
    with pytest.raises(Exception, match="not found"):
        bb.load_teacher(str(tmp_path / "nope.pth"), CM, 32, arch="convnet")


# ---------------------------------------------------------------- baseline
def test_random_real_subset_deterministic_nested_cached(tmp_path):
    real = _set(30)
    a = ev.random_real_subset(real, 5, seed=3, cache_dir=tmp_path)
    b = ev.random_real_subset(real, 5, seed=3, cache_dir=tmp_path / "other")
    assert torch.equal(a.images, b.images) and a.per_class() == [5] * 10
    one = ev.random_real_subset(real, 1, seed=3, cache_dir=tmp_path)
    idx5, idx1 = (json.loads(Path(s.source["indices_file"]).read_text())["indices"] for s in (a, one))
    assert set(idx1) <= set(idx5)
    assert not torch.equal(ev.random_real_subset(real, 5, seed=4, cache_dir=tmp_path).images, a.images)
    with pytest.raises(DataError, match="fewer images than ipc=31"):
        ev.random_real_subset(real, 31, cache_dir=tmp_path)


# ---------------------------------------------------------------- the trained student comes back
@pytest.mark.parametrize("protocol", ["hard", "soft"])
def test_train_student_returns_the_model_that_scored_the_final_accuracy(protocol):
    from ddrepro.core import seed_everything
    train, test = _set(3, size=20), _set(5, size=20, seed=1)          # 20 px: the loop resizes to size 16
    cfg = ev.eval_config(protocol, "embedded", "fashion_mnist", 3, width=8, size=16, epochs=3, eval_every=1)
    teacher = TinyTeacher() if protocol == "soft" else None
    run, model = ev.train_student(cfg, train.images, train.labels, test.images, test.labels, teacher, seed=3,
                                  device="cpu", return_model=True)
    assert isinstance(run, dict) and isinstance(model, nn.Module)
    assert not model.training and {p.device.type for p in model.parameters()} == {"cpu"}
    # rescored as the loop scores: the test images prepared with cfg.test_resize, the same batch size
    xt = ev.prepare_images(test.images, cfg.size, cfg.test_resize)
    logits = st.predict_logits(model, xt, cfg.eval_batch_size, "cpu")
    assert float((logits.argmax(1) == test.labels).float().mean()) == run["final"]
    assert not model.training
    # it is the trained student, not the initial one
    seed_everything(3)
    fresh = ev.make_student(cfg, torch.device("cpu"))[0]
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    # the flag changes nothing in the run (same seeds, same arithmetic)
    plain = ev.train_student(cfg, train.images, train.labels, test.images, test.labels, teacher, seed=3, device="cpu")
    assert isinstance(plain, dict) and plain["curve"] == run["curve"] and plain["final"] == run["final"]


# ---------------------------------------------------------------- runs, records, merging
def _kw(tmp, **k):
    return dict(dict(preset="embedded", width=8, size=16, epochs=3, eval_every=1, device="cpu", verbose=False, out_dir=tmp), **k)


def test_evaluate_set_hard_record_and_determinism(tmp_path):
    train, test = _set(3), _set(2, seed=1)
    s = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "a"))
    rec = RunRecord.load(tmp_path / "a")
    assert rec.status == "complete" and rec.kind == "evaluate"
    assert rec.params["config"]["preset"] == "embedded" and rec.params["config"]["protocol"] == "hard"
    assert rec.results["seeds"] == [5, 6] and rec.results["best_label"] == "best (selected on test set)"
    assert rec.results["headline"] == "final"
    for run in rec.results["runs"]:
        assert [c[0] for c in run["curve"]] == [1, 2, 3]
        assert run["final"] == run["curve"][-1][1] and run["best"] == max(c[1] for c in run["curve"])
        assert run["n_train"] == 30 and run["n_test"] == 20 and run["epochs"] == 3
        # images/s is the images trained on (30 × 3 epochs) over the training time, both rounded in the record
        ips, ts = run["images_per_s"], run["train_s"]
        assert abs(ips * ts - 90) <= 0.0005 * ips + 0.05 * ts + 1e-6, (ips, ts)
    assert s["final_std"] == pytest.approx(float(np.std(s["finals"])))
    again = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "b"))
    assert again["finals"] == s["finals"]
    assert ev.evaluate_set(train, test, "hard", repeats=1, ipc=2, **_kw(tmp_path / "c"))["ipc"] == 2


def test_evaluate_set_soft_with_tiny_teacher(tmp_path):
    train, test = _set(3), _set(2, seed=1)
    s = ev.evaluate_set(train, test, "soft", repeats=1, teacher=TinyTeacher(), **_kw(tmp_path))
    rec = RunRecord.load(tmp_path)
    assert rec.params["config"]["optimizer"] == "adamw" and rec.params["teacher"].startswith("<module")
    assert s["protocol"] == "soft" and s["n_runs"] == 1
    # top-1 on the 20 test images: a count of correct images over 20, the last point of the curve
    run = rec.results["runs"][0]
    assert s["final_mean"] == run["final"] == run["curve"][-1][1] and (run["final"] * 20) == pytest.approx(round(run["final"] * 20), abs=1e-4)


def test_merge_runs_logic():
    runs = [dict(repeat=r, seed=r, final=f, best=b, images_per_s=10, eval_s=1, wall_s=2)
            for r, f, b in [(2, 0.5, 0.6), (0, 0.7, 0.8), (1, 0.6, 0.6)]]
    m = ev.merge_runs(runs, 3)
    assert m["finals"] == [0.7, 0.6, 0.5] and m["final_mean"] == pytest.approx(0.6)
    assert m["final_std"] == pytest.approx(float(np.std([0.7, 0.6, 0.5])))      # ddof 0
    assert m["best_mean"] == pytest.approx(2 / 3) and m["best_label"] == ev.BEST_LABEL
    with pytest.raises(DataError, match="expected repeats 0..3"):
        ev.merge_runs(runs, 4)
    with pytest.raises(DataError, match="more than once"):
        ev.merge_runs(runs + runs[:1])


def test_sharded_repeats_merge_into_one_record(tmp_path):
    train, test = _set(2), _set(2, seed=1)
    kw = _kw(tmp_path / "shard")
    part = ev.evaluate_set(train, test, "hard", repeats=3, rank=1, world_size=2, **kw)
    assert [r["repeat"] for r in part["runs"]] == [1] and not (tmp_path / "shard" / "record.json").exists()
    # a stale file of another evaluation must be ignored, not merged
    stale = json.loads((tmp_path / "shard" / "repeats" / "repeat_1.json").read_text())
    full = ev.evaluate_set(train, test, "hard", repeats=3, rank=0, world_size=2, **kw)
    assert full["n_runs"] == 3 and full["seeds"] == [0, 1, 2]
    seq = ev.evaluate_set(train, test, "hard", repeats=3, **_kw(tmp_path / "seq"))
    assert seq["finals"] == full["finals"]
    (tmp_path / "x" / "repeats").mkdir(parents=True)
    (tmp_path / "x" / "repeats" / "repeat_1.json").write_text(json.dumps(dict(stale, fingerprint="other", final=-1)))
    again = ev.evaluate_set(train, test, "hard", repeats=3, **_kw(tmp_path / "x"))
    assert again["finals"] == seq["finals"]


def test_two_processes_with_launcher_env(tmp_path):
    "Two real processes with RANK/WORLD_SIZE (what accelerate launch sets) produce one merged record."
    code = ("import torch, sys; sys.path.insert(0, %r); from test_evaluate import _set, _kw; from ddrepro import evaluate as ev; "
            "ev.evaluate_set(_set(2), _set(2, seed=1), 'hard', repeats=2, **_kw(%r))") % (str(Path(__file__).parent), str(tmp_path))
    env = {**os.environ, "WORLD_SIZE": "2", "DDREPRO_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (1, 0)]
    assert [p.wait(timeout=150) for p in procs] == [0, 0]
    rec = RunRecord.load(tmp_path)
    assert rec.status == "complete" and rec.results["n_runs"] == 2 and rec.params["world_size"] == 2


def test_evaluate_folder_and_table(tmp_path, monkeypatch):
    from ddrepro import data
    train, test = _set(6, size=32), _set(3, seed=1, size=32)
    save_image_set(train.images[::2], train.labels[::2], tmp_path / "distilled", CM)
    monkeypatch.setattr(data, "load_real", lambda dataset, split="train", data_root=None, **kw: train if split == "train" else test)
    res = ev.evaluate_folder(tmp_path / "distilled", "fashion_mnist", 3, "hard", repeats=1, out_dir=tmp_path / "out",
                             device="cpu", width=8, epochs=2, eval_every=1, verbose=False)
    assert set(res) == {"distilled", "random_real"}
    assert (tmp_path / "out" / "distilled" / "record.json").exists() and (tmp_path / "out" / "random_real" / "record.json").exists()
    table = ev.results_table(list(res.items()))
    assert "embedded" in table and ev.BEST_LABEL in table and "final top-1 % (headline)" in table


def test_torchvision_teacher_from_local_cache_only(tmp_path, monkeypatch):
    "The hub path reads the torch hub cache and never downloads; a 1000-way head is cut to the subset's classes."
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(Exception, match="not available offline"):
        bb.load_teacher("torchvision:resnet18", class_map("imagewoof"), 64)
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), ckpt / "resnet18-f37072fd.pth")
    woof = class_map("imagewoof")
    t, _ = bb.load_teacher("torchvision:resnet18", woof, 64)
    x = torch.rand(2, 3, 64, 64)
    ref = net.eval()((x - torch.tensor(st.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(st.IMAGENET_STD).view(1, 3, 1, 1))
    torch.testing.assert_close(t(x), ref[:, list(woof.head_idx)], atol=1e-5, rtol=1e-5)


def test_evaluate_set_learns_a_learnable_set(tmp_path):
    # the class-dependent bright square is learnable: far above chance (0.1) after 300 short epochs
    s = ev.evaluate_set(_set(3), _set(2, seed=1), "hard", repeats=1, seed=5, **_kw(tmp_path, epochs=300))
    assert s["final_mean"] >= 0.4 and s["best_mean"] >= s["final_mean"]


def test_evaluate_sets_in_worker_processes_equals_one_after_another(tmp_path):
    # two evaluations at once in spawned processes (one thread each) give the numbers of one-thread runs in turn
    from ddrepro.data import load_real
    from ddrepro.evaluate import random_real_subset
    from ddrepro.evaluate import evaluate_sets
    train, test = load_real("fashion_mnist", "train"), load_real("fashion_mnist", "val")
    test = test.subset(np.arange(0, 10000, 50))
    sets = {("random", ""): random_real_subset(train, 2, 0), ("random", "s1"): random_real_subset(train, 2, 1)}
    kw = dict(repeats=1, epochs=2, batch_size=10, width=16)
    seq = evaluate_sets(sets, test, ["convnet"], out_dir=tmp_path / "seq", device="cpu", workers=1, threads=1, **kw)
    par = evaluate_sets(sets, test, ["convnet"], out_dir=tmp_path / "par", device="cpu", workers=2, **kw)
    assert [r["acc_final_mean"] for r in seq] == [r["acc_final_mean"] for r in par]
    assert [r["selector"] for r in par] == ["", "s1"] and all(Path(r["record"]).exists() for r in par)


def test_a_training_run_is_shared_between_records_by_fingerprint_and_seed(tmp_path, monkeypatch):
    "Two records that train the same set with the same settings and seeds: the second reuses the first's runs."
    monkeypatch.setenv("DDREPRO_EVAL_CACHE", str(tmp_path / "cache"))
    train, test = _set(3), _set(2, seed=1)
    a = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "a"))
    assert sorted(p.name for p in (tmp_path / "cache" / a["fingerprint"]).iterdir()) == ["seed5.json", "seed6.json"]
    b = ev.evaluate_set(train, test, "hard", repeats=3, seed=5, **_kw(tmp_path / "b"))     # one more run: only it trains
    assert b["fingerprint"] == a["fingerprint"] and b["finals"][:2] == a["finals"]
    assert set(RunRecord.load(tmp_path / "b").stages) & {"repeat_0", "repeat_1", "repeat_2"} == {"repeat_2"}
    e = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "e", epochs=2))   # other settings: trains
    assert e["fingerprint"] != a["fingerprint"] and "repeat_0" in RunRecord.load(tmp_path / "e").stages
    c = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "c"))
    assert c["finals"] == a["finals"] and "repeat_0" not in RunRecord.load(tmp_path / "c").stages     # nothing trained
    assert ev.read_json(tmp_path / "c" / "repeats" / "repeat_1.json")["cached_from"].endswith("a/repeats/repeat_1.json")
    other = _set(3, seed=7)                                                                # another training set: trains
    d = ev.evaluate_set(other, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "d"))
    assert d["fingerprint"] != a["fingerprint"] and "repeat_0" in RunRecord.load(tmp_path / "d").stages
    monkeypatch.setenv("DDREPRO_EVAL_CACHE", "off")
    assert ev.eval_cache_dir() is None and ev.cached_run(a["fingerprint"], 5) is None


def test_evaluate_sets_keeps_the_draw_of_three_part_keys(tmp_path):
    train, test = _set(3), _set(2, seed=1)
    rows = ev.evaluate_sets({("pool", "A", 0): train, ("pool", "A", 1): _set(3, seed=4), ("pool", "sas"): train}, test,
                            ["convnet"], repeats=2, seed=5, out_dir=tmp_path, device="cpu", width=8, size=16, epochs=3, eval_every=1)
    assert [r.get("draw") for r in rows] == [0, 1, None] and [r["selector"] for r in rows] == ["A", "A", "sas"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool_A_draw0_convnet", "pool_A_draw1_convnet", "pool_sas_convnet"]
    p = ev.paired_rows(rows, ("pool", "A"))                 # both draws are the baseline: SE over draws
    assert p[2]["delta_se_over"] == "selection and training seeds" and p[2]["delta_pairs"] == 4


# ---------------------------------------------------------------- paired comparisons
def test_paired_difference_of_a_set_with_itself_is_exactly_zero(tmp_path):
    "Same set, same seeds, same arithmetic: every per-seed difference is 0, so Δ = 0 and SE = 0 exactly."
    train, test = _set(3), _set(2, seed=1)
    a = ev.evaluate_set(train, test, "hard", repeats=3, seed=5, **_kw(tmp_path / "a"))
    b = ev.evaluate_set(train, test, "hard", repeats=3, seed=5, **_kw(tmp_path / "b"))
    p = ev.paired_difference(a, b)
    assert p["delta"] == 0.0 and p["se"] == 0.0 and p["n_pairs"] == 3


def test_paired_difference_sees_label_noise(tmp_path):
    "Two sets that differ only in their labels (half of them shuffled): the clean one is better, by more than 2 SE."
    train, test = _set(4), _set(3, seed=1)
    g = torch.Generator().manual_seed(0)
    noisy_labels = train.labels.clone()
    flip = torch.arange(len(noisy_labels))[::2]
    noisy_labels[flip] = noisy_labels[flip][torch.randperm(len(flip), generator=g)]
    noisy = ImageSet(CM, noisy_labels, train.images, source=dict(kind="synthetic", noise=0.5))
    assert (noisy_labels != train.labels).sum() >= 10
    rows = ev.evaluate_sets({("clean", ""): train, ("noisy", ""): noisy}, test, ["convnet"], repeats=4, seed=3,
                            out_dir=tmp_path, device="cpu", **{k: v for k, v in _kw(tmp_path, epochs=60).items()
                                                                if k not in ("device", "out_dir", "preset")})
    paired = {r["method"]: r for r in ev.paired_rows(rows, "noisy")}
    assert paired["noisy"]["delta_mean"] == 0.0
    d, se = paired["clean"]["delta_mean"], paired["clean"]["delta_se"]
    print(f"clean − noisy: {100 * d:+.1f} ± {100 * se:.1f} points")
    assert d > 0 and d > 2 * se, (d, se)


def test_dsa_augmentation_option_trains_and_differs_from_rrc(tmp_path):
    "EvalConfig.augment='dsa' (Zhao & Bilen 2021) runs through the one training loop and learns the learnable set."
    train, test = _set(3), _set(2, seed=1)
    d = ev.evaluate_set(train, test, "hard", repeats=1, seed=5, **_kw(tmp_path / "d", epochs=200, augment="dsa", cutmix_p=0.0))
    r = ev.evaluate_set(train, test, "hard", repeats=1, seed=5, **_kw(tmp_path / "r", epochs=200, augment="rrc", cutmix_p=0.0))
    assert d["final_mean"] >= 0.4 and d["finals"] != r["finals"]
    with pytest.raises(ConfigError, match="augment='mixup'"):
        ev.eval_config("hard", "embedded", "fashion_mnist", 10, augment="mixup")


def test_a_cached_run_takes_this_records_repeat_index(tmp_path, monkeypatch):
    "Runs cached by one-seed records (each its own run 0) merge into a many-run record as runs 0, 1, … of that record."
    monkeypatch.setenv("DDREPRO_EVAL_CACHE", str(tmp_path / "cache"))
    train, test = _set(3), _set(2, seed=1)
    singles = [ev.evaluate_set(train, test, "hard", repeats=1, seed=s, **_kw(tmp_path / f"s{s}")) for s in (5, 6)]
    both = ev.evaluate_set(train, test, "hard", repeats=2, seed=5, **_kw(tmp_path / "both"))      # all from the cache
    assert both["finals"] == [x["finals"][0] for x in singles] and both["seeds"] == [5, 6]
    assert [ev.read_json(tmp_path / "both" / "repeats" / f"repeat_{r}.json")["repeat"] for r in (0, 1)] == [0, 1]
