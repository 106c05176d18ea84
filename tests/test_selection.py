"""Unit tests of ddrepro.selection: the per-class selectors (herding and k-center greedy on hand-checked 1-D pools),
`Selection` and `selection_from_indices`, the baselines by name, the one writer `write_selection`, and the
embedding cache `embed_pool`."""
import csv
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrepro.core import ConfigError, DataError, derive_seed
from ddrepro.data import ClassMap, ImageSet, class_map, load_distilled, save_image
from ddrepro.selection import (BASELINE_SELECTORS, Selection, class_blocks, embed_pool, first_per_class, herding,
                               k_center_greedy, random_per_class, select_baseline, selection_from_indices,
                               top_per_class, write_selection)

# a 1-D pool: class 0 = {0, 1, 2, 3, 10} at pool indices 0, 1, 3, 4, 6; class 1 = {5, 7, 6} at 2, 5, 7
X1 = np.array([0.0, 1, 5, 2, 3, 7, 10, 6])[:, None]
Y1 = np.array([0, 0, 1, 0, 0, 1, 0, 1])


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synth(C=3, n=12, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n)
    return unit(np.eye(d)[y] + 0.7 * rng.standard_normal((C * n, d))), y


# ---------------------------------------------------------------- per-class selectors
def test_herding_hand_values():
    # class 0, mean 3.2: 3; then nearest 2·3.2 − 3 = 3.4 → 2; nearest 9.6 − 5 = 4.6 → 1; nearest 12.8 − 6 = 6.8 → 10
    # class 1, mean 6: 6; then 5 and 7 tie → the lower pool index (2, value 5); then 7
    assert herding(X1, Y1, 3).tolist() == [[4, 3, 1], [7, 2, 5]]
    x0 = X1[Y1 == 0]
    assert herding(x0, np.zeros(5, int), 4).tolist() == [[3, 2, 1, 4]]
    assert herding(x0, np.zeros(5, int), 5).tolist() == [[3, 2, 1, 4, 0]]      # ipc = class size: every item once
    # 2-D: a square's corners plus its centre; mean = centre, then opposite corners keep the mean exact
    sq = np.array([[0.0, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]])
    assert herding(sq, np.zeros(5, int), 3).tolist() == [[0, 1, 2]]


def test_herding_each_pick_is_the_greedy_argmin():
    X, y = synth(C=3, n=15, d=6, seed=1)
    H = herding(X, y, 6)
    for c in range(3):
        I = np.nonzero(y == c)[0]
        mu = X[I].mean(0)
        picked = []
        for t, p in enumerate(H[c], 1):
            free = [i for i in I if i not in picked]
            err = [np.linalg.norm(mu - (X[picked].sum(0) + X[i]) / t) for i in free]
            assert p == free[int(np.argmin(err))]
            picked.append(p)
        assert len(set(H[c].tolist())) == 6 and (y[H[c]] == c).all()


def test_k_center_greedy_hand_values():
    # class 0: nearest the mean 3.2 is 3; farthest from {3}: 10; then 0 (3 away); then 1 and 2 tie at 1 → 1
    # class 1: 6; then 5 and 7 tie → 5 (lower pool index); then 7
    assert k_center_greedy(X1, Y1, 3).tolist() == [[4, 6, 0], [7, 2, 5]]
    assert k_center_greedy(X1[Y1 == 0], np.zeros(5, int), 5).tolist() == [[3, 4, 0, 1, 2]]
    assert k_center_greedy(X1, Y1, 3, first="first").tolist() == [[0, 6, 4], [2, 5, 7]]
    with pytest.raises(ConfigError, match="first='random'"):
        k_center_greedy(X1, Y1, 2, first="random")


def test_k_center_greedy_is_farthest_first_and_a_2_approximation():
    rng = np.random.default_rng(2)
    for trial in range(5):
        X = rng.standard_normal((9, 2)); y = np.zeros(9, int)
        K = k_center_greedy(X, y, 3)[0]
        D = np.linalg.norm(X[:, None] - X[None], axis=2)
        assert K[0] == np.argmin(np.linalg.norm(X - X.mean(0), axis=1))
        for t in range(1, 3):
            dmin = D[:, K[:t]].min(1); dmin[K[:t]] = -1
            assert K[t] == np.argmax(dmin)
        radius = D[:, K].min(1).max()
        opt = min(D[:, list(s)].min(1).max() for s in itertools.combinations(range(9), 3))
        assert radius <= 2 * opt + 1e-12


def test_coreset_selectors_shapes_determinism_and_inputs():
    X, y = synth(C=4, n=10, seed=3)
    for fn in (herding, k_center_greedy):
        a = fn(X, y, 4)
        assert a.shape == (4, 4) and a.dtype == np.int64
        assert np.array_equal(a, fn(X.copy(), y.copy(), 4))
        assert np.array_equal(a, fn(torch.from_numpy(X), torch.from_numpy(y), 4))
        assert np.array_equal(a, fn(X.astype(np.float32).astype(np.float64), y, 4))
        assert all((y[r] == c).all() and len(set(r.tolist())) == 4 for c, r in enumerate(a))
        with pytest.raises(DataError, match="class 0 has 10 pool item\\(s\\) but ipc=11"):
            fn(X, y, 11)
        with pytest.raises(DataError, match="class 4 has 0 pool item\\(s\\)"):
            fn(X, y, 2, num_classes=5)
        with pytest.raises(ConfigError, match="ipc=0"):
            fn(X, y, 0)
        with pytest.raises(DataError, match="emb has 39 rows but labels has 40"):
            fn(X[:-1], y, 2)
        with pytest.raises(DataError, match="first: row 7"):
            fn(np.where(np.arange(40)[:, None] == 7, np.inf, X), y, 2)
        with pytest.raises(DataError, match="labels\\[0\\] = -1"):
            fn(X, np.r_[-1, y[1:]], 2)


def test_top_random_first_per_class_and_their_errors():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.4, 0.2, 0.9, 0.3, 0.5, 0.0])
    assert top_per_class(s, y, 2).tolist() == [[1, 2], [4, 6]]
    assert first_per_class(y, 2).tolist() == [[0, 1], [3, 4]]
    # random draws: class c from derive_seed(seed, "sas.random", c), the same draws SAS's row A always made
    idx, k = class_blocks(y)
    want = [np.sort(np.random.default_rng(derive_seed(5, "sas.random", c)).choice(idx[c, :k[c]], 3, replace=False)) for c in (0, 1)]
    assert np.array_equal(random_per_class(y, 3, seed=5), np.stack(want))
    for fn in (lambda: top_per_class(s, y, 5), lambda: first_per_class(y, 5), lambda: random_per_class(y, 5)):
        with pytest.raises(DataError, match="class 0 has 4 pool item\\(s\\) but ipc=5"):
            fn()
    with pytest.raises(ConfigError, match="ipc=1.5"):
        first_per_class(y, 1.5)


# ---------------------------------------------------------------- Selection
def test_selection_table_methods_follow_the_table():
    tab = {"label": np.array([1, 0, 1, 0]), "z": np.array([0.5, np.nan, 1.0, 2.0]), "a": torch.tensor([3, 2, 1, 0])}
    s = Selection("toy", 1, np.array([2, 1]), tab, {"k": 1})
    assert s.indices.tolist() == [1, 2] and s.indices.dtype == np.int64 and len(s) == 2
    assert s.per_class().tolist() == [1, 1]
    assert list(s.table) == ["label", "z", "a"] and isinstance(s.table["a"], np.ndarray)
    assert s.rows()[3] == {"index": 3, "label": 0, "z": 2.0, "a": 0}
    df = s.to_pandas()
    assert list(df.columns) == ["label", "z", "a"] and df.index.name == "index" and df.shape == (4, 3)


def test_selection_rejects_inconsistent_tables():
    y = np.zeros(3, int)
    cases = [
        ({"score": np.zeros(3)}, [0], "needs a 'label' column"),
        ({"label": np.zeros(3)}, [0], "1-D integer array"),
        ({"label": y, "s": np.zeros(2)}, [0], "table\\['s'\\] has shape \\(2,\\); expected \\(3,\\)"),
        ({"label": y, "s": np.zeros((3, 2))}, [0], "table\\['s'\\] has shape \\(3, 2\\)"),
        ({"label": y}, [3], "index 3 is outside the pool \\[0, 3\\)"),
        ({"label": y}, [-1], "index -1 is outside"),
        ({"label": y}, [1, 1], "repeats"),
        ({"label": y, "is_selected": np.array([1, 0, 0])}, [1], "disagrees with indices \\(first at pool index 0\\)"),
        ({"label": y, "pool_index": np.arange(3)}, [1], "reserved"),
    ]
    for tab, idx, msg in cases:
        with pytest.raises(DataError, match=msg):
            Selection("x", 1, np.array(idx), tab)


def test_selection_from_indices():
    picks = np.array([[4, 3], [7, 2]])                                  # a (C, ipc) selector output
    s = selection_from_indices(picks, Y1, "mine", table={"w": np.arange(8.0)}, options={"p": 1})
    assert s.indices.tolist() == [2, 3, 4, 7] and s.ipc == 2 and s.selector == "mine" and s.options == {"p": 1}
    assert list(s.table) == ["label", "is_selected", "w"]
    assert s.table["is_selected"].tolist() == [False, False, True, True, True, False, False, True]
    assert selection_from_indices(picks, Y1, table={"label": Y1}).ipc == 2
    assert selection_from_indices([], Y1).ipc == 0
    with pytest.raises(DataError, match="table\\['label'\\] differs from labels"):
        selection_from_indices(picks, Y1, table={"label": 1 - Y1})
    with pytest.raises(DataError, match="index 8 is outside the pool \\[0, 8\\)"):
        selection_from_indices([8], Y1)


def test_select_baseline_by_name():
    X, y = synth(C=3, n=10, seed=4)
    assert set(BASELINE_SELECTORS) == {"random", "first", "herding", "kcenter"}
    h = select_baseline("herding", X, y, 4)
    assert isinstance(h, Selection) and h.per_class().tolist() == [4, 4, 4] and h.options == {"metric": "euclidean"}
    assert np.array_equal(h.indices, np.sort(herding(X, y, 4).ravel()))
    k = select_baseline("kcenter", X, y, 4)
    assert np.array_equal(k.indices, np.sort(k_center_greedy(X, y, 4).ravel())) and k.options["first"] == "mean"
    K = k_center_greedy(X, y, 4)
    assert k.table["pick_order"][K[:, 0]].tolist() == [1, 1, 1] and k.table["pick_order"][K[:, 3]].tolist() == [4, 4, 4]
    assert (k.table["pick_order"] > 0).sum() == 12 and list(k.table) == ["label", "is_selected", "pick_order"]
    r = select_baseline("random", None, y, 3, seed=7)
    assert np.array_equal(r.indices, np.sort(random_per_class(y, 3, seed=7).ravel())) and r.options == {"seed": 7}
    assert np.array_equal(select_baseline("first", None, y, 3).indices, np.sort(first_per_class(y, 3).ravel()))
    with pytest.raises(ConfigError, match="name='kmeans'"):
        select_baseline("kmeans", X, y, 2)


# ---------------------------------------------------------------- write_selection
class _CM:
    dataset = "toy"
    folders = ("n0", "n1", "n2")
    names = ("zero", "one", "two")
    def __len__(self): return 3


def _pool_files(root, y):
    return [save_image(torch.full((3, 4, 4), (i % 7) / 7), root / f"c{y[i]}" / f"{i}.png") for i in range(len(y))]


def _scored(X, y, ipc):
    "A Selection with a candidate flag and float / int / NaN columns, like a real selector's."
    s = select_baseline("herding", X, y, ipc)
    sc = np.linspace(0, 1, len(y)); sc[1] = np.nan
    tab = {"score": sc, "label": y, "is_candidate": np.arange(len(y)) % 2 == 0, "rank": np.arange(len(y))[::-1].copy()}
    return selection_from_indices(s.indices, y, "scored", table=tab, options={"lam": 0.1})


def test_write_selection_layout_scores_arrays_and_json(tmp_path):
    X, y = synth(C=3, n=12, seed=5)
    files = _pool_files(tmp_path / "pool", y)
    s = _scored(X, y, 3)
    out = write_selection(tmp_path / "sel", files, _CM(), s, arrays=dict(image_emb=X, extra=np.arange(3)))
    for c, folder in enumerate(_CM.folders):
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(f"{i}.png" for i in s.indices if y[i] == c)
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "file", "label", "pool_index", "is_selected", "score", "is_candidate", "rank"]
    assert len(rows) == len(y) and [int(r["pool_index"]) for r in rows] == list(range(len(y)))
    assert [int(r["pool_index"]) for r in rows if r["is_selected"] == "1"] == s.indices.tolist()
    assert rows[0]["class"] == "n0" and rows[0]["file"] == str(files[0]) and rows[-1]["label"] == "2"
    assert rows[1]["score"] == "" and float(rows[2]["score"]) == s.table["score"][2]        # NaN → empty, floats by repr
    assert rows[0]["is_candidate"] == "1" and rows[1]["is_candidate"] == "0" and rows[0]["rank"] == str(len(y) - 1)
    z = np.load(out / "embeddings.npz")
    assert list(z.files) == ["image_emb", "extra", "labels", "files", "selected"]
    assert np.array_equal(z["image_emb"], X) and np.array_equal(z["labels"], y) and np.array_equal(z["selected"], s.indices)
    assert z["files"].tolist() == [str(f) for f in files]
    meta = json.loads((out / "selection.json").read_text())
    assert list(meta) == ["selector", "options", "ipc", "num_classes", "pool_size", "pool_per_class",
                          "candidates_per_class", "selected", "dataset"]
    assert (meta["selector"], meta["options"], meta["ipc"], meta["num_classes"], meta["pool_size"]) == ("scored", {"lam": 0.1}, 3, 3, 36)
    assert meta["pool_per_class"] == [12, 12, 12] and meta["candidates_per_class"] == [6, 6, 6]
    assert meta["selected"] == s.indices.tolist() and meta["dataset"] == "toy"
    assert not list(tmp_path.rglob("*.tmp"))
    # no is_candidate column → no candidates_per_class; no arrays → labels, files, selected only
    out2 = write_selection(tmp_path / "sel2", files, _CM(), select_baseline("first", None, y, 3))
    assert "candidates_per_class" not in json.loads((out2 / "selection.json").read_text())
    assert list(np.load(out2 / "embeddings.npz").files) == ["labels", "files", "selected"]


def test_write_selection_is_loadable_with_exactly_ipc(tmp_path):
    cm = class_map("fashion_mnist")
    X, y = synth(C=10, n=6, d=12, seed=6)
    files = _pool_files(tmp_path / "pool", y)
    write_selection(tmp_path / "sel", files, cm, select_baseline("kcenter", X, y, 2))
    assert load_distilled(tmp_path / "sel", cm, ipc=2, exact=True).per_class() == [2] * 10


def test_write_selection_a_bare_index_array(tmp_path):
    X, y = synth(C=3, n=6, seed=7)
    files = _pool_files(tmp_path / "pool", y)
    idx = np.sort(first_per_class(y, 2).ravel())
    with pytest.raises(ConfigError, match="selection_from_indices"):
        write_selection(tmp_path / "sel", files, _CM(), idx)
    out = write_selection(tmp_path / "sel", files, _CM(), selection_from_indices(idx, y))
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "file", "label", "pool_index", "is_selected"]
    assert json.loads((out / "selection.json").read_text())["selector"] == "given"


def test_write_selection_refuses_stale_images_before_writing(tmp_path):
    X, y = synth(C=3, n=12, seed=8)
    files = _pool_files(tmp_path / "pool", y)
    a, b = select_baseline("herding", X, y, 3), select_baseline("first", None, y, 3)
    write_selection(tmp_path / "sel", files, _CM(), a)
    write_selection(tmp_path / "sel", files, _CM(), a)                              # idempotent
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "sel").rglob("*"))
    with pytest.raises(DataError, match="holds \\d+ image file\\(s\\) not in this selection"):
        write_selection(tmp_path / "sel", files, _CM(), b)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "sel").rglob("*")) == before   # nothing touched
    write_selection(tmp_path / "sel", files, _CM(), b, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "sel" / "n0").iterdir()) == ["0.png", "1.png", "2.png"]
    (tmp_path / "sel" / "n1" / "notes.txt").write_text("kept")                       # not an image: left alone
    write_selection(tmp_path / "sel", files, _CM(), b)
    assert (tmp_path / "sel" / "n1" / "notes.txt").exists()


def test_write_selection_bad_input(tmp_path):
    X, y = synth(C=3, n=12, seed=9)
    files = _pool_files(tmp_path / "pool", y)
    a = select_baseline("herding", X, y, 3)
    cases = [
        (lambda: write_selection(tmp_path / "x", files[:-1], _CM(), a), DataError, "pool_files has 35 entries but the selection's table has 36 rows"),
        (lambda: write_selection(tmp_path / "x", files, _CM(), selection_from_indices(a.indices[1:], y)), DataError,
         "selection has \\[2, 3, 3\\] images per class"),
        (lambda: write_selection(tmp_path / "x", files, _CM(), Selection("s", 2, a.indices, a.table)), DataError,
         "selection.ipc = 2 but it holds 3"),
        (lambda: write_selection(tmp_path / "x", files, _CM(), selection_from_indices([], y)), DataError, "selection is empty"),
        (lambda: write_selection(tmp_path / "x", files, _CM(), selection_from_indices(a.indices, np.r_[y[:-1], 3])), DataError,
         "label 3 \\(pool index 35\\) is outside \\[0, 3\\)"),
        (lambda: write_selection(tmp_path / "x", files, _CM(), a, arrays={"selected": a.indices}), ConfigError, "\\['selected'\\]"),
    ]
    i, j = [k for k in a.indices if y[k] == 0][:2]
    same = list(files)
    same[i] = save_image(torch.zeros(3, 4, 4), tmp_path / "pool" / "s1" / "same.png")
    same[j] = save_image(torch.ones(3, 4, 4), tmp_path / "pool" / "s2" / "same.png")
    cases.append((lambda: write_selection(tmp_path / "x", same, _CM(), a), DataError, "class 0 \\(n0\\): two selected pool files share a file name"))
    missing = list(files); missing[i] = tmp_path / "pool" / "missing.png"
    cases.append((lambda: write_selection(tmp_path / "x", missing, _CM(), a), DataError, f"missing.png: selected pool file {i} not found"))
    txt = list(files); txt[i] = tmp_path / "pool" / "notes.txt"; Path(txt[i]).write_text("x")
    cases.append((lambda: write_selection(tmp_path / "x", txt, _CM(), a), DataError, f"pool file {i} is not an image \\(extension '.txt'"))
    for fn, err, msg in cases:
        with pytest.raises(err, match=msg):
            fn()
    assert not (tmp_path / "x").exists()                                             # refused before writing anything


# ---------------------------------------------------------------- embed_pool
class ToyEncoder(torch.nn.Module):
    encoder_id = "toy-v1"

    def __init__(self, d=16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(48, d, generator=g), requires_grad=False)
        self.calls = 0

    def encode_image(self, x):
        self.calls += 1
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj * 3.0   # not normalised

    def encode_text(self, prompts):
        seeds = [int(hashlib.md5(p.encode()).hexdigest()[:8], 16) for p in prompts]
        return torch.stack([torch.randn(self.proj.shape[1], generator=torch.Generator().manual_seed(s)) for s in seeds])


def test_embed_pool_folder_cache_and_selection(tmp_path):
    cm = class_map("fashion_mnist")
    g = torch.Generator().manual_seed(0)
    for c in cm.folders:
        for k in range(5):
            save_image(torch.rand(3, 8, 8, generator=g), tmp_path / c / f"{k}.png")
    enc = ToyEncoder()
    pe = embed_pool(tmp_path, enc, cm, batch_size=8)
    assert pe.image_emb.shape == (50, 16) and pe.text_emb.shape == (10, 16) and pe.image_emb.dtype == np.float32
    assert pe.labels.tolist() == np.repeat(np.arange(10), 5).tolist()
    assert pe.files[:2] == [str(tmp_path / "0" / "0.png"), str(tmp_path / "0" / "1.png")]
    assert pe.prompts[0] == "A photo of a t-shirt" and not pe.from_cache and enc.calls == 7
    np.testing.assert_allclose(np.linalg.norm(pe.image_emb, axis=1), 1, atol=1e-5)   # normalised by embed_pool
    np.testing.assert_allclose(np.linalg.norm(pe.text_emb, axis=1), 1, atol=1e-5)
    again = embed_pool(tmp_path, enc, cm, batch_size=8)
    assert again.from_cache and enc.calls == 7 and np.array_equal(again.image_emb, pe.image_emb)
    assert Path(again.cache_path).parent == tmp_path and Path(again.cache_path).name.startswith(".sas_embeddings-toy-v1-")
    assert not embed_pool(tmp_path, enc, cm, template="a {}").from_cache          # other prompts → other key
    assert not embed_pool(tmp_path, enc, cm, encoder_id="other").from_cache       # other encoder → other key
    save_image(torch.rand(3, 8, 8, generator=g), tmp_path / "4" / "9.png")         # pool changed → re-encode
    fresh = embed_pool(tmp_path, enc, cm)
    assert not fresh.from_cache and len(fresh.labels) == 51
    sel = select_baseline("kcenter", fresh.image_emb, fresh.labels, 2)
    assert sel.per_class().tolist() == [2] * 10
    (tmp_path / "7" / "0.png").unlink(); [p.unlink() for p in (tmp_path / "7").iterdir()]
    with pytest.raises(DataError, match="pool folder of class 7 .* has no images"):
        embed_pool(tmp_path, enc, cm)
    (tmp_path / "7").rmdir()
    with pytest.raises(DataError, match="pool folder of class 7 \\(Sneaker\\) missing"):
        embed_pool(tmp_path, enc, cm)


def test_embed_pool_imageset_in_memory(tmp_path):
    cm = class_map("fashion_mnist")
    g = torch.Generator().manual_seed(1)
    imgs = (torch.rand(20, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    ds = ImageSet(cm, torch.arange(10).repeat(2), images=imgs)
    enc = ToyEncoder()
    pe = embed_pool(ds, enc, batch_size=6, cache_dir=tmp_path)
    assert pe.files is None and pe.image_emb.shape == (20, 16) and enc.calls == 4
    assert embed_pool(ds, enc, batch_size=6, cache_dir=tmp_path).from_cache
    assert not embed_pool(ds, enc, cache=False).from_cache
    with pytest.raises(ConfigError, match="needs class_map"):
        embed_pool(tmp_path, enc)


def test_write_selection_of_an_embedded_pool_end_to_end(tmp_path):
    cm = ClassMap("toy", ("a", "b"), ("apple", "bear"), ("apple", "bear"))
    g = torch.Generator().manual_seed(3)
    for c in cm.folders:
        for k in range(6):
            save_image(torch.rand(3, 8, 8, generator=g), tmp_path / "pool" / c / f"{k}.png")
    pe = embed_pool(tmp_path / "pool", ToyEncoder(), cm)
    s = select_baseline("herding", pe.image_emb, pe.labels, 3)
    out = write_selection(tmp_path / "sel", pe.files, cm, s, arrays=dict(image_emb=pe.image_emb, text_emb=pe.text_emb))
    assert load_distilled(out, cm, 3, exact=True).per_class() == [3, 3]
    z = np.load(out / "embeddings.npz")
    assert np.array_equal(z["text_emb"], pe.text_emb) and z["files"].tolist() == pe.files
