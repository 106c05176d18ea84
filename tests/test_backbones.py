"Tests of ddrepro.backbones: local loading of tiny saved models, Meta DiT conversion (forward-exact), offline errors."
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ddrepro.diffusion import random_dit, random_unet, random_vae
from ddrepro.backbones import (HUB, Asset, convert_meta_dit, load_clip, load_dit, load_teacher, load_text_backbone,
                               load_vae, meta_dit_config, tiny_clip_text, weights_sha256)
from ddrepro.core import AssetError, ConfigError, RunRecord, file_sha256
from ddrepro.data import class_map, load_real
from ddrepro import zoo


# --- a re-implementation of Meta's DiT (facebookresearch/DiT models.py) to check the conversion ---------

def _modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class MetaBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        from timm.models.vision_transformer import Attention, Mlp
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=d, hidden_features=4 * d, act_layer=lambda: nn.GELU(approximate="tanh"), drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        sm, cm, gm, sf, cf, gf = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gm.unsqueeze(1) * self.attn(_modulate(self.norm1(x), sm, cm))
        return x + gf.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), sf, cf))


class MetaDiT(nn.Module):
    "DiT as in Meta's models.py (learn_sigma → 2C outputs), small."
    def __init__(self, size=8, p=2, c=4, d=32, depth=2, heads=2, classes=10):
        super().__init__()
        from timm.models.vision_transformer import PatchEmbed
        self.p, self.c_out = p, 2 * c
        self.x_embedder = PatchEmbed(size, p, c, d, bias=True)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(classes + 1, d)
        self.pos_embed = nn.Parameter(self.sincos_2d(d, size // p).unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList([MetaBlock(d, heads) for _ in range(depth)])
        self.final_layer = nn.Module()
        self.final_layer.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_layer.linear = nn.Linear(d, p * p * self.c_out)
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    @staticmethod
    def sincos_2d(d, g):
        "MAE/DiT fixed 2-D sin-cos position embedding of a g×g grid: (g*g, d)."
        def one_d(dim, pos):
            omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
            out = pos.reshape(-1)[:, None] * omega[None]
            return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
        gw, gh = torch.meshgrid(torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="xy")
        return torch.cat([one_d(d // 2, gw), one_d(d // 2, gh)], dim=1).float()

    @staticmethod
    def timestep_embedding(t, dim=256, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, x, t, y):
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder.mlp(self.timestep_embedding(t)) + self.y_embedder.embedding_table(y)
        for blk in self.blocks: h = blk(h, c)
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, dim=1)
        h = self.final_layer.linear(_modulate(self.final_layer.norm_final(h), shift, scale))
        n, g = h.shape[0], int(h.shape[1] ** 0.5)
        h = h.reshape(n, g, g, self.p, self.p, self.c_out)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(n, self.c_out, g * self.p, g * self.p)


@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ref = MetaDiT().eval()
    with torch.no_grad():
        for prm in ref.parameters():
            if prm.requires_grad: prm.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("meta") / "DiT-tiny.pt"
    torch.save({"model": ref.state_dict(), "ema": ref.state_dict(), "args": None}, path)
    return ref, path


def test_meta_checkpoint_converts_forward_exact(meta_ckpt):
    ref, path = meta_ckpt
    model, asset = load_dit(path, num_heads=2)
    assert asset.source == "local" and asset.sha256 == file_sha256(path) and model.meta_timesteps
    x = torch.randn(3, 4, 8, 8)
    t, y = torch.tensor([0, 500, 999]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        a = ref(x, t, y)
        b = model(x, timestep=t, class_labels=y).sample
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # diffusers' own timestep embedding (i/127) differs from Meta's: the compat swap is what makes it exact
    plain, _ = load_dit(path, num_heads=2, meta_timesteps=False)
    with torch.no_grad():
        c = plain(x, timestep=t, class_labels=y).sample
    assert (a - c).abs().max() > 1e-4


def test_meta_config_standard_widths():
    sd = {"x_embedder.proj.weight": torch.zeros(1152, 4, 2, 2), "final_layer.linear.weight": torch.zeros(32, 1152),
          "pos_embed": torch.zeros(1, 256, 1152), "y_embedder.embedding_table.weight": torch.zeros(1001, 1152),
          **{f"blocks.{i}.attn.qkv.weight": None for i in range(28)}}
    cfg = meta_dit_config(sd)
    assert (cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["num_layers"], cfg["out_channels"],
            cfg["sample_size"], cfg["num_embeds_ada_norm"]) == (16, 72, 28, 8, 32, 1000)
    sd["x_embedder.proj.weight"] = torch.zeros(100, 4, 2, 2)
    with pytest.raises(AssetError, match="num_heads"):
        meta_dit_config(sd)


# --- local diffusers folders ------------------------------------------------------------------------

def test_local_diffusers_dit_and_vae(tmp_path):
    dit, vae = random_dit("tiny"), random_vae()
    dit.save_pretrained(tmp_path / "dit")
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    m, a = load_dit(tmp_path / "dit")
    v, b = load_vae(tmp_path / "pipe")                           # pipeline folder → vae/ subfolder
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x, timestep=torch.tensor([3, 3]), class_labels=torch.tensor([0, 1])).sample,
                           dit(x, timestep=torch.tensor([3, 3]), class_labels=torch.tensor([0, 1])).sample)
    assert not m.training and not getattr(m, "meta_timesteps", False)
    assert a.sha256 == file_sha256(tmp_path / "dit" / "diffusion_pytorch_model.safetensors")
    assert b.path.endswith("vae") and v.config.scaling_factor == vae.config.scaling_factor
    rec = RunRecord.start(tmp_path / "run", {"x": 1})
    a.record(rec); b.record(rec)
    saved = json.loads((tmp_path / "run" / "record.json").read_text())["assets"]
    assert saved["dit"]["sha256"] == a.sha256 and saved["vae"]["source"] == "local"


def test_hf_cache_blob_name_is_the_sha256(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir(); blob.write_bytes(b"weights")
    snap = tmp_path / "snap"; snap.mkdir()
    (snap / "diffusion_pytorch_model.safetensors").symlink_to(blob)
    assert weights_sha256(snap) == "ab" * 32
    (tmp_path / "plain").mkdir(); (tmp_path / "plain" / "model.safetensors").write_bytes(b"abc")
    assert weights_sha256(tmp_path / "plain") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_local_sd_pipeline_folder(tmp_path):
    from ddrepro.diffusion import make_scheduler, sample_text
    te, tok = tiny_clip_text()
    random_unet().save_pretrained(tmp_path / "unet"); random_vae().save_pretrained(tmp_path / "vae")
    te.save_pretrained(tmp_path / "text_encoder"); tok.save_pretrained(tmp_path / "tokenizer")
    make_scheduler("ddpm").save_pretrained(tmp_path / "scheduler")
    (tmp_path / "model_index.json").write_text(json.dumps({"text_encoder": ["transformers", "CLIPTextModel"],
                                                           "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}))
    bb = load_text_backbone(tmp_path)
    s = bb.encode(["a photo of a shirt", ""])
    assert s.shape == (2, 8, 16) and bb.scheduler_config["_class_name"] == "DDPMScheduler"
    out = sample_text(bb.unet, bb.vae, s[:1], [0], uncond_states=s[1:], num_steps=3,
                      scheduler=make_scheduler("ddim", bb.scheduler_config))
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(AssetError, match="pipeline folder"):
        load_text_backbone(tmp_path / "unet")


# --- missing / offline weights: one clear error, fast -----------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda: load_dit("DiT-XL-2-256"), ["facebook/DiT-XL-2-256", "revision main", "dit_path="]),
    (lambda: load_dit("DiT-XL-2-256", revision="0123abc"), ["revision 0123abc"]),
    (lambda: load_vae("sd-vae-ft-ema"), ["stabilityai/sd-vae-ft-ema", "vae_path="]),
    (lambda: load_text_backbone("sd-2.1-unclip-img2img"), ["radames/stable-diffusion-2-1-unclip-img2img", "sd_path="]),
    (lambda: load_text_backbone("sd-1.5"), ["stable-diffusion-v1-5", "sd_path="]),
    (lambda: load_clip("clip-vit-b-32-openai"), ["ViT-B-32", "openai", "clip_path="]),
    (lambda: load_dit("/does/not/exist.pt"), ["/does/not/exist.pt"]),
])
def test_missing_weights_fail_fast_with_instructions(call, words, monkeypatch):
    "Offline, a missing checkpoint is one AssetError naming what to fetch, raised without trying the network."
    import socket
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-ddrepro-hf-home")
    dialled = []
    def no_network(self, address, *a, **k):
        dialled.append(address)
        raise OSError(f"test: no network ({address})")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: no_network(None, host))
    with pytest.raises(AssetError) as e:
        call()
    assert dialled == [], f"tried to connect to {dialled}"
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="DiT-XL-2-256"):
        load_dit("DiT-XXL")
    with pytest.raises(ConfigError, match="sd-vae-ft-mse"):
        load_vae("sd-vae")


def test_teacher_from_local_checkpoint(tmp_path):
    from ddrepro.students import build_student
    cm = class_map("fashion_mnist")
    net = build_student("convnet3", 10, 32, "soft", "fashion_mnist")
    torch.save(net.state_dict(), tmp_path / "t.pt")
    model, asset = load_teacher(tmp_path / "t.pt", cm, arch="convnet3", size=32)
    assert asset.sha256 == file_sha256(tmp_path / "t.pt")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.hub
def test_hub_dit_xl_2_loads():
    "Needs the checkpoint in the HF cache (or network with download=True)."
    model, asset = load_dit("DiT-XL-2-256", download=True)
    assert model.config.num_layers == 28 and len(asset.revision) == 40


# --- pool generators / encoders by name ------------------------------------------------------------------


def test_paper_scale_pool_generator_maps_imagenet_heads(meta_ckpt, tmp_path):
    from ddrepro.pools import load_pool_generator
    ref, _ = meta_ckpt
    big = MetaDiT(classes=1000)
    big.load_state_dict({k: v for k, v in ref.state_dict().items() if "y_embedder" not in k}, strict=False)
    torch.save(big.state_dict(), tmp_path / "DiT-1000.pt")
    random_vae().save_pretrained(tmp_path / "vae")
    g = load_pool_generator("dit", "imagewoof", weights=str(tmp_path / "DiT-1000.pt"), vae=str(tmp_path / "vae"),
                            num_heads=2, device="cpu")
    assert g.class_ids == list(class_map("imagewoof").head_idx)
    assert g.cfg_channels == 3 and g.scheduler_config == {"variance_type": "learned_range"}
    assert g.generate([0], [3]).shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError, match="generator_weights="):
        load_pool_generator("dit", "imagewoof")


def test_image_text_encoder_specs(monkeypatch):
    from ddrepro.backbones import load_image_text_encoder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError, match="clip_path="):
        load_image_text_encoder("open_clip:ViT-B-32:openai")
    with pytest.raises(ConfigError, match="open_clip:<arch>"):
        load_image_text_encoder("resnet")



def test_zoo_encoder_specs_name_their_zoo_model():
    from ddrepro.backbones import check_encoder_spec, load_image_text_encoder
    assert check_encoder_spec("zoo")["arch"] == "clip" and check_encoder_spec("zoo-attr")["arch"] == "attr_clip"
    enc = load_image_text_encoder("zoo-attr", device="cpu")
    assert enc.assets["clip"]["id"] == "ddrepro.zoo:attr_clip" and enc.text.max_length == zoo.TEXT_MAX_LENGTH
    with pytest.raises(ConfigError, match="'zoo-attr'"):
        check_encoder_spec("zoo-atr")


def test_zoo_unclip_backbone_makes_variations_through_the_shared_sampler():
    from ddrepro.backbones import load_text_backbone
    from ddrepro.diffusion import sample_text
    bb = load_text_backbone("zoo-unclip")
    assert bb.asset.id == "ddrepro.zoo:unclip" and bb.unet.config.class_embed_type == "projection"
    real = load_real("fashion_mnist", "test").images[:2]
    cl = bb.image_conditioning(real.float() / 255, noise_level=0, generator=torch.Generator().manual_seed(0))
    assert cl.shape == (2, 2 * 384) and not cl.requires_grad
    states, empty = bb.encode(["A photo of a ankle boot", "A photo of a t-shirt"]), bb.encode([""])
    assert states.shape == (2, zoo.TEXT_MAX_LENGTH, 384)
    x = sample_text(bb.unet, bb.vae, states, [0, 1], uncond_states=empty, num_steps=4, cfg_scale=4.0,
                    unet_kwargs={"class_labels": cl}, uncond_kwargs={"class_labels": torch.zeros_like(cl)})
    assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    first = load_text_backbone("zoo")
    assert first.text_encoder.max_length == 16 and first.image_encoder is None
    assert load_text_backbone("zoo-attr").asset.id == "ddrepro.zoo:attr_unet"


# --- pixel-space class-conditional DDPM (SAS Table 3's CIFAR-10 pool) ------------------------------




# --- gradients through the image–text encoder (CONCORD-style guidance) -----------------------------

class _FakeOpenClip(nn.Module):
    "open_clip-shaped: `encode_image` on CLIP-normalised 224 px tensors (a strided conv, mean-pooled), `encode_text` on token ids."
    def __init__(self, dim: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 7, stride=7)
        self.tok = nn.Embedding(16, dim)
        with torch.no_grad():
            for p in self.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def encode_image(self, x):
        return torch.tanh(self.conv(x)).flatten(2).mean(2)

    def encode_text(self, tok):
        return self.tok(tok).mean(1)


def _fake_clip_encoder():
    from ddrepro.backbones import ClipEncoder
    return ClipEncoder(_FakeOpenClip(), lambda ps: torch.tensor([[len(p) % 16, 1, 2] for p in ps]))


def test_clip_encoder_gradients_reach_the_pixels_when_asked():
    enc = _fake_clip_encoder()
    x = (0.25 + 0.5 * torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    t = enc.encode_text(["A photo of a dog", "A photo of a cat"])
    e = enc.encode_image(x, grad=True)
    assert e.shape == (2, 8) and e.requires_grad
    loss = lambda emb: (emb * t).sum()
    g, = torch.autograd.grad(loss(e), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())                      # the CLIP weights are left alone
    # 40×48 → short side 224 (224×268) → center crop 224: the outermost source columns are cropped away
    assert g[..., :2].abs().max() == 0 and g[..., -2:].abs().max() == 0
    assert g[..., 8:40].abs().amax(dim=(0, 1, 2)).min() > 0
    # the gradient is the derivative: a central difference along a random direction (no clamping for x in [¼, ¾])
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    h = 1e-3
    with torch.no_grad():
        fd = (loss(enc.encode_image(x + h * v)) - loss(enc.encode_image(x - h * v))) / (2 * h)
    torch.testing.assert_close(fd, (g * v).sum(), rtol=2e-2, atol=1e-4)
    with torch.no_grad():                                                     # inside a sampler's no_grad block
        assert enc.encode_image(x, grad=True).requires_grad


def test_clip_encoder_without_grad_is_unchanged():
    enc = _fake_clip_encoder()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    e = enc.encode_image(x, grad=True)
    for e0 in (enc.encode_image(x), enc.encode_image(x, grad=False)):         # default = grad=False = no_grad
        assert not e0.requires_grad and e0.grad_fn is None
        torch.testing.assert_close(e0, e.detach(), rtol=0, atol=0)
        torch.testing.assert_close(e0.norm(dim=1), torch.ones(3))
    assert not enc.encode_text(["a", "b"]).requires_grad
