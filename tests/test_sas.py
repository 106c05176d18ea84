"""Unit tests of ddrepro.sas: Eqs. 4-9 on hand-computed 2-3-d examples, stage 1/2 invariants, the Table 6
selectors, bad input, SAS's score table on disk (through ddrepro.selection.write_selection), the CLIP encoder and
the paper-number CSVs. The generic writer, baselines and embedding cache are tested in test_selection.py."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ddrepro.core import ConfigError, DataError
from ddrepro.data import class_map, load_distilled, save_image
from ddrepro.backbones import CLIP_MEAN, CLIP_STD, ClipEncoder
from ddrepro.selection import (Selection, class_blocks, embed_pool, first_per_class, random_per_class,
                               select_baseline, top_per_class, write_selection)
from ddrepro.sas import (ABLATIONS, TABLE_COLUMNS, angular_distance, candidate_count, check_embeddings, parse_selector,
                         s_div, s_div_norm, s_margin, s_margin_norm, s_mixed, s_rel, s_sep, sas_select, score_table, select, stage1,
                         stage2_naive, stage2_select, stream_order)

ROOT = Path(__file__).resolve().parents[1]
C0 = math.acos(1 - 1e-6)                    # Eq. 4 clamp: angle between identical vectors


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synth_pool(C=4, n=40, d=32, cos=0.4, seed=0, dtype=np.float64):
    "Normalised synthetic pool: image = cos·prompt + noise, n per class."
    rng = np.random.default_rng(seed)
    T = unit(rng.standard_normal((C, d)))
    y = np.repeat(np.arange(C), n)
    V = unit(cos * T[y] + math.sqrt(1 - cos ** 2) * unit(rng.standard_normal((C * n, d))))
    return V.astype(dtype), T.astype(dtype), y


# ---------------------------------------------------------------- Eqs. 4-9, hand-computed values
def test_eq4_angular_distance_hand_values():
    e1, e2, u = np.array([1.0, 0]), np.array([0.0, 1]), np.array([0.6, 0.8])
    assert angular_distance(e1, e2) == pytest.approx(math.pi / 2, abs=1e-12)
    assert angular_distance(e1, u) == pytest.approx(0.9272952180016122, abs=1e-12)
    assert angular_distance(e2, u) == pytest.approx(0.6435011087932844, abs=1e-12)
    # the clamp keeps identical / opposite vectors finite and off the ends of [0, π]
    assert angular_distance(e1, e1) == pytest.approx(1.41421e-3, abs=1e-8)
    assert angular_distance(e1, -e1) == pytest.approx(math.pi - C0, abs=1e-12)
    X = unit(np.random.default_rng(0).standard_normal((5, 3)))
    D = angular_distance(X, X)
    assert np.array_equal(D, D.T) and np.isfinite(D).all() and D.shape == (5, 5)
    assert np.allclose(np.diag(D), C0)
    # batched shapes
    assert angular_distance(X[None].repeat(2, 0), X[None].repeat(2, 0)).shape == (2, 5, 5)


def test_eq5_6_8_hand_values():
    T = np.eye(3)
    V = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0.6, 0.8]])
    y = np.array([0, 0, 1, 2])
    np.testing.assert_allclose(s_rel(V, T, y), [-C0, -math.acos(0.6), -C0, -math.acos(0.8)], atol=1e-12)
    np.testing.assert_allclose(s_sep(V, T, y), [math.pi / 2, math.acos(0.8), math.pi / 2, math.acos(0.6)], atol=1e-12)
    np.testing.assert_allclose(s_margin(V, T, y), [math.pi / 2 - C0, -0.2837941092083278, math.pi / 2 - C0,
                                                   0.2837941092083278], atol=1e-12)


def test_eq6_uses_only_other_classes_of_the_pool():
    T = unit([[1.0, 0.1, 0], [1.0, 0, 0.1], [0, 0, 1]])
    V = unit([[1.0, 0.05, 0.0]])
    y = np.array([0])
    want = min(angular_distance(V[0], T[1]), angular_distance(V[0], T[2]))
    assert s_sep(V, T, y)[0] == pytest.approx(want, abs=1e-12)


def test_margin_sign_is_zero_shot_correctness():
    V, T, y = synth_pool(C=6, n=50, cos=0.15, seed=1)
    m = s_margin(V, T, y)
    correct = (V @ T.T).argmax(1) == y
    assert 0 < correct.mean() < 1                               # both signs occur
    assert np.array_equal(m > 0, correct)


def test_eq7_s_div_hand_values():
    W = np.array([[1.0, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1], [0, 0.6, 0.8]])
    y = np.array([0, 0, 0, 1, 1])
    a12, a13, a23 = math.pi / 2, math.acos(0.6), math.acos(0.8)
    np.testing.assert_allclose(s_div(W, y), [(a12 + a13) / 2, (a12 + a23) / 2, math.pi / 4, a23, a23], atol=1e-12)
    r = s_div(W, y, ref=np.array([1, 1, 0, 1, 0], bool))
    np.testing.assert_allclose(r[:3], [a12, a12, (a13 + a23) / 2], atol=1e-12)
    assert np.isnan(r[3]) and r[4] == pytest.approx(a23)


def test_eq7_matches_direct_loop_with_uneven_classes():
    rng = np.random.default_rng(3)
    V = unit(rng.standard_normal((23, 5)))
    y = rng.integers(0, 3, 23)
    got = s_div(V, y)
    for i in range(23):
        same = [j for j in range(23) if y[j] == y[i] and j != i]
        want = np.mean([math.acos(np.clip(V[i] @ V[j], -1 + 1e-6, 1 - 1e-6)) for j in same]) if same else np.nan
        np.testing.assert_allclose(got[i], want, atol=1e-12)


def test_eq9_mixed_score_hand_values():
    div = np.array([1.0, 2.0, 3.0, 5.0, 7.0])
    y = np.array([0, 0, 0, 1, 1])
    margin = np.array([0.1, 0.2, 0.3, 0.0, -0.2])
    z0 = np.array([-1, 0, 1]) / math.sqrt(2 / 3)               # population std of (1, 2, 3) = sqrt(2/3)
    np.testing.assert_allclose(s_div_norm(div, y), np.r_[z0, -1, 1], atol=1e-12)
    # the earlier reading: only s_div z-scored, the margin left in radians
    np.testing.assert_allclose(s_mixed(margin, div, y, lam=0.05, norm="zscore_div_only"), margin + 0.05 * np.r_[z0, -1, 1], atol=1e-12)
    np.testing.assert_allclose(s_mixed(margin, div, y, lam=0.2, norm="zscore_div_only")[3:], [0.0 - 0.2, -0.2 + 0.2], atol=1e-12)
    # the default: both terms z-scored per class (margin (0.1, 0.2, 0.3) → z0; (0, −0.2) → (+1, −1))
    np.testing.assert_allclose(s_margin_norm(margin, y), np.r_[z0, 1, -1], atol=1e-12)
    np.testing.assert_allclose(s_mixed(margin, div, y, lam=0.05), np.r_[z0, 1, -1] + 0.05 * np.r_[z0, -1, 1], atol=1e-12)
    np.testing.assert_allclose(s_mixed(margin, div, y, lam=0.2)[3:], [1 - 0.2, -1 + 0.2], atol=1e-12)
    # affine: mapped onto the class's margin mean/std
    af = s_div_norm(div, y, "affine", target=margin)
    np.testing.assert_allclose(af[3:], [-0.2, 0.0], atol=1e-12)          # class 1: div 5 → −1σ, 7 → +1σ of margin (−0.1 ± 0.1)
    np.testing.assert_allclose(af[:3], [0.1, 0.2, 0.3], atol=1e-12)
    with pytest.raises(ConfigError, match="norm='cosine'"):
        s_div_norm(div, y, "cosine")


# ---------------------------------------------------------------- stage 1
def test_candidate_count_rule():
    assert candidate_count([200, 150, 40], 50, 0.5).tolist() == [100, 75, 50]   # round(20) < IPC → IPC
    assert candidate_count([201], 50, 0.5).tolist() == [101]                     # 100.5 rounds half up
    assert candidate_count([40], 10, 1.0).tolist() == [40]
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="keep_ratio"):
            candidate_count([10], 1, p)


def test_stage1_exact_counts_ranks_and_ties():
    V, T, y = synth_pool(C=3, n=37, seed=2)
    m = s_margin(V, T, y)
    st = stage1(m, y, ipc=5, keep_ratio=0.5)
    assert np.bincount(y[st.is_candidate]).tolist() == [19, 19, 19]             # round(18.5) = 19
    for c in range(3):
        idx = np.nonzero(y == c)[0]
        order = idx[np.argsort(-m[idx], kind="stable")]
        assert st.candidates[c].tolist() == order[:19].tolist()
        assert sorted(st.margin_rank[idx].tolist()) == list(range(1, 38))
    ms = np.array([0.3, 0.3, 0.1, 0.3])                                        # ties → lower pool index first
    st = stage1(ms, np.zeros(4, int), ipc=2, keep_ratio=0.5)
    assert st.candidates.tolist() == [[0, 1]] and st.margin_rank.tolist() == [1, 2, 4, 3]


def test_stage1_warns_when_candidates_are_raised_to_ipc():
    with pytest.warns(UserWarning, match="raised to ipc"):
        st = stage1(np.arange(8.0), np.zeros(8, int), ipc=3, keep_ratio=0.25)
    assert st.m.tolist() == [3]


# ---------------------------------------------------------------- stage 2
def test_stage2_exactly_ipc_from_candidates():
    V, T, y = synth_pool(C=5, n=40, seed=4)
    m = s_margin(V, T, y)
    st = stage1(m, y, ipc=7, keep_ratio=0.5)
    sel = stage2_select(V, st.candidates, 7, m)
    assert sel.shape == (5, 7)
    for c in range(5):
        assert len(set(sel[c].tolist())) == 7
        assert set(sel[c].tolist()) <= set(st.candidates[c].tolist())


def test_stage2_duplicate_pairs_never_both_kept_orthogonal():
    base = np.eye(16)
    pairs = [0, 2, 3, 7, 11]
    X = np.concatenate([base, base[pairs]])                                    # 16 distinct + 5 exact copies
    rng = np.random.default_rng(0)
    for ipc in (1, 4, 10, 16):
        for _ in range(10):
            stream = rng.permutation(len(X))[None]
            sel = stage2_select(X, stream, ipc, np.zeros(len(X)))[0]
            assert len({tuple(X[i]) for i in sel}) == ipc, (ipc, stream, sel)
            assert np.array_equal(sel, stage2_naive(X, stream[0], ipc, np.zeros(len(X))))


def test_sas_never_keeps_both_members_of_a_duplicate_pair():
    V, T, y = synth_pool(C=4, n=30, d=64, seed=5)
    rng = np.random.default_rng(5)
    dup = rng.choice(len(V), 40, replace=False)
    V2 = np.concatenate([V, V[dup]]); y2 = np.concatenate([y, y[dup]])
    twin = {int(i): len(V) + k for k, i in enumerate(dup)}
    for keep in (0.5, 0.8, 1.0):
        sel = set(sas_select(V2, T, y2, ipc=8, keep_ratio=keep).tolist())
        assert not any(i in sel and j in sel for i, j in twin.items())
    for s in ("D", "sas"):
        sel = set(select(s, V2, T, y2, 8).indices.tolist())
        assert not any(i in sel and j in sel for i, j in twin.items())


@pytest.mark.parametrize("ipc", [1, 2, 5, 12])
def test_stage2_running_sums_equal_the_papers_loop(ipc):
    V, T, y = synth_pool(C=6, n=4 * max(ipc, 3), d=24, seed=ipc)
    m = s_margin(V, T, y)
    for order in ("margin_desc", "pool_index", "random"):
        streams = stream_order(stage1(m, y, ipc, 0.6).candidates, order, seed=3)
        fast = stage2_select(V, streams, ipc, m)
        naive = np.stack([stage2_naive(V, s, ipc, m) for s in streams])
        assert np.array_equal(fast, naive), order


def test_stage2_uneven_stream_lengths_and_padding():
    V, T, y = synth_pool(C=3, n=20, seed=6)
    m = s_margin(V, T, y)
    idx, counts = class_blocks(y)
    streams = np.full((3, 20), -1)
    for c, L in enumerate([20, 9, 4]):
        streams[c, :L] = idx[c, :L]
    fast = stage2_select(V, streams, 4, m)
    for c in range(3):
        assert np.array_equal(fast[c], stage2_naive(V, streams[c], 4, m))
    assert sorted(fast[2].tolist()) == sorted(idx[2, :4].tolist())               # exactly IPC candidates: no-op


def test_stage2_tie_break_lowest_margin_then_most_recent():
    P = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1, 0], [0.6, 0.8, 0]])
    # IPC 1: every step ties. equal margins → newer (3) goes; then 2 (margin 0) vs 0 (0.5) → 2 goes
    assert stage2_select(P, np.array([[2, 3, 0]]), 1, np.array([0.5, 0, 0, 0])).tolist() == [[0]]
    assert stage2_naive(P, [2, 3, 0], 1, np.array([0.5, 0, 0, 0])).tolist() == [0]
    # exact copies 0/1 tie for the lowest diversity: equal margins → the later one (1) goes
    assert stage2_select(P, np.array([[0, 1, 2]]), 2, np.zeros(4)).tolist() == [[0, 2]]
    # … unless it has the higher margin
    assert stage2_select(P, np.array([[0, 1, 2]]), 2, np.array([0.0, 1, 0, 0])).tolist() == [[1, 2]]


def test_stage2_eviction_is_argmin_of_eq7_over_current_set():
    P = np.array([[1.0, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1]])
    # S = {e1, e2, u}: u has the lowest mean angle (π/4) → evicted
    assert stage2_select(P, np.array([[0, 1, 2]]), 2, np.zeros(4)).tolist() == [[0, 1]]
    # the newcomer itself is evicted when it is the most redundant
    assert stage2_select(P, np.array([[0, 1, 3, 2]]), 3, np.zeros(4)).tolist() == [[0, 1, 3]]
    assert stage2_select(P, np.array([[0, 3, 2, 1]]), 3, np.zeros(4)).tolist() == [[0, 1, 3]]  # here u was a member


def test_stream_order_options():
    K = np.array([[5, 2, 9, -1], [1, 0, 4, 3]])
    assert stream_order(K).tolist() == K.tolist()
    assert stream_order(K, "pool_index").tolist() == [[2, 5, 9, -1], [0, 1, 3, 4]]
    r = stream_order(K, "random", seed=7)
    assert np.array_equal(r, stream_order(K, "random", seed=7))
    assert sorted(r[1].tolist()) == [0, 1, 3, 4] and r[0, 3] == -1
    with pytest.raises(ConfigError, match="order='best'"):
        stream_order(K, "best")


# ---------------------------------------------------------------- sas_select / select
def test_sas_select_ipc_per_class_and_paper_sizes():
    # `-p ipc 50`: pool 200 / candidates 100 / selected 50 per class
    V, T, y = synth_pool(C=3, n=200, d=32, seed=7)
    res = select("sas", V, T, y, 50)
    assert np.bincount(y[res.table["is_candidate"]]).tolist() == [100, 100, 100]
    assert res.per_class().tolist() == [50, 50, 50]
    assert np.array_equal(res.indices, sas_select(V, T, y, 50))
    assert np.array_equal(res.indices, np.sort(res.indices))
    assert res.table["is_selected"][res.indices].all() and res.table["is_candidate"][res.indices].all()


def test_sas_select_deterministic_and_dtype_independent():
    V, T, y = synth_pool(C=4, n=40, seed=8)
    a = sas_select(V, T, y, 10)
    assert np.array_equal(a, sas_select(V.copy(), T.copy(), y.copy(), 10))
    assert np.array_equal(a, sas_select(torch.from_numpy(V), torch.from_numpy(T), torch.from_numpy(y), 10))
    assert np.array_equal(a, sas_select(V.astype(np.float32), T.astype(np.float32), y, 10))


def test_m_c_equal_ipc_reduces_to_top_margin():
    V, T, y = synth_pool(C=5, n=40, seed=9)
    m = s_margin(V, T, y)
    top = np.sort(top_per_class(m, y, 10).ravel())
    assert np.array_equal(sas_select(V, T, y, 10, keep_ratio=0.25), top)           # m_c = round(0.25·40) = 10
    assert np.array_equal(select("E", V, T, y, 10).indices, top)
    assert not np.array_equal(sas_select(V, T, y, 10, keep_ratio=0.5), top)         # stage 2 does something at p = 0.5


def test_ablation_selectors():
    V, T, y = synth_pool(C=4, n=24, seed=10)
    ipc = 6
    rel, sep = s_rel(V, T, y), s_sep(V, T, y)
    assert set(ABLATIONS) == set("ABCDEF")
    assert np.array_equal(select("B", V, T, y, ipc).indices, np.sort(top_per_class(rel, y, ipc).ravel()))
    assert np.array_equal(select("C", V, T, y, ipc).indices, np.sort(top_per_class(sep, y, ipc).ravel()))
    assert np.array_equal(select("top_rel", V, T, y, ipc).indices, select("B", V, T, y, ipc).indices)
    idx, _ = class_blocks(y)
    d = select("D", V, T, y, ipc)
    assert np.array_equal(d.indices, np.sort(np.concatenate([stage2_naive(V, r, ipc, rel + sep) for r in idx])))
    assert d.table["is_candidate"].all()
    assert np.array_equal(select("F", V, T, y, ipc).indices, sas_select(V, T, y, ipc))
    a = select("A", V, T, y, ipc, seed=3)
    assert np.array_equal(a.indices, select("random", V, T, y, ipc, seed=3).indices)
    assert not np.array_equal(a.indices, select("A", V, T, y, ipc, seed=4).indices)
    assert np.array_equal(select("first", V, T, y, ipc).indices, np.sort(first_per_class(y, ipc).ravel()))
    assert np.array_equal(first_per_class(np.array([1, 0, 1, 0, 1]), 2), [[1, 3], [0, 2]])
    r = random_per_class(y, ipc, seed=0)
    assert all((y[row] == c).all() and len(set(row)) == ipc for c, row in enumerate(r))


def test_mixed_selector_ranks_the_whole_pool():
    V, T, y = synth_pool(C=3, n=30, seed=11)
    res = select("mixed:0.2", V, T, y, 5)
    want = s_mixed(s_margin(V, T, y), s_div(V, y), y, 0.2)
    np.testing.assert_allclose(res.table["score"], want)
    assert np.array_equal(res.indices, np.sort(top_per_class(want, y, 5).ravel()))
    assert res.options == {"lam": 0.2, "norm": "zscore_both"}
    assert select("mixed", V, T, y, 5, lam=0.0).indices.tolist() == select("E", V, T, y, 5).indices.tolist()


def test_selection_table_columns():
    V, T, y = synth_pool(C=3, n=20, seed=12)
    res = select("sas", V, T, y, 4)
    assert isinstance(res, Selection)
    t = res.table
    sel = res.indices
    np.testing.assert_allclose(t["s_margin"], t["s_rel"] + t["s_sep"])
    np.testing.assert_allclose(t["s_div_static"], s_div(V, y))
    np.testing.assert_allclose(t["s_div_final"][sel], s_div(V[sel], y[sel]))        # Eq. 7 over S'
    assert np.isnan(t["score"]).all()
    assert len(res.rows()) == len(y) and res.to_pandas().shape == (len(y), 10)


def test_parse_selector():
    assert parse_selector("mixed:0.05") == ("mixed", {"lam": 0.05})
    assert parse_selector("top_margin") == ("E", {})
    for bad, msg in [("G", "selector='G'"), ("sas:1", "only 'mixed'"), ("mixed:x", "must be a number")]:
        with pytest.raises(ConfigError, match=msg):
            parse_selector(bad)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    V, T, y = synth_pool(C=3, n=10, seed=13)
    cases = [
        (lambda: sas_select(V, T, y, 11), DataError, r"ipc=11 is larger than the pool of class 0 \(10 images"),
        (lambda: sas_select(V, T, np.r_[y[:-10], np.zeros(10, int)], 2), DataError, r"class\(es\) \[2\] have no images"),
        (lambda: sas_select(V * 1.01, T, y, 2), DataError, "image_emb: 30 row\\(s\\) are not L2-normalised"),
        (lambda: sas_select(V, T * 0.5, y, 2), DataError, "text_emb: 3 row\\(s\\) are not L2-normalised"),
        (lambda: sas_select(np.where(np.arange(30)[:, None] == 4, np.nan, V), T, y, 2), DataError,
         r"image_emb: 1 row\(s\) contain NaN or inf \(first: row 4\)"),
        (lambda: sas_select(V, np.where(np.arange(3)[:, None] == 1, np.inf, T), y, 2), DataError,
         r"text_emb: 1 row\(s\) contain NaN or inf \(first: row 1\)"),
        (lambda: select("sas", V, T, y, 2, num_classes=4), DataError, "text_emb has 3 rows but there are 4 classes"),
        (lambda: sas_select(V, T[:2], y, 2), DataError, r"labels: 10 value\(s\) out of range \[0, 2\)"),
        (lambda: sas_select(V, T, np.r_[y[:-1], -1], 2), DataError, r"labels\[29\] = -1"),
        (lambda: sas_select(V, T, y[:-1], 2), DataError, "labels: expected shape \\(30,\\)"),
        (lambda: sas_select(V[:, :5] / np.linalg.norm(V[:, :5], axis=1, keepdims=True), T, y, 2), DataError, "d=5"),
        (lambda: sas_select(V, T, y, 0), ConfigError, "ipc=0"),
        (lambda: sas_select(V, T, y, 2, keep_ratio=0), ConfigError, "keep_ratio=0"),
        (lambda: sas_select(V, T[:1], np.zeros(30, int), 2), DataError, "at least 2 classes"),
        (lambda: stage2_select(V, np.array([[0, 1, -1]]), 3, np.zeros(30)), DataError, "class 0 has 2 candidates but ipc=3"),
        (lambda: select("sas", V, T, y, 2, lamda=0.1), ConfigError, r"unknown option\(s\) \['lamda'\]"),
    ]
    for fn, err, msg in cases:
        with pytest.raises(err, match=msg):
            fn()
    check_embeddings(V * (1 + 9e-4), T, y, ipc=10)                                  # inside the 1e-3 tolerance


# ---------------------------------------------------------------- outputs
class _CM:
    dataset = "toy"
    folders = ("n0", "n1", "n2")
    names = ("zero", "one", "two")
    def __len__(self): return 3


def _pool_files(root, y):
    return [save_image(torch.full((3, 4, 4), (i % 7) / 7), root / f"c{y[i]}" / f"{i}.png") for i in range(len(y))]


def test_sas_selection_on_disk(tmp_path):
    V, T, y = synth_pool(C=3, n=12, seed=14)
    files = _pool_files(tmp_path / "pool", y)
    res = select("sas", V, T, y, 3)
    assert list(res.table) == list(TABLE_COLUMNS)
    out = write_selection(tmp_path / "sel", files, _CM(), res, arrays=dict(image_emb=V, text_emb=T))
    for c, folder in enumerate(_CM.folders):
        got = sorted(p.name for p in (out / folder).iterdir())
        assert got == sorted(f"{i}.png" for i in res.indices if y[i] == c)
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "file", "label", "pool_index", "s_rel", "s_sep", "s_margin", "margin_rank",
                             "is_candidate", "is_selected", "s_div_final", "s_div_static", "score"]
    assert len(rows) == len(y)
    assert [int(r["pool_index"]) for r in rows if r["is_selected"] == "1"] == res.indices.tolist()
    assert sum(r["is_candidate"] == "1" for r in rows) == 18
    for k in ("s_rel", "s_sep", "s_margin", "s_div_final", "s_div_static"):              # exact: floats by repr
        assert [float(r[k]) for r in rows] == res.table[k].tolist(), k
    assert [int(r["margin_rank"]) for r in rows] == res.table["margin_rank"].tolist()
    assert all(r["score"] == "" for r in rows)                                         # SAS ranks by no single score
    assert rows[0]["class"] == "n0" and rows[0]["file"] == str(files[0])
    z = np.load(out / "embeddings.npz")
    assert np.array_equal(z["image_emb"], V) and np.array_equal(z["text_emb"], T) and np.array_equal(z["labels"], y)
    meta = json.loads((out / "selection.json").read_text())
    assert meta["candidates_per_class"] == [6, 6, 6] and meta["options"]["keep_ratio"] == 0.5
    assert meta["selected"] == res.indices.tolist() and meta["ipc"] == 3
    # SAS's score table for given indices (e.g. another selector's) is written the same way
    given = Selection("given", 3, res.indices, score_table(V, T, y, res.indices))
    write_selection(tmp_path / "sel2", files, _CM(), given, arrays=dict(image_emb=V, text_emb=T))
    assert json.loads((tmp_path / "sel2" / "selection.json").read_text())["candidates_per_class"] == [12, 12, 12]


def test_sas_selection_is_loadable_with_exactly_ipc(tmp_path):
    cm = class_map("fashion_mnist")
    V, T, y = synth_pool(C=10, n=8, seed=15)
    files = _pool_files(tmp_path / "pool", y)
    write_selection(tmp_path / "sel", files, cm, select("sas", V, T, y, 2), arrays=dict(image_emb=V, text_emb=T))
    ds = load_distilled(tmp_path / "sel", cm, ipc=2, exact=True)
    assert ds.per_class() == [2] * 10


def test_sas_random_and_first_match_the_baselines():
    V, T, y = synth_pool(C=4, n=20, seed=16)
    for seed in (0, 3):
        assert np.array_equal(select("random", V, T, y, 5, seed=seed).indices,
                              select_baseline("random", None, y, 5, seed=seed).indices)
    assert np.array_equal(select("first", V, T, y, 5).indices, select_baseline("first", None, y, 5).indices)


class _FakeClip(torch.nn.Module):
    "An open_clip-shaped model: sees CLIP-normalised 224 px images and token ids, returns unnormalised features."
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = None

    def encode_image(self, x):
        self.seen = x
        return torch.cat([x.flatten(2).mean(2), x.flatten(2).std(2)], 1) * 7

    def encode_text(self, tok):
        return tok.float() * 3 + 1


def test_clip_encoder_preprocessing_and_normalisation(tmp_path):
    enc = ClipEncoder(_FakeClip(), lambda ps: torch.tensor([[len(p), 1, 2, 0, 5, 1] for p in ps]))
    x = torch.zeros(2, 3, 32, 48); x[:, :, :, :8] = 1.0                          # bright left strip: cropped away
    e = enc.encode_image(x)
    seen = enc.model.seen
    assert seen.shape == (2, 3, 224, 224) and seen.dtype == torch.float32
    want = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(seen[0, :, 112, 112], want)                      # center crop of the short-side resize
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(enc.encode_text(["a", "bcd"]).norm(dim=1), torch.ones(2))
    cm = class_map("fashion_mnist")
    g = torch.Generator().manual_seed(2)
    for c in cm.folders:
        for k in range(3):
            save_image(torch.rand(3, 16, 16, generator=g), tmp_path / c / f"{k}.png")
    pe = embed_pool(tmp_path, enc, cm)
    assert pe.encoder_id == "_FakeClip-224" and pe.image_emb.shape == (30, 6)
    check_embeddings(pe.image_emb, pe.text_emb, pe.labels, ipc=3)


# ---------------------------------------------------------------- paper numbers
PAPER_COLS = ["table", "dataset", "model", "method", "ipc", "pool_factor", "keep_ratio", "selector", "mean", "std"]


def _paper(name):
    with open(ROOT / "params" / "paper" / name) as f:
        return list(csv.DictReader(f))


def test_paper_csvs_shape_and_anchor_values():
    sizes = {"sas_table1.csv": 72, "sas_table2.csv": 24, "sas_table3.csv": 9, "sas_table4.csv": 9,
             "sas_table5.csv": 12, "sas_table6.csv": 18, "sas_fig5.csv": 2}
    for name, n in sizes.items():
        rows = _paper(name)
        assert list(rows[0]) == PAPER_COLS and len(rows) == n, name
        for r in rows:
            assert 0 < float(r["mean"]) < 100 and (r["std"] == "" or 0 <= float(r["std"]) < 5)
            assert r["selector"] == "" or parse_selector(r["selector"])
    # the default configuration is printed identically in Tables 1, 4, 5 and 6
    def default(name, sel):
        return [(r["ipc"], r["mean"], r["std"]) for r in _paper(name)
                if r["selector"] == sel and r["model"] == "resnet_ap10" and r["pool_factor"] == "4" and r["method"] == "minimax"]
    want = [("10", "40.3", "0.5"), ("20", "45.0", "0.8"), ("50", "59.9", "0.8")]
    for name, sel in [("sas_table1.csv", "sas"), ("sas_table4.csv", "sas"), ("sas_table5.csv", "sas"), ("sas_table6.csv", "F")]:
        assert default(name, sel) == want, name
    t1 = {(r["model"], r["method"], r["selector"], r["ipc"]): (r["mean"], r["std"]) for r in _paper("sas_table1.csv")}
    assert t1[("convnet6", "random", "", "10")] == ("24.3", "1.1")
    assert t1[("resnet18", "dit", "sas", "50")] == ("51.7", "1.0")
    assert t1[("resnet_ap10", "full", "", "20")] == ("87.5", "0.5")
    t6 = {(r["selector"], r["ipc"]): r["mean"] for r in _paper("sas_table6.csv")}
    assert t6[("A", "10")] == "35.4" and t6[("D", "50")] == "59.0" and t6[("E", "50")] == "55.8"
    t3 = {(r["method"], r["selector"], r["ipc"]): r["mean"] for r in _paper("sas_table3.csv")}
    assert t3[("ddpm", "sas", "20")] == "44.9"


def test_every_shipped_sas_table_spec_makes_valid_configs():
    # each cell of each params/sas table (paper scale and embedded) is a valid SASConfig; paper CSVs exist
    from ddrepro.reports import table_cells, table_specs
    from ddrepro.core import project_root
    from ddrepro.sas import SASConfig
    specs = [s for s in table_specs() if s.name.startswith("sas/")]
    names = {s.name for s in specs}
    assert {f"sas/table{i}" for i in (2, 3, 4, 5, 6)} | {"sas/table1_imagewoof", "sas/fig3", "sas/fig5"} <= names
    assert {f"sas/embedded/table{i}" for i in (1, 2, 3, 4, 5, 6)} | {"sas/embedded/fig3", "sas/embedded/fig5"} <= names
    for spec in specs:
        base = {k: v for k, v in spec.base.items()}
        for cell in table_cells(spec):
            cfg = SASConfig(**{**base, **cell})
            assert cfg.pool_per_class == cfg.pool_factor * cfg.ipc
        if spec.paper: assert (project_root() / spec.paper).exists(), spec.paper
        if "/embedded/" in spec.name: assert spec.paper is None, f"{spec.name}: paper numbers are for another dataset"
    t3 = next(s for s in specs if s.name == "sas/table3")
    assert t3.base["pool"] == "ddpm" and t3.base["dataset"] == "cifar10" and t3.base["num_steps"] == 1000
    with pytest.raises(ConfigError, match="pool='vqgan'"):
        SASConfig(pool="vqgan")


# ---------------------------------------------------------------- Eq. 9 normalisation, K-Center / herding, names
def test_eq9_both_terms_normalised_keeps_the_margin_in_charge_at_small_lambda():
    # one class, margins 0.04 rad apart (sd 0.045 rad, the scale of CLIP margins), diversity in the opposite order
    margin, div, y = np.array([0.00, 0.04, 0.08, 0.12]), np.array([1.3, 1.2, 1.1, 1.0]), np.zeros(4, int)
    old = s_mixed(margin, div, y, 0.05, norm="zscore_div_only")
    new = s_mixed(margin, div, y, 0.05)
    assert np.argsort(-old).tolist() == [0, 1, 2, 3]           # z(s_div) beside radians: diversity wins at λ = 0.05
    assert np.argsort(-new).tolist() == [3, 2, 1, 0]           # both z-scored: λ = 0.05 only nudges the margin order
    zm = (margin - margin.mean()) / margin.std()
    np.testing.assert_allclose(new, zm - 0.05 * zm, atol=1e-12)   # z(div) = −z(margin) here
    # affine ranks every class like zscore_both (positive per-class scale + shift)
    rng = np.random.default_rng(0)
    m, d, yy = rng.normal(0, 0.04, 40), rng.normal(1.2, 0.02, 40), np.repeat([0, 1], 20)
    for lam in (0.05, 0.1, 0.2):
        for c in (0, 1):
            k = yy == c
            assert np.array_equal(np.argsort(-s_mixed(m, d, yy, lam, "affine")[k]), np.argsort(-s_mixed(m, d, yy, lam)[k]))
    with pytest.raises(ConfigError, match="zscore_div_only"):
        s_mixed(m, d, yy, 0.1, norm="zscore")


def test_mixed_selector_norm_option_changes_the_selection():
    V, T, y = synth_pool(C=3, n=30, seed=11)
    a = select("mixed:0.05", V, T, y, 5)
    b = select("mixed:0.05", V, T, y, 5, norm="zscore_div_only")
    assert a.options["norm"] == "zscore_both" and b.options["norm"] == "zscore_div_only"
    np.testing.assert_allclose(b.table["score"], s_margin(V, T, y) + 0.05 * s_div_norm(s_div(V, y), y))
    assert not np.array_equal(a.indices, b.indices)


def test_sasconfig_mixed_norm_default_and_check():
    from ddrepro.sas import SASConfig
    assert SASConfig(out_dir="/tmp/ddrepro-unused").mixed_norm == "zscore_both"
    with pytest.raises(ConfigError, match="mixed_norm='z'"):
        SASConfig(mixed_norm="z", out_dir="/tmp/ddrepro-unused")


def test_kcenter_and_herding_selectors_match_the_shared_baselines():
    V, T, y = synth_pool(C=3, n=20, seed=5)
    for name in ("kcenter", "herding"):
        got = select(name, V, T, y, 4)
        assert np.array_equal(got.indices, select_baseline(name, V, y, 4).indices)
        assert got.per_class().tolist() == [4, 4, 4] and got.options["metric"] == "euclidean"
    assert not np.array_equal(select("kcenter", V, T, y, 4).indices, select("first", V, T, y, 4).indices)


def test_pool_baselines_and_row_names():
    from ddrepro.sas import pool_baselines, describe_rows, selector_label, set_label, display_value, SELECTORS, ALIASES
    V, T, y = synth_pool(C=3, n=20, seed=6)
    b = pool_baselines(["first_pool", "random_pool", "kcenter_pool", "herding_pool", "random_real", "full_data"], "sas", V, y, 4, seed=2)
    assert list(b) == [("", None), ("A", 0), ("kcenter", None), ("herding", None)]
    assert np.array_equal(b[("A", 0)].indices, select("A", V, T, y, 4, seed=2).indices)
    assert np.array_equal(b[("kcenter", None)].indices, np.sort(select_baseline("kcenter", V, y, 4).indices))
    assert not pool_baselines(["random_pool"], "random", V, y, 4) and not pool_baselines(["first_pool"], "first", V, y, 4)
    assert list(pool_baselines(["random_pool"], "random", V, y, 4, draws=3)) == [("A", 1), ("A", 2)]   # own selection = draw 0
    assert selector_label("A") == "random from pool: no s_rel, s_sep, s_div (A)"
    assert all(selector_label(k) != k for k in SELECTORS)                 # every code has words
    assert all(selector_label(k).endswith(f"({k})") for k in "ABCDEF")
    assert set_label("minimax", "sas") == "Minimax + SAS" and set_label("dit", "").startswith("DiT (first IPC")
    assert display_value("ipc", 20.0) == "IPC 20" and display_value("model", "resnet18") == "ResNet-18"
    rows = describe_rows([dict(method="full", selector="", model="resnet18", ipc=1300),
                          dict(method="minimax", selector="kcenter", model="convnet6", ipc=10)], ipc=10)
    assert [r["ipc"] for r in rows] == [10, 10] and rows[0]["train_per_class"] == 1300 and "train_per_class" not in rows[1]
    assert rows[1]["set"] == "Minimax pool, K-Center on the pool" and rows[1]["student"] == "ConvNet-6"
