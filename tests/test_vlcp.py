"""Unit tests of the text side of ddrepro.vlcp (VLCP, Zou et al., ICCV 2025, arXiv 2506.23580): the describe prompt and
post-processing, the describers (the LLaVA path without weights: its offline error and, through a stand-in processor
and model, the prompt and generation arguments), the resumable descriptions cache, words and stopwords, the authors'
text-prototype rule (one test per rule), long-prompt embedding for CLIP- and BERT-style encoders, and the UNet
fine-tune on tiny random models (loss falls, EMA, resume, bad input)."""
import copy
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrepro.backbones import TextBackbone, tiny_clip_text
from ddrepro.core import AssetError, ConfigError, DataError
from ddrepro.diffusion import random_unet, random_vae
from ddrepro.vlcp import (DESCRIBE_PROMPT, DESCRIBE_PROMPT_CODE, LLAVA_HF_ID, LLAVA_PAPER_ID, EmbeddedDescriber,
                          FinetuneConfig, LlavaDescriber, clean_description, cluster_term_counts, describe_dataset,
                          describe_prompt, describer_for, description_score, descriptions_path, document_frequency,
                          ema_decay_at, expand_to_square, fill_empty_prototypes, finetune_text_unet, heldout_loss,
                          llava_chat_prompt, load_descriptions, load_stopwords, long_prompt_states, non_representative,
                          preprocess, prompt_token_counts, read_descriptions, text_prototypes, truncated_prompt_count,
                          words)
from ddrepro.zoo import tiny_text_encoder

NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
STOP = load_stopwords()


def toy_images(n=12, seed=0):
    "n grey 32×32 uint8 images of a bright centred item of random size, labels 0..9 cycling."
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(8, 26, (2,), generator=g))
        t, l = (32 - h) // 2, (32 - w) // 2
        x[i, :, t:t + h, l:l + w] = int(torch.randint(60, 255, (1,), generator=g))
    return x, torch.arange(n) % 10


# ---------------------------------------------------------------- prompt, post-processing
def test_prompt_variants_and_cleaning():
    assert describe_prompt("English springer") == ("Describe the physical appearance of the English springer in the "
                                                   "image. Include details about its shape, posture, color, and any "
                                                   "distinct features.")
    assert describe_prompt("tench, Tinca tinca", "code") == DESCRIBE_PROMPT_CODE.format("tench, Tinca tinca")
    assert DESCRIBE_PROMPT_CODE == DESCRIBE_PROMPT.replace(". Include", ".Include")
    assert clean_description('The "dog\'s" tail\'s tip.') == "The dog tail tip."
    assert clean_description("dog’s") == "dog’s"
    with pytest.raises(ConfigError, match="v3"): describe_prompt("bag", "v3")
    with pytest.raises(ConfigError, match="non-empty"): describe_prompt("  ")


# ---------------------------------------------------------------- describers
def test_embedded_describer_is_deterministic_and_names_the_class():
    x, y = toy_images()
    d = EmbeddedDescriber()
    t1, t2 = d.describe(x, y, NAMES), d.describe(list(x), y.tolist(), NAMES)
    assert t1 == t2 and len(t1) == 12
    assert all(NAMES[c] in t.lower() for c, t in zip(y.tolist(), t1))
    assert d.id == "zoo-rules" and d.prompt is None and d.settings()["kind"] == "rules"
    with pytest.raises(DataError, match="12 images but 11 labels"): d.describe(x, y[:11], NAMES)
    with pytest.raises(DataError, match="label 10"): d.describe(x[:1], [10], NAMES)


def test_llava_offline_error_names_id_revision_and_local_folder():
    d = LlavaDescriber(revision="abc123")
    with pytest.raises(AssetError) as e:
        d.describe(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [0], NAMES)
    msg = str(e.value)
    assert LLAVA_HF_ID in msg and "abc123" in msg and "path=" in msg and LLAVA_PAPER_ID in msg
    with pytest.raises(AssetError, match="/no/such/llava"): LlavaDescriber(path="/no/such/llava").load()


class FakeProcessor:
    "Records the images and texts it gets; 'decodes' the new tokens into a text with quotes and an 's."
    class image_processor:
        image_mean = (0.0, 0.5, 1.0)

    class tokenizer:
        padding_side = "right"

    def __init__(self): self.calls = []

    def __call__(self, images, text, return_tensors, padding):
        assert return_tensors == "pt" and padding is True
        self.calls.append(dict(images=images, text=text))
        return {"input_ids": torch.full((len(text), 7), 5, dtype=torch.long), "pixel_values": torch.zeros(len(text), 3, 2, 2)}

    def batch_decode(self, ids, skip_special_tokens):
        assert skip_special_tokens
        return [f'  The "item"\'s {ids.shape[1]} tokens, first {int(r[0])}. ' for r in ids]


class FakeLlava(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def generate(self, input_ids, pixel_values, **kw):
        self.calls.append(dict(kw=kw, rng=torch.rand(1).item(), pixel_dtype=pixel_values.dtype))
        return torch.cat([input_ids, torch.full((len(input_ids), 2), 9, dtype=torch.long)], 1)


def test_llava_prompt_padding_and_generation_arguments(monkeypatch):
    proc, model = FakeProcessor(), FakeLlava()
    d = LlavaDescriber(batch_size=2, seed=3)
    monkeypatch.setattr(d, "load", lambda: (proc, model))
    imgs = [torch.full((3, 4, 6), 200, dtype=torch.uint8)] * 3
    out = d.describe(imgs, [1, 9, 8], NAMES)
    assert out == ["The item 2 tokens, first 9."] * 3                 # new tokens only, stripped, cleaned
    assert [len(c["text"]) for c in proc.calls] == [2, 1]
    assert proc.calls[0]["text"][1] == llava_chat_prompt(describe_prompt("ankle boot")) == (
        "USER: <image>\nDescribe the physical appearance of the ankle boot in the image. Include details about its "
        "shape, posture, color, and any distinct features. ASSISTANT:")
    pil = proc.calls[0]["images"][0]
    assert pil.size == (6, 6)
    a = np.asarray(pil)
    assert tuple(a[0, 0]) == (0, 128, 255) and tuple(a[1, 0]) == (200, 200, 200)   # padded rows 0 and 5 with the mean
    kw = model.calls[0]["kw"]
    assert kw == dict(do_sample=True, temperature=0.2, num_beams=1, max_new_tokens=1024, use_cache=True)
    # seeded: the same describer gives the same sampling RNG state per batch
    model2 = FakeLlava(); d2 = LlavaDescriber(batch_size=2, seed=3)
    monkeypatch.setattr(d2, "load", lambda: (FakeProcessor(), model2))
    d2.describe(imgs, [1, 9, 8], NAMES)
    assert [c["rng"] for c in model.calls] == [c["rng"] for c in model2.calls]
    assert LlavaDescriber(temperature=0).generate_kwargs() == dict(do_sample=False, num_beams=1, max_new_tokens=1024, use_cache=True)
    assert d.settings()["temperature"] == 0.2 and d.id == f"llava:{LLAVA_HF_ID}@main"
    assert LlavaDescriber(path="/x/llava-local").id == "llava:llava-local"


def test_expand_to_square_offsets():
    x = torch.full((3, 5, 2), 255, dtype=torch.uint8)
    sq = expand_to_square(x, (0, 0, 0))
    assert sq.shape == (3, 5, 5) and sq[0, 0].tolist() == [0, 255, 255, 0, 0]   # column offset (5 − 2)//2 = 1
    assert torch.equal(expand_to_square(x[:, :2], (1, 1, 1)), x[:, :2])          # already square


def test_describer_for(tmp_path):
    assert isinstance(describer_for("zoo"), EmbeddedDescriber)
    assert isinstance(describer_for("llava-1.5-7b"), LlavaDescriber)
    assert describer_for(str(tmp_path)).path == str(tmp_path)
    d = EmbeddedDescriber(); assert describer_for(d) is d
    with pytest.raises(ConfigError, match="blip"): describer_for("blip")
    with pytest.raises(ConfigError, match="no settings"): describer_for("zoo", temperature=0.2)
    with pytest.raises(ConfigError, match="num_beams"): LlavaDescriber(num_beams=0)
    with pytest.raises(ConfigError, match="temperature"): LlavaDescriber(temperature=-1)


# ---------------------------------------------------------------- descriptions cache
class Crashing(EmbeddedDescriber):
    def __init__(self, at): self.at, self.calls = at, []

    def describe(self, images, labels, class_names):
        self.calls.append(len(images))
        if len(self.calls) == self.at: raise RuntimeError("crash")
        return super().describe(images, labels, class_names)


def test_cache_resumes_after_crash_and_torn_line(tmp_path):
    x, y = toy_images(11)
    files = [f"{NAMES[c]}/{i}.png" for i, c in enumerate(y.tolist())]
    p = descriptions_path(tmp_path, "fashion_mnist", "zoo-rules")
    assert p == tmp_path / "fashion_mnist" / "descriptions_zoo-rules.jsonl"
    with pytest.raises(RuntimeError): describe_dataset(Crashing(3), x, y, files, NAMES, p, batch_size=4, log=lambda s: None)
    head, recs, torn = read_descriptions(p)
    assert len(recs) == 8 and not torn and head == {"describer": "zoo-rules", "settings": EmbeddedDescriber().settings(),
                                                    "prompt": None, "dataset": "fashion_mnist"}
    with open(p, "a") as f: f.write('{"file": "half')
    assert read_descriptions(p)[2] is True
    again = Crashing(99)
    describe_dataset(again, x, y, files, NAMES, p, batch_size=4, log=lambda s: None)
    assert again.calls == [3]
    lines = p.read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(l) for l in lines)
    assert load_descriptions(p, files, y, NAMES, expect_describer="zoo-rules") == EmbeddedDescriber().describe(x, y, NAMES)
    describe_dataset(again, x, y, files, NAMES, p, log=lambda s: None)            # complete: nothing to do
    assert again.calls == [3]


def test_cache_refuses_other_describer_and_reports_missing(tmp_path):
    x, y = toy_images(4)
    files = [f"f{i}.png" for i in range(4)]
    p = tmp_path / "d" / "x.jsonl"
    describe_dataset(EmbeddedDescriber(), x[:3], y[:3], files[:3], NAMES, p, log=lambda s: None)
    with pytest.raises(DataError, match="written by describer 'zoo-rules'"):
        describe_dataset(LlavaDescriber(), x, y, files, NAMES, p)
    with pytest.raises(DataError, match=r"'f3.png' \(class 'dress' \(label 3\)\)"):
        load_descriptions(p, files, y, NAMES)
    with pytest.raises(DataError, match="expected 'llava"):
        load_descriptions(p, files[:3], expect_describer="llava:x")
    with pytest.raises(DataError, match="stored with label 0"):
        load_descriptions(p, files[:1], [5], NAMES)
    with pytest.raises(DataError, match="no descriptions file"): load_descriptions(tmp_path / "nope.jsonl", files)
    with pytest.raises(DataError, match="more than once"):
        describe_dataset(EmbeddedDescriber(), x[:2], y[:2], ["a", "a"], NAMES, tmp_path / "y.jsonl")
    with pytest.raises(DataError, match="4 images but 3 file names"):
        describe_dataset(EmbeddedDescriber(), x, y, files[:3], NAMES, tmp_path / "y.jsonl")


# ---------------------------------------------------------------- words, stopwords
def test_words_and_nltk_differences():
    assert words("The Dog's tail, well-kept.") == ["the", "dog", "s", "tail", "well", "kept"]
    assert words("3 legs; café!") == ["legs", "caf"]
    with pytest.raises(DataError): words(3)


def test_stopwords_file(tmp_path):
    assert len(STOP) == 179
    assert {"i", "me", "the", "a", "an", "of", "in", "with", "its", "s", "t", "don", "ain", "wouldn't", "yourselves"} <= STOP
    assert not {"dog", "image", "tail", "color", "small"} & STOP
    f = tmp_path / "s.txt"; f.write_text("# comment\nFoo\n\n bar \n")
    assert load_stopwords(f) == frozenset({"foo", "bar"})
    with pytest.raises(AssetError, match="nope.txt"): load_stopwords(tmp_path / "nope.txt")


# ---------------------------------------------------------------- text prototypes: one test per rule
def test_df_threshold_is_ge_over_the_whole_class():
    texts = ["red fox"] * 7 + ["blue fox", "grey wolf", "grey wolf"]       # red in 7/10, fox in 8/10
    df = document_frequency(texts)
    assert df["red"] == 7 and df["fox"] == 8
    assert non_representative(df, 10, 0.7, STOP) == {"red", "fox"}
    assert non_representative(df, 10, 0.71, STOP) == {"fox"}
    assert document_frequency(["fox fox fox"])["fox"] == 1                 # document, not term, frequency
    assert "the" not in non_representative(document_frequency(["the fox"] * 3), 3, 0.5, STOP)   # stopwords excluded
    # the class-level set removes a word from every cluster, even one where it is rare
    proto = text_prototypes(["red fox", "red fox", "red fox", "red cub tail"], [0, 0, 0, 1], "animal", STOP, beta=0.7)
    assert proto == {0: "", 1: "red cub tail"}


def test_class_name_substring_filter_drops_short_words():
    tf = cluster_term_counts(["a ten inch tench with fins", "ten fins"], "tench, Tinca tinca", STOP, set())
    assert tf == Counter({"inch": 1, "fins": 2})                           # 'ten' ⊂ 'tench', 'tench'; 'inch' ⊄ name
    tf = cluster_term_counts(["a ca cat"], "capybara", set(), set())       # no stopwords: "a", "ca" still go as substrings
    assert tf == Counter({"cat": 1})
    assert cluster_term_counts(["English setter"], "English setter", STOP, set()) == Counter({"english": 1})


def test_raw_case_sensitive_substring_score():
    top = [("small", 3), ("tail", 2)]
    assert description_score("Small dog.", top) == 0                       # capitalised sentence start: no match
    assert description_score("a small dog with tails", top) == 5           # 'tail' inside 'tails'
    assert description_score("a smallish dog", top) == 3                   # any substring counts


def test_top_k_ties_first_seen_and_first_max_wins():
    texts = ["zebra yak", "yak zebra", "xerus"]
    tf = cluster_term_counts(texts, "animal", STOP, set())
    assert tf.most_common(2) == [("zebra", 2), ("yak", 2)]                # tie: first seen first
    assert text_prototypes(texts, [0, 0, 0], "animal", STOP, beta=1.0, k=2) == {0: "zebra yak"}   # tie at 4: first wins
    # k limits the words that score: with k=1 only 'zebra' (3) counts; with k=3 'yak wolf' scores 2 + 2 > 3
    texts = ["yak wolf", "zebra zebra zebra", "yak wolf"]
    assert text_prototypes(texts, [0, 0, 0], "animal", STOP, beta=1.0, k=1) == {0: "zebra zebra zebra"}
    assert text_prototypes(texts, [0, 0, 0], "animal", STOP, beta=1.0, k=3) == {0: "yak wolf"}


def test_all_zero_gives_empty_and_fill_logs():
    proto = text_prototypes(["The dog.", "A dog."], [4, 4], "dog", STOP)
    assert proto == {4: ""}
    logged = []
    filled, rep = fill_empty_prototypes({4: "", 7: "x"}, ["The dog.", "x", "A dog."], [4, 7, 4], log=logged.append)
    assert filled == {4: "The dog.", 7: "x"} and rep == [4] and len(logged) == 1 and "cluster 4" in logged[0]
    with pytest.raises(DataError, match="cluster 5"): fill_empty_prototypes({5: ""}, ["a"], [0], log=lambda s: None)


def test_text_prototypes_clusters_and_validation():
    texts = ["a striped cat", "a striped tabby", "a black cat", "a black dog"]
    out = text_prototypes(texts, np.array([3, 3, 1, 1]), "cat", STOP, beta=0.9)
    # per cluster: striped 2 + tabby 1 beats striped 2 ('cat' is the class name, never counted); black 2 + dog 1 wins
    assert list(out) == [1, 3] and out[3] == "a striped tabby" and out[1] == "a black dog"
    with pytest.raises(DataError, match="4 descriptions but 3"): text_prototypes(texts, [0, 0, 1], "cat", STOP)
    with pytest.raises(DataError, match="integer"): text_prototypes(texts, [0, 0, 1, 1.5], "cat", STOP)
    with pytest.raises(DataError, match="no descriptions"): text_prototypes([], [], "cat", STOP)
    with pytest.raises(DataError, match="strings"): text_prototypes([1, 2], [0, 0], "cat", STOP)
    with pytest.raises(ConfigError, match="beta=1.5"): text_prototypes(texts, [0] * 4, "cat", STOP, beta=1.5)
    with pytest.raises(ConfigError, match="k=0"): text_prototypes(texts, [0] * 4, "cat", STOP, k=0)
    with pytest.raises(ConfigError, match="class_name"): text_prototypes(texts, [0] * 4, None, STOP)
    with pytest.raises(ConfigError, match="stopwords"): text_prototypes(texts, [0] * 4, "cat", "the")


# ---------------------------------------------------------------- long prompts
@pytest.fixture(scope="module")
def clip_bb():
    te, tok = tiny_clip_text()
    return TextBackbone(unet=None, vae=None, text_encoder=te, tokenizer=tok)


def test_long_prompt_clip_windows(clip_bb):
    long = "a photo of a shirt a photo of a bag a boot trouser shirt"        # 14 words, window 8
    s, n = long_prompt_states(clip_bb, [long, "a bag"], "boot")
    assert s.shape == n.shape == (2, 14, 16)
    ids = torch.tensor(clip_bb.tokenizer(long)["input_ids"])
    te = clip_bb.text_encoder
    torch.testing.assert_close(s[0, :8], te(ids[None, :8])[0][0])
    torch.testing.assert_close(s[0, 8:], te(ids[None, 8:])[0][0])
    torch.testing.assert_close(s[1, :2], clip_bb.encode(["a bag"])[0, :2])      # short: = plain encoder (causal)
    torch.testing.assert_close(n[0, :1], clip_bb.encode(["boot"])[0, :1])
    s1, n1 = long_prompt_states(clip_bb, ["a bag"], "a photo of shirt")      # the negative is the longer one
    assert s1.shape == n1.shape == (1, 4, 16)
    torch.testing.assert_close(long_prompt_states(clip_bb, ["a bag"], "", pad_to_window=True)[0], clip_bb.encode(["a bag"]))
    assert long_prompt_states(clip_bb, [long], "", max_length=4)[0].shape == (1, 14, 16)
    assert prompt_token_counts(clip_bb, [long, "a bag"]) == [14, 2] and truncated_prompt_count(clip_bb, [long, "a bag"]) == 1
    with pytest.raises(ConfigError, match="14 tokens"): long_prompt_states(clip_bb, [long], "", max_chunks=1)
    with pytest.raises(ConfigError, match="max_length=9"): long_prompt_states(clip_bb, [long], "", max_length=9)
    with pytest.raises(DataError, match="2 prompts but 3"): long_prompt_states(clip_bb, ["a", "b"], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="TextBackbone"): long_prompt_states(object(), ["a"], "")


def test_long_prompt_bert_masks_each_window():
    te = tiny_text_encoder(max_length=8)
    p = ["a shirt with long sleeves and a round neck", "a bag"]
    s, n = long_prompt_states(te, p, "cartoon")
    assert s.shape == n.shape == (2, 11, 32)                                 # [CLS] + 9 + [SEP]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = te.encode(["a bag"])                                        # padded to 8 with its mask
    torch.testing.assert_close(s[1, :8], plain[0], atol=1e-5, rtol=1e-5)     # window 1 of the short prompt, masked
    torch.testing.assert_close(long_prompt_states(te, ["a bag"], "", pad_to_window=True)[0], plain, atol=1e-5, rtol=1e-5)
    ids = te.tokenizer(p[0])["input_ids"]
    torch.testing.assert_close(s[0, 8:], te.bert(input_ids=torch.tensor([ids[8:]])).last_hidden_state[0], atol=1e-5, rtol=1e-5)
    # the short prompt's second window is all padding: its states must ignore what the other prompt holds there
    s2, _ = long_prompt_states(te, ["a shirt with long sleeves and a round collar", "a bag"], "cartoon")
    torch.testing.assert_close(s2[1], s[1], atol=1e-5, rtol=1e-5)
    assert prompt_token_counts(te, p) == [11, 4] and truncated_prompt_count(te, p) == 1
    # a backbone wrapping the zoo encoder takes the BERT path
    torch.testing.assert_close(long_prompt_states(TextBackbone(None, None, te), p, "cartoon")[0], s)


# ---------------------------------------------------------------- fine-tuning
def test_finetune_config_presets_and_check():
    p = FinetuneConfig.paper(resolution=32, seed=2)
    assert (p.lr, p.epochs, p.batch_size, p.grad_accum, p.weight_decay, p.adam_eps, p.max_grad_norm) == (1e-5, 8, 8, 4, 1e-2, 1e-8, 1.0)
    assert (p.adam_beta1, p.adam_beta2, p.ema_decay, p.use_ema, p.center_crop, p.random_flip) == (0.9, 0.999, 0.9999, True, True, True)
    assert (p.resolution, p.seed, p.lr_warmup_steps, p.gradient_checkpointing) == (32, 2, 0, True)
    assert p.precision(torch.device("cpu")) == "no" and p.precision(torch.device("cuda")) == "fp16"
    e = FinetuneConfig.embedded()
    assert e.resolution == 32 and e.steps(1000) == 126
    assert FinetuneConfig(batch_size=2, grad_accum=2, epochs=3).steps(5) == 6      # ⌈⌈5/2⌉/2⌉ = 2 per epoch
    assert [ema_decay_at(s, 0.5) for s in (1, 2, 3, 50)] == [0.0, 2 / 11, 3 / 12, 0.5]
    for bad in (dict(lr=-1), dict(epochs=0), dict(grad_accum=0), dict(adam_beta2=1.0), dict(weight_decay=-0.1),
                dict(mixed_precision="fp32"), dict(use_ema="yes"), dict(seed=-1), dict(resolution=2.5)):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))}="): FinetuneConfig(**bad).check()


def test_preprocess_resize_crop_flip():
    x = torch.arange(3 * 6 * 4, dtype=torch.float32).view(3, 6, 4) / 71
    torch.testing.assert_close(preprocess(x, 4), x[:, 1:5])                  # short side 4: centre crop rows 1..4
    torch.testing.assert_close(preprocess(x, 4, flip=True), x[:, 1:5].flip(-1))
    assert preprocess(torch.zeros(3, 16, 20, dtype=torch.uint8), 8).shape == (3, 8, 8)


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return random_unet(sample_size=4, cross_attention_dim=16), random_vae(sample_size=8)


def _pairs():
    g = torch.Generator().manual_seed(1)
    return (torch.rand(4, 3, 8, 8, generator=g) * 255).to(torch.uint8), ["a photo of a shirt", "a bag", "a boot", "a trouser"]


def test_finetune_loss_falls_ema_and_resume(tmp_path, tiny_models, clip_bb):
    unet, vae = tiny_models
    imgs, caps = _pairs()
    cfg = FinetuneConfig(lr=1e-2, epochs=30, batch_size=4, grad_accum=1, resolution=8, ema_decay=0.9, random_flip=False)
    logs = []
    ema, hist = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs, caps, cfg, out_dir=tmp_path / "ft", log=logs.append)
    assert len(hist["loss"]) == 30 and hist["loss"][-10:].mean() < 0.8 * hist["loss"][:10].mean()
    before = heldout_loss(unet, vae, clip_bb, imgs, caps, 8, draws=8)
    after = heldout_loss(ema, vae, clip_bb, imgs, caps, 8, draws=8)
    assert after < 0.7 * before, (before, after)
    assert heldout_loss(unet, vae, clip_bb, imgs, caps, 8, draws=8) == before                  # fixed draws
    assert any("0 of 4 captions cut" in l for l in logs)
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), unet.parameters()))
    out = tmp_path / "ft"
    assert (out / "unet_ema" / "config.json").exists() and (out / "history.npz").exists() and (out / "finetune.json").exists()
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and rec["results"]["finetune"]["steps"] == 30 and rec["params"]["lr"] == 1e-2
    logs.clear()
    again, h2 = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs, caps, cfg, out_dir=out, log=logs.append)
    assert "loading unet_ema" in logs[0]
    for a, b in zip(again.state_dict().values(), ema.state_dict().values()): torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(h2["loss"], hist["loss"])
    with pytest.raises(ConfigError, match="other settings"):
        finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs, caps[::-1], cfg, out_dir=out)   # other texts


def test_finetune_accumulation_no_ema_and_bad_input(tiny_models, clip_bb):
    unet, vae = tiny_models
    imgs, caps = _pairs()
    imgs5, caps5 = torch.cat([imgs, imgs[:1]]), caps + ["a shirt"]
    cfg = FinetuneConfig(lr=1e-3, epochs=2, batch_size=2, grad_accum=2, resolution=8, use_ema=False)
    model, hist = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs5, caps5, cfg, log=lambda s: None)
    assert len(hist["loss"]) == cfg.steps(5) == 4
    logs = []                                                              # a bound `.encode` works and is still counted
    b, _ = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb.encode, imgs5, caps5, cfg, log=logs.append)
    assert "0 of 5 captions cut" in logs[0]
    for p, q in zip(b.parameters(), model.parameters()): torch.testing.assert_close(p, q)
    a, _ = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs5, caps5, cfg, log=lambda s: None)
    for p, q in zip(a.parameters(), model.parameters()): torch.testing.assert_close(p, q)            # deterministic
    w = FinetuneConfig(lr=1e-3, epochs=1, batch_size=4, grad_accum=1, resolution=8, lr_warmup_steps=2, max_steps=3)
    _, hw = finetune_text_unet(copy.deepcopy(unet), vae, clip_bb, imgs, caps, replace_epochs(w, 4), log=lambda s: None)
    np.testing.assert_allclose(hw["lr"], [0.0, 5e-4, 1e-3])                  # constant_with_warmup, capped at 3 steps
    with pytest.raises(DataError, match="4 images but 3 texts"):
        finetune_text_unet(unet, vae, clip_bb, imgs, caps[:3], cfg)
    with pytest.raises(ConfigError, match="batch_size=0"):
        finetune_text_unet(unet, vae, clip_bb, imgs, caps, FinetuneConfig(batch_size=0))


def replace_epochs(cfg, epochs):
    import dataclasses
    return dataclasses.replace(cfg, epochs=epochs)


# ------------------------------------------------------------------------------------- the composition (VLCP on D4M)


def test_cluster_text_prototypes_replace_an_empty_one_and_log_it():
    from ddrepro.d4m import ClassPrototypes
    from ddrepro.vlcp import cluster_text_prototypes, load_stopwords
    texts = ["A dark, striped shirt.", "A dark, striped shirt with long sleeves.", "A shirt.", "A shirt."]
    # cluster 1's members say nothing beyond the class name and generic words: nothing scores, the first member is used
    cp = ClassPrototypes(0, torch.zeros(2, 4, 2, 2), np.array([0, 0, 1, 1]), np.ones(4, bool), np.array([10, 11, 12, 13]), "shirt")
    texts_by_index = {10: texts[0], 11: texts[1], 12: texts[2], 13: texts[3]}
    all_texts = [texts_by_index.get(i, "") for i in range(14)]
    logs = []
    tp = cluster_text_prototypes([cp], all_texts, ["shirt"], load_stopwords(), beta=0.9, top_k=30, log=logs.append)
    rows = tp[0]
    assert rows[0]["prompt"] == texts[1] and rows[0]["source"] == 11 and not rows[0]["replaced"]
    assert rows[1]["prompt"] == "A shirt." and rows[1]["source"] == 12 and rows[1]["replaced"]
    assert len(logs) == 1 and "class 0 (shirt)" in logs[0] and "cluster 1" in logs[0]


def test_long_prompt_encoder_pads_to_whole_windows_on_the_zoo_only(clip_bb):
    from ddrepro.vlcp import LongPromptEncoder
    te = tiny_text_encoder(max_length=8, dim=16)
    zoo_like = LongPromptEncoder(TextBackbone(None, None, te))
    assert zoo_like.pad_to_window and not LongPromptEncoder(clip_bb).pad_to_window
    s, n = zoo_like(["a shirt", "a long grey woollen shirt with long sleeves and a wide cut"], "")
    assert s.shape[1] % 8 == 0 and s.shape[1] > 8 and n.shape == s.shape              # two windows, shared by both branches
    short, _ = zoo_like(["a shirt"], "")
    torch.testing.assert_close(short, te.encode(["a shirt"]))                          # one window = the plain encoder


def test_method_config_resolution_order():
    from ddrepro.vlcp import VLCPConfig, method_config
    base = dict(ipc=10, seed=1, contamination=None, beta=None, guidance=None, kmeans=None, method_overrides={})
    v = method_config("vlcp", "imagenette", False, base)
    assert isinstance(v, VLCPConfig) and (v.contamination, v.beta, v.out_size, v.seed) == (0.01, 0.7, 256, 1)   # supp. Table 4
    assert method_config("vlcp", "imagenette", False, dict(base, contamination=0.1)).contamination == 0.1        # the script's
    d = method_config("d4m", "imagenette", False, dict(base, contamination=0.1, method_overrides={"n_init": 3}), primary=False)
    assert (d.contamination, d.n_init, d.seed) == (0.0, 10, 1)          # a baseline: shared inputs only, no overrides
    with pytest.raises(ConfigError, match="Tiny-ImageNet"):
        method_config("vlcp", "tiny_imagenet", False, base)


# ------------------------------------------------------------------------------------- paper scale (hub weights, a GPU)


@pytest.mark.hub
@pytest.mark.gpu
def test_hub_llava_describes_an_image():
    "LLaVA-1.5-7B (llava-hf) from the HF cache (or downloaded): one description of a real image, in the paper's prompt."
    from ddrepro.data import load_fashion_mnist
    from ddrepro.vlcp import LlavaDescriber
    te = load_fashion_mnist("test")
    d = LlavaDescriber(download=True, device="cuda", max_new_tokens=64)
    (text,) = d.describe(te.images[:1], te.labels[:1], list(te.class_map.prompt_names))
    assert isinstance(text, str) and len(text.split()) > 5 and '"' not in text


@pytest.mark.hub
@pytest.mark.gpu
def test_hub_sd15_prototype_img2img_with_a_long_prompt():
    "SD-1.5 from the hub: a 130-token text prototype through the windowed CLIP encoder, img2img from two prototypes."
    from ddrepro.backbones import load_text_backbone
    from ddrepro.d4m import ClassPrototypes, D4MConfig, prototype_latents, strength_record, synthesize
    from ddrepro.data import class_map
    from ddrepro.diffusion import make_scheduler
    from ddrepro.pools import TextGenerator
    from ddrepro.vlcp import LongPromptEncoder, prompt_token_counts
    import tempfile
    bb = load_text_backbone("sd-1.5", download=True, device="cuda", dtype=torch.float16)
    long = " ".join(["The tench in the image is a small, brown fish with a long, slender body."] * 8)
    assert prompt_token_counts(bb, [long])[0] > 77
    x = torch.rand(2, 3, 512, 512)
    lat = prototype_latents(bb.vae, x, None, [0, 1], "sample")
    cm = class_map("imagenette")
    protos = [ClassPrototypes(0, lat.float(), np.array([0, 1]), np.ones(2, bool), np.arange(2), "tench")]
    cfg = D4MConfig(ipc=2, guidance=10.0, strength_match="steps")
    st = strength_record(cfg, make_scheduler("ddim", bb.scheduler_config))
    gen = TextGenerator(bb.unet, bb.vae, bb.encode, prompts=cm.prompts("{}"), negative_prompt="cartoon, anime, painting",
                        cfg_scale=10.0, scheduler_config=bb.scheduler_config, strength=st["used"], encode_pair=LongPromptEncoder(bb))
    with tempfile.TemporaryDirectory() as d:
        rec = synthesize(gen, protos, cm, d, prompts={0: [long, "A tench."]}, batch_size=1, device="cuda")
        assert rec.stages["generate"]["images"] == 2
