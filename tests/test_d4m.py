"""Unit tests of ddrepro.d4m (D4M, Su et al., CVPR 2024, arXiv 2407.15138; the base of VLCP, Zou et al., ICCV 2025,
arXiv 2506.23580): LOF on planted outliers, k-means on planted clusters, per-class prototypes and their errors, the
SD-1.5 img2img start (t = 701 / 36 PNDM steps at strength 0.7), strength matching on another schedule, prototype
img2img synthesis on tiny random models (image k = prototype k, resume), the config checks and a tiny end-to-end run."""
from pathlib import Path

import dataclasses
import numpy as np
import pytest
import torch

from ddrepro.backbones import TextBackbone
from ddrepro.core import ConfigError, DataError, read_json
from ddrepro.d4m import (SD15_SCHEDULER, ClassPrototypes, D4MConfig, centre_separation, class_prototypes, d4m_distill,
                         img2img_start, kmeans_prototypes, load_prototypes, lof_inliers, match_strength,
                         prototype_latents, prototype_payload, resize_square, sd_img2img_start, synthesize)
from ddrepro.data import ClassMap, load_distilled, read_image
from ddrepro.diffusion import decode_latents, make_scheduler, random_unet, random_vae
from ddrepro.pools import TextGenerator
from ddrepro.zoo import tiny_text_encoder

CM3 = ClassMap("toy", folders=("a", "b", "c"), names=("shirt", "bag", "boot"), prompt_names=("shirt", "bag", "boot"))


def blobs(seed=0, n=20, spread=0.3, centres=((0.0, 0.0), (10.0, 0.0), (0.0, 10.0))):
    rng = np.random.default_rng(seed)
    c = np.asarray(centres)
    return np.concatenate([m + spread * rng.standard_normal((n, c.shape[1])) for m in c]), np.repeat(np.arange(len(c)), n)


def test_resize_square_squashes_without_crop():
    x = torch.zeros(1, 1, 4, 8, dtype=torch.uint8); x[..., 4:] = 255          # left half black, right half white
    y = resize_square(x, 8)                                       # 4×8 → 8×8: stretched in height, nothing cut
    assert y.shape == (1, 3, 8, 8) and y.dtype == torch.float32
    assert torch.allclose(y[..., :4], torch.zeros(1, 3, 8, 4), atol=1e-6) and torch.allclose(y[..., 4:], torch.ones(1, 3, 8, 4), atol=1e-6)
    with pytest.raises(DataError, match=r"\[0, 1\]"): resize_square(torch.full((1, 3, 2, 2), 2.0), 4)


def test_lof_flags_planted_far_outliers():
    x, _ = blobs(n=30)
    x = np.concatenate([x, [[60.0, 60.0], [-50.0, 20.0], [30.0, -70.0]]])
    inl = lof_inliers(x, 3 / len(x))
    assert np.nonzero(~inl)[0].tolist() == [90, 91, 92]


def test_lof_contamination_zero_is_all_inliers_without_running():
    x, _ = blobs(n=3)
    assert lof_inliers(x, 0.0).all() and len(lof_inliers(x, 0.0)) == 9      # 9 samples < n_neighbors: LOF not run
    with pytest.raises(DataError, match="9 samples but n_neighbors=10"): lof_inliers(x, 0.1)
    with pytest.raises(ConfigError, match="contamination=0.51"): lof_inliers(x, 0.51)


def test_kmeans_recovers_planted_clusters_and_is_deterministic():
    x, g = blobs(seed=1, n=25)
    for alg, bs in (("kmeans", None), ("minibatch", 15)):     # D4M's chunks of k = 3 are too small to be reliable
        c, a = kmeans_prototypes(x, 3, seed=4, algorithm=alg, batch_size=bs)
        assert all(len(set(a[g == i])) == 1 for i in range(3)) and len(set(a)) == 3, alg
        c2, a2 = kmeans_prototypes(x, 3, seed=4, algorithm=alg, batch_size=bs)
        assert np.array_equal(c, c2) and np.array_equal(a, a2)
    c, a = kmeans_prototypes(x, 3, seed=0)
    assert np.allclose(np.sort(c[:, 0] + c[:, 1]), [0, 10, 10], atol=0.5)
    with pytest.raises(DataError, match="2 samples cannot make k=3"): kmeans_prototypes(x[:2], 3)


def test_class_prototypes_keeps_inliers_assignments_and_indices():
    x, g = blobs(seed=2, n=15)
    lat = torch.tensor(x, dtype=torch.float32).view(-1, 2, 1, 1)
    y = np.where(g == 2, 1, 0)                                     # class 0 = two planted groups, class 1 = one
    P = class_prototypes(lat, y, 2, seed=0, class_names=["u", "v"])
    assert [p.class_id for p in P] == [0, 1] and P[0].name == "u"
    assert P[0].indices.tolist() == list(range(30)) and P[1].indices.tolist() == list(range(30, 45))
    assert sorted(P[0].cluster_sizes().tolist()) == [15, 15] and P[0].centres.shape == (2, 2, 1, 1)
    assert set(P[0].members(int(P[0].assignment[0]))) == set(range(15))


def test_class_with_fewer_inliers_than_ipc_is_a_data_error():
    x, g = blobs(seed=3, n=20)
    lat = torch.tensor(x, dtype=torch.float32).view(-1, 2, 1, 1)
    with pytest.raises(DataError, match=r"class 0 \(shirt\): 18 inlier\(s\) of 20 image\(s\) after LOF \(contamination 0.1\) but ipc=19"):
        class_prototypes(lat, g, 19, contamination=0.1, class_names=list(CM3.names))
    with pytest.raises(DataError, match="class 0: 20 inlier"):
        class_prototypes(lat, g, 21)


def test_sd15_img2img_start_numbers():
    p = sd_img2img_start(0.7, 50, "pndm")
    assert (p["t_start"], p["kept_steps"]) == (701, 36) and abs(p["alpha_bar"] - 0.0819) < 5e-4
    d = sd_img2img_start(0.7, 50, "ddim")
    assert (d["t_start"], d["kept_steps"]) == (681, 35)
    assert make_scheduler("ddim", SD15_SCHEDULER).config.timestep_spacing == "leading"


def test_match_strength_is_exact_on_the_schedulers_own_alpha_bar():
    s = make_scheduler("ddim")
    for j in (3, 29, 35, 50):                                      # 29/50 and 35/50 are not exact floats
        t = img2img_start(s, 50, min(j / 50 + 1e-9, 1.0))
        m = match_strength(s, 50, t["alpha_bar"])
        assert m["kept_steps"] == j and m["t_start"] == t["t_start"] and abs(m["strength"] - j / 50) < 1e-12
        assert int(50 * m["strength"]) == j
    z = match_strength(s, 50, sd_img2img_start()["alpha_bar"])    # the zoo's schedule: a different strength than 0.7
    assert abs(z["strength"] - 0.5) < 1e-12 and z["t_start"] == 489


def tiny_generator(strength):
    vae = random_vae(block_out_channels=(8, 16), sample_size=16)
    te = tiny_text_encoder(dim=16)
    return TextGenerator(random_unet(sample_size=8, cross_attention_dim=16), vae, te.encode, CM3.prompts("{}"),
                         cfg_scale=2.0, num_steps=50, strength=strength, name="test-d4m"), vae


def colour_prototypes(vae, per_class=2):
    cols = torch.linspace(0.05, 0.95, 3 * per_class)
    img = torch.stack([torch.stack([v, 1 - v, v * v]).view(3, 1, 1).expand(3, 16, 16) for v in cols])
    z = prototype_latents(vae, img, mode="mean")
    e = np.zeros(0, int)
    return z, [ClassPrototypes(c, z[per_class * c:per_class * (c + 1)], e, e.astype(bool), e) for c in range(3)]


def test_synthesize_image_k_is_prototype_k_and_resumes(tmp_path):
    gen, vae = tiny_generator(1 / 50)
    z, P = colour_prototypes(vae)
    rec = synthesize(gen, P, CM3, tmp_path, seed=0, device="cpu")
    files = [tmp_path / f / f"{k}.png" for f in CM3.folders for k in range(2)]
    out = torch.stack([read_image(f) for f in files]).float() / 255
    with torch.no_grad(): dec = decode_latents(vae, z)
    d = ((out[:, None] - dec[None]) ** 2).mean((2, 3, 4))
    assert d.argmin(1).tolist() == list(range(6)) and float((out - dec).abs().mean()) < 0.02
    assert rec.stages["generate"]["images"] == 6
    before = [f.stat().st_mtime_ns for f in files]
    rec2 = synthesize(gen, P, CM3, tmp_path, seed=0, device="cpu")
    assert rec2.stages["generate"]["images"] == 0 and [f.stat().st_mtime_ns for f in files] == before
    P2 = [ClassPrototypes(p.class_id, p.centres + 1, p.assignment, p.inliers, p.indices) for p in P]
    with pytest.raises(ConfigError, match="payload"):                   # other prototypes: refused, not mixed
        synthesize(gen, P2, CM3, tmp_path, seed=0, device="cpu")


def test_synthesize_uses_per_prototype_prompts_and_needs_img2img(tmp_path):
    gen, vae = tiny_generator(0.3)
    _, P = colour_prototypes(vae)
    pay = prototype_payload(P, {0: ["a", "b"], 1: ["c", "d"], 2: ["e", "f"]})
    assert pay(2, 1)["prompt"] == "f" and torch.equal(pay(2, 1)["init_latents"], P[2].centres[1])
    gen.strength = 1.0
    with pytest.raises(ConfigError, match="strength=1.0"): synthesize(gen, P, CM3, tmp_path, device="cpu")
    with pytest.raises(DataError, match="class 1 has 2 prototypes but 1 prompts"): prototype_payload(P, {0: ["a", "b"], 1: ["c"], 2: ["e", "f"]})


def test_d4m_distill_end_to_end(tmp_path):
    te = tiny_text_encoder(dim=16)
    bb = TextBackbone(random_unet(sample_size=4, cross_attention_dim=16), random_vae(block_out_channels=(8, 16), sample_size=8), te)
    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(3).repeat_interleave(10)
    cfg = D4MConfig(ipc=2, num_steps=8, guidance=3.0)
    res = d4m_distill(images, labels, CM3, bb, cfg, tmp_path, device="cpu")
    ds = load_distilled(res["distilled"], CM3, ipc=2, exact=True)
    assert ds.per_class() == [2, 2, 2]
    P = load_prototypes(res["prototypes"])
    assert [p.k for p in P] == [2, 2, 2] and all(p.inliers.all() for p in P)      # D4M: no LOF
    assert sum(int(p.cluster_sizes().sum()) for p in P) == 30
    rec = read_json(tmp_path / "d4m.json")
    assert rec["strength"]["reference"] == sd_img2img_start(0.7, 8) and rec["strength"]["requested"] == 0.7
    assert rec["config"]["kmeans"] == "minibatch"
    st = res["strength"]
    assert st["kept_steps"] == int(8 * st["used"]) and st["t_start"] == img2img_start(make_scheduler("ddim"), 8, st["used"])["t_start"]
    # the same prototypes again: the pool resumes, the distilled folder is rewritten identically
    a = read_image(Path(res["distilled"]) / "b" / "1.png")
    d4m_distill(images, labels, CM3, bb, cfg, tmp_path, device="cpu", prototypes=P)
    assert torch.equal(a, read_image(Path(res["distilled"]) / "b" / "1.png"))
    with pytest.raises(DataError, match="cfg.ipc=3"):
        d4m_distill(images, labels, CM3, bb, D4MConfig(ipc=3, num_steps=8), tmp_path / "x", device="cpu", prototypes=P)
    # out_size: the distilled images are the pool's, resized (PIL bicubic) to the saved size; the pool keeps the decoder's
    res5 = d4m_distill(images, labels, CM3, bb, dataclasses.replace(cfg, out_size=5), tmp_path / "s", device="cpu", prototypes=P)
    assert read_image(Path(res5["distilled"]) / "b" / "1.png").shape == (3, 5, 5)
    assert read_image(Path(res5["pool"]) / "b" / "1.png").shape == a.shape


@pytest.mark.parametrize("bad,msg", [(dict(ipc=0), "ipc=0"), (dict(contamination=0.6), "contamination=0.6"),
                                     (dict(kmeans="spectral"), "kmeans='spectral'"), (dict(strength=0.0), "strength=0.0"),
                                     (dict(strength_match="sigma"), "strength_match='sigma'"), (dict(guidance=0), "guidance=0"),
                                     (dict(prompt_template="photo"), "prompt_template='photo'"),
                                     (dict(latent_mode="argmax"), "latent_mode='argmax'"), (dict(n_neighbors=-1), "n_neighbors=-1"),
                                     (dict(prototype_size=-4), "prototype_size=-4"), (dict(out_size=0), "out_size=0"), (dict(num_steps=1, strength=0.5), "keeps no step")])
def test_bad_config_values_raise(bad, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        D4MConfig(**bad)


def test_centre_separation_by_hand():
    s = centre_separation(torch.tensor([[0.0, 0.0], [6.0, 8.0], [0.0, 8.0]]).view(3, 2, 1, 1))
    assert abs(s["min"] - 6.0) < 1e-9 and abs(s["mean"] - (10 + 8 + 6) / 3) < 1e-9
