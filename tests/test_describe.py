"""The rule-based describer (ddrepro.describe): errors, determinism, sentence length, value phrases in the sentence,
APPLIES consistency, records. Synthetic images only, except the last test (Fashion-MNIST test split, if installed)."""
import itertools

import numpy as np
import pytest
import torch

from ddrepro.core import ConfigError
from ddrepro.data import FASHION_MNIST_DEBIAN, class_map
from ddrepro.describe import (APPLIES, ATTRIBUTES, CLASS_NAMES, PROVENANCE, THRESHOLDS, attribute_prompt, attributes,
                              describe, describe_one, describe_records, measure)


def canvas(*boxes, size=32):
    "float (1,size,size): value v inside each inclusive (top, bottom, left, right, v) box, 0 elsewhere."
    x = torch.zeros(1, size, size)
    for t, b, l, r, v in boxes: x[0, t:b + 1, l:r + 1] = v
    return x


def random_items(n, seed=0):
    "n random uint8 (n,3,32,32) items: a few bright boxes with some texture on black, and random labels."
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 32, 32)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            t, l = torch.randint(2, 20, (2,), generator=g).tolist()
            b, r = t + int(torch.randint(4, 12, (1,), generator=g)), l + int(torch.randint(4, 12, (1,), generator=g))
            x[i, t:b, l:r] = 0.2 + 0.8 * torch.rand(1, generator=g)
        x[i] *= 0.8 + 0.2 * torch.rand(32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return (x * 255).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous(), y


@pytest.fixture(scope="module")
def items():
    return random_items(40)


def test_bad_images_are_config_errors():
    y = [0]
    for bad, msg in [(torch.zeros(1, 2, 32, 32), "expected shape (N, 3, H, W)"), (torch.zeros(32, 32), "got (32, 32)"),
                     (torch.zeros(1, 32, 32, dtype=torch.int64), "got torch.int64"),
                     (torch.full((1, 32, 32), 2.0), "must lie in [0, 1]"), (torch.full((1, 32, 32), float("nan")), "[0, 1]"),
                     ([[0.0]], "got list")]:
        with pytest.raises(ConfigError, match=None) as e: describe(bad, y)
        assert msg in str(e.value)
        with pytest.raises(ConfigError): measure(bad)


def test_bad_labels_are_config_errors(items):
    x, y = items
    for bad, msg in [(y[:-1], "expected one class id per image (40), got shape (39,)"), (y[None], "got shape (1, 40)"),
                     (torch.full((40,), 10), "class id 10 is not a Fashion-MNIST class"),
                     (torch.full((40,), -1), "class id -1"), (y.float(), "expected integer class ids")]:
        for fn in (describe, attributes, describe_records):
            with pytest.raises(ConfigError) as e: fn(x, bad)
            assert msg in str(e.value)
    with pytest.raises(ConfigError, match="expected 10 non-empty class names"): describe(x, y, names=["a"] * 9)


def test_bad_prompts_are_config_errors():
    for fn, msg in [(lambda: attribute_prompt("t-shirt", "colour", "red"), "attribute 'colour' is unknown"),
                    (lambda: attribute_prompt("t-shirt", "tone", "pink"), "tone='pink' is not a value of 'tone'"),
                    (lambda: attribute_prompt("sneaker", "handle", "a handle"), "does not apply to class 'sneaker'"),
                    (lambda: attribute_prompt("hat", "tone", "dark"), "'hat' is not a Fashion-MNIST class"),
                    (lambda: attribute_prompt(10, "tone", "dark"), "is not a Fashion-MNIST class"),
                    (lambda: describe_one({"size": "big"}, "bag"), "attribute 'size' is unknown"),
                    (lambda: describe_one({"tone": "darkish"}, "bag"), "expected one of ['dark', 'mid-tone', 'light']"),
                    (lambda: describe_one({"sleeves": "long sleeves"}, "bag"), "does not apply to class 'bag'"),
                    (lambda: describe_one({"tone": "dark"}, "bag", label=12), "label=12"),
                    (lambda: describe_one(["dark"], "bag"), "expected a dict")]:
        with pytest.raises(ConfigError) as e: fn()
        assert msg in str(e.value), str(e.value)


def test_prompts():
    assert attribute_prompt("t-shirt", "tone", "dark") == "a t-shirt, dark"
    assert attribute_prompt("Ankle boot", "shaft", "high shaft") == "an ankle boot, high shaft"
    assert attribute_prompt(8, "handle", "a handle") == "a bag, a handle"
    assert describe_one({"tone": "light", "shaft": "high shaft"}, "ankle boot") == "A light ankle boot with a high shaft."
    assert (describe_one({"tone": "dark", "pattern": "plain", "sleeves": "short sleeves", "width": "wide"}, "t-shirt")
            == "A dark, plain t-shirt with short sleeves and a wide cut.")
    assert describe_one({}, 9) == "An ankle boot."
    for a, vals in ATTRIBUTES.items():
        for c in APPLIES[a]:
            for v in vals:
                p = attribute_prompt(CLASS_NAMES[c], a, v)
                assert p.endswith(f"{CLASS_NAMES[c]}, {v}") and len(p.split()) <= 6


def test_every_sentence_is_short_and_contains_its_values():
    for c in range(10):
        app = [a for a in ATTRIBUTES if c in APPLIES[a]]
        for combo in itertools.product(*(ATTRIBUTES[a] for a in app)):
            s = describe_one(dict(zip(app, combo)), CLASS_NAMES[c])
            assert len(s.split()) <= 20, s
            assert CLASS_NAMES[c] in s and all(v in s for v in combo), s
            assert s[0].isupper() and s.endswith(".")


def test_describe_is_deterministic_and_input_format_free(items):
    x, y = items
    s = describe(x, y)
    assert s == describe(x, y) == describe(x.clone(), y.tolist()) == describe(x[:, 0], y.numpy())
    assert s == describe(x.float() / 255, y)                      # float [0,1] = the same image
    assert [describe(x[i:i + 1], y[i:i + 1])[0] for i in range(5)] == s[:5]   # no dependence on the batch
    m1, m2 = measure(x), measure(x, chunk=7)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert all(v.dtype == torch.float32 and v.shape == (40,) and torch.isfinite(v).all() for v in m1.values())


def test_applies_consistency_and_phrases(items):
    x, y = items
    att, sents = attributes(x, y), describe(x, y)
    assert set(att) == set(ATTRIBUTES) and all(len(v) == len(y) for v in att.values())
    for i, c in enumerate(y.tolist()):
        for a, vals in att.items():
            v = vals[i]
            assert (v is None) == (c not in APPLIES[a]), (a, c, v)
            if v is not None:
                assert v in ATTRIBUTES[a] and v in sents[i], (a, v, sents[i])
        assert len(sents[i].split()) <= 20 and CLASS_NAMES[c] in sents[i]
    names = class_map("fashion_mnist").names
    assert all(names[c] in s for c, s in zip(y.tolist(), describe(x, y, names=names)))


def test_records(items):
    x, y = items
    recs = describe_records(x, y)
    assert [r["text"] for r in recs] == describe(x, y)
    for r, c in zip(recs, y.tolist()):
        assert set(r) == {"label", "class", "attributes", "text", "provenance"}
        assert r["label"] == c and r["class"] == CLASS_NAMES[c] and r["provenance"] == PROVENANCE
        assert set(r["attributes"]) == set(ATTRIBUTES)
        assert describe_one(r["attributes"], r["class"]) == r["text"]
    assert "not a VLM" in PROVENANCE and "rule-based" in PROVENANCE


def test_measurements_on_drawn_shapes():
    tee = canvas((6, 12, 4, 27, 0.8), (13, 29, 10, 21, 0.8))
    longs = canvas((6, 27, 5, 26, 0.8), (6, 29, 10, 21, 0.8))
    tank = canvas((6, 29, 11, 20, 0.8))
    sneaker = canvas((18, 27, 2, 29, 0.8))
    boot = canvas((18, 27, 2, 29, 0.8), (8, 17, 20, 29, 0.8))
    bag = canvas((14, 29, 4, 27, 0.8))
    loop = canvas((14, 29, 4, 27, 0.8), (6, 7, 10, 21, 0.8), (6, 13, 10, 11, 0.8), (6, 13, 20, 21, 0.8))
    stripes = canvas((4, 27, 4, 27, 0.7)); stripes[0, 4:28][torch.arange(24) % 4 < 2] = 0.3
    x = torch.cat([tee, longs, tank, sneaker, boot, bag, loop, stripes, stripes.transpose(1, 2)])
    y = [0, 2, 3, 7, 9, 8, 8, 0, 0]
    m = measure(x)
    np.testing.assert_allclose(m["shaft"][3:5].numpy(), [10 / 28, 20 / 28], atol=1e-6)
    np.testing.assert_allclose(m["handle"][5:7].numpy(), [0, 48 / 576], atol=1e-6)
    np.testing.assert_allclose(m["sleeves"][:3].numpy(), [0.5, 1.0, 1.0], atol=1e-6)
    assert m["banding"][7] > 0.7 and m["banding"][8] < 1e-6 and m["texture"][7] > m["texture"][0] + 0.1
    att = attributes(x, y)
    assert att["sleeves"][:3] == ["short sleeves", "long sleeves", "no sleeves"]
    assert att["shaft"][3:5] == ["low shaft", "high shaft"]
    assert att["handle"][5:7] == ["no handle", "a handle"]
    assert att["pattern"][0] == "plain" and att["pattern"][7] == "striped" and att["pattern"][8] == "printed"


def test_thresholds_shape():
    assert set(THRESHOLDS) == set(ATTRIBUTES)
    assert len(THRESHOLDS["width"]) == 10 and THRESHOLDS["tone"][0] < THRESHOLDS["tone"][1]


_TEST_FILES = [FASHION_MNIST_DEBIAN / f"t10k-{k}-idx{d}-ubyte.gz" for k, d in (("images", 3), ("labels", 1))]


@pytest.mark.skipif(not all(p.exists() for p in _TEST_FILES), reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DEBIAN}")
def test_values_vary_on_fashion_mnist():
    "On the first 2000 test images, every value of every attribute occurs in ≥ 5 % of the images it applies to."
    from ddrepro.data import load_fashion_mnist
    ds = load_fashion_mnist("test")
    x, y = ds.images[:2000], ds.labels[:2000]
    att = attributes(x, y)
    for a, vals in ATTRIBUTES.items():
        col = [v for v in att[a] if v is not None]
        assert len(col) == int(torch.isin(y, torch.tensor(APPLIES[a])).sum())
        for v in vals:
            assert col.count(v) / len(col) >= 0.05, f"{a}={v!r}: {col.count(v)}/{len(col)}"
    s = describe(x[:200], y[:200])
    assert max(len(t.split()) for t in s) <= 20 and len(set(s)) > 20
