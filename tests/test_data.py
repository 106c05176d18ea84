"""Class maps are pinned id by id (a wrong class order is the field's most common reproduction bug),
and every kind of bad input gets one clear error."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddrepro.core import ConfigError, DataError
from ddrepro.data import (DATASETS, class_map, imagenet1k_classes, load_distilled, load_fashion_mnist, load_real,
                          read_image, save_image, save_image_set)

# (wnid, ImageNet-1K head index, curated CLIP name, raw first synonym). Label order: the class files of the official
# Minimax code (misc/*.txt; Gu et al., CVPR 2024) and IDC's misc/class100.txt (Kim et al., ICML 2022). Curated names:
# open_clip's IMAGENET_CLASSNAMES; raw: the first synonym of the ImageNet-1K label.
PINNED = {
    "imagewoof": [("n02096294", 193, "Australian Terrier", "Australian terrier"), ("n02093754", 182, "Border Terrier", "Border terrier"),
                  ("n02111889", 258, "Samoyed", "Samoyed"), ("n02088364", 162, "Beagle", "beagle"),
                  ("n02086240", 155, "Shih Tzu", "Shih-Tzu"), ("n02089973", 167, "English foxhound", "English foxhound"),
                  ("n02087394", 159, "Rhodesian Ridgeback", "Rhodesian ridgeback"), ("n02115641", 273, "dingo", "dingo"),
                  ("n02099601", 207, "Golden Retriever", "golden retriever"), ("n02105641", 229, "Old English Sheepdog", "Old English sheepdog")],
    "imagenette": [("n01440764", 0, "tench", "tench"), ("n02102040", 217, "English Springer Spaniel", "English springer"),
                   ("n02979186", 482, "cassette player", "cassette player"), ("n03000684", 491, "chainsaw", "chain saw"),
                   ("n03028079", 497, "church", "church"), ("n03394916", 566, "French horn", "French horn"),
                   ("n03417042", 569, "garbage truck", "garbage truck"), ("n03425413", 571, "gas pump", "gas pump"),
                   ("n03445777", 574, "golf ball", "golf ball"), ("n03888257", 701, "parachute", "parachute")],
    "imageidc": [("n02869837", 452, "poke bonnet", "bonnet"), ("n01749939", 64, "green mamba", "green mamba"),
                 ("n02488291", 374, "langur", "langur"), ("n02107142", 236, "Dobermann", "Doberman"),
                 ("n13037406", 993, "gyromitra", "gyromitra"), ("n02091831", 176, "Saluki", "Saluki"),
                 ("n04517823", 882, "vacuum cleaner", "vacuum"), ("n04589890", 904, "window screen", "window screen"),
                 ("n03062245", 503, "cocktail shaker", "cocktail shaker"), ("n01773797", 74, "European garden spider", "garden spider")],
}


@pytest.mark.parametrize("dataset", sorted(PINNED))
def test_imagenet_subset_class_maps_are_pinned(dataset):
    cm, raw = class_map(dataset), class_map(dataset, names="raw")
    for i, (wnid, head, clip_name, raw_name) in enumerate(PINNED[dataset]):
        assert cm.wnids[i] == wnid and cm.folders[i] == wnid
        assert cm.head_idx[i] == head
        assert cm.names[i] == clip_name and cm.prompt_names[i] == clip_name
        assert raw.names[i] == raw_name
        assert cm.index(wnid) == i
    assert len(cm) == 10


def test_imagenet100_is_idc_class100():
    cm = class_map("imagenet100")
    assert len(cm) == 100 and len(set(cm.wnids)) == 100
    assert cm.wnids[:10] == class_map("imageidc").wnids           # ImageIDC = first 10 lines of class100.txt
    assert cm.wnids[10:13] == ("n01735189", "n07831146", "n07753275")
    assert cm.wnids[-3:] == ("n03424325", "n01855672", "n02090622")
    assert cm.wnids[89] == "n02123045" and cm.head_idx[89] == 281  # tabby cat


def test_imagenet1k_head_order():
    rows = imagenet1k_classes()
    assert [r["head_idx"] for r in rows] == list(range(1000))
    assert [r["wnid"] for r in rows] == sorted(r["wnid"] for r in rows)
    assert (rows[0]["wnid"], rows[0]["clip_name"]) == ("n01440764", "tench")
    assert (rows[999]["wnid"], rows[999]["clip_name"]) == ("n15075141", "toilet paper")
    cm = class_map("imagenet1k")
    assert cm.head_idx == tuple(range(1000)) and len(set(cm.names)) >= 990


def test_small_dataset_class_maps():
    c10 = class_map("cifar10")
    assert c10.names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert c10.folders == tuple("0123456789")
    c100 = class_map("cifar100")
    assert len(c100) == 100 and list(c100.names) == sorted(c100.names)
    assert (c100.names[0], c100.names[1], c100.names[48], c100.names[99]) == ("apple", "aquarium_fish", "motorcycle", "worm")
    assert c100.prompt_names[1] == "aquarium fish"
    fm = class_map("fashion_mnist")
    assert fm.names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert fm.prompts()[0] == "A photo of a t-shirt" and fm.prompts("a {classname}.")[9] == "a ankle boot."


def test_every_dataset_name_has_a_class_map():
    for d in DATASETS:
        assert len(class_map(d)) in (10, 100, 101, 1000)


def test_unknown_dataset_and_names():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*fashion_mnist"):
        class_map("imagenet")
    with pytest.raises(ConfigError, match="class_names='wordnet'"):
        class_map("imagewoof", names="wordnet")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_real("mnist")


def test_fashion_mnist_real_data():
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert tr.images.shape == (60000, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.per_class() == [6000] * 10 and te.per_class() == [1000] * 10
    assert tr.images[:, :, :2].max() == 0 and tr.images[:, :, :, -2:].max() == 0   # 2-px zero padding
    assert torch.equal(tr.images[:, 0], tr.images[:, 2])                            # grey repeated to RGB


def test_fashion_mnist_from_data_root_and_missing_root(tmp_path, monkeypatch):
    import ddrepro.data as data
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN", tmp_path / "absent")
    with pytest.raises(DataError, match="Fashion-MNIST \\(test\\) not found.*apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("test", data_root=tmp_path)
    imgs = np.zeros((3, 28, 28), np.uint8)
    hdr = bytes([0, 0, 8, 3]) + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(hdr + imgs.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([0, 1, 9])))
    ds = load_fashion_mnist("test", data_root=tmp_path)
    assert ds.labels.tolist() == [0, 1, 9] and ds.images.shape == (3, 3, 32, 32)
    # a truncated file is reported, not silently mis-shaped
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(hdr + imgs.tobytes()[:100]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: IDX header says"):
        load_fashion_mnist("test", data_root=tmp_path)


def _make_imagenet_tree(root, dataset="imagewoof", n_train=2, n_val=2, layout="imagenet"):
    base = root / ("imagewoof2" if layout == "fastai" else "")
    for split, n in (("train", n_train), ("val", n_val)):
        for w in class_map(dataset).wnids:
            for k in range(n):
                (base / split / w).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 6), (k, 0, 0)).save(base / split / w / f"img_{k}.JPEG")
    return base


def test_imagenet_folder_loader_and_record(tmp_path):
    _make_imagenet_tree(tmp_path, n_val=3, layout="fastai")
    val = load_real("imagewoof", "val", tmp_path, val_per_class=2)
    assert val.per_class() == [2] * 10 and val.source["layout"] == "fastai:imagewoof2"
    assert val.source["per_class_max"] == 2
    loaded = val.load(size=4)
    assert loaded.images.shape == (20, 3, 4, 4)
    # labels follow the ClassMap, not the alphabetical folder order
    assert Path(val.files[val.labels.tolist().index(8)]).parent.name == "n02099601"


@pytest.mark.parametrize("break_it,msg", [
    (lambda b: __import__("shutil").rmtree(b / "train" / "n02087394"), "n02087394: class folder missing \\(class 6, Rhodesian Ridgeback\\)"),
    (lambda b: [p.unlink() for p in (b / "train" / "n02115641").iterdir()], "n02115641: class folder is empty"),
    (lambda b: __import__("shutil").rmtree(b / "val"), "split folder missing"),
])
def test_imagenet_folder_bad_roots(tmp_path, break_it, msg):
    base = _make_imagenet_tree(tmp_path)
    break_it(base)
    split = "val" if "split" in msg else "train"
    with pytest.raises(DataError, match=msg):
        load_real("imagewoof", split, tmp_path)


def test_missing_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DDREPRO_DATA", raising=False)
    with pytest.raises(DataError, match="imagewoof: no data root given; pass -p data_root"):
        load_real("imagewoof", "train", None)
    with pytest.raises(DataError, match="imagenette: no train/ folder found"):
        load_real("imagenette", "train", tmp_path / "nowhere")
    with pytest.raises(DataError, match="cifar10 not found under data_root"):
        load_real("cifar10", "train", tmp_path)


def test_corrupt_and_non_rgb_images(tmp_path):
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="c.png: cannot decode image"):
        read_image(tmp_path / "c.png")
    Image.new("RGBA", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="a.png: image mode is 'RGBA', expected an RGB image"):
        read_image(tmp_path / "a.png", require_rgb=True)
    assert read_image(tmp_path / "a.png").shape == (3, 4, 4)   # real data: converted


def _distilled(tmp_path, ipc=3):
    cm = class_map("fashion_mnist")
    imgs = torch.randint(0, 255, (10 * ipc, 3, 32, 32), dtype=torch.uint8)
    save_image_set(imgs, torch.arange(10).repeat_interleave(ipc), tmp_path / "set", cm)
    return cm, imgs


def test_distilled_set_roundtrip_and_first_ipc_files(tmp_path):
    cm, imgs = _distilled(tmp_path)
    ds = load_distilled(tmp_path / "set", cm, ipc=2)
    assert ds.per_class() == [2] * 10
    assert torch.equal(ds.images[0], imgs[0]) and torch.equal(ds.images[2], imgs[3])
    with pytest.raises(DataError, match="3 images, expected exactly ipc=2"):
        load_distilled(tmp_path / "set", cm, ipc=2, exact=True)


@pytest.mark.parametrize("break_it,kw,msg", [
    (lambda d: None, {"ipc": 5}, "set/4: 3 images but ipc=5 requested"),
    (lambda d: __import__("shutil").rmtree(d / "3"), {}, "set/3: class folder missing \\(class 3, Dress\\)"),
    (lambda d: [p.unlink() for p in (d / "5").iterdir()], {}, "set/5: class folder is empty"),
    (lambda d: (d / "10").mkdir(), {}, "folders \\['10'\\] are not classes of fashion_mnist"),
    (lambda d: Image.new("L", (32, 32)).save(d / "2" / "9.png"), {}, "2/9.png: image mode is 'L'"),
    (lambda d: (d / "1" / "0.png").write_bytes(b"oops"), {}, "1/0.png: cannot decode image"),
    (lambda d: save_image(torch.zeros(3, 16, 16, dtype=torch.uint8), d / "0" / "7.png"), {}, "images have different sizes"),
])
def test_distilled_set_bad_input(tmp_path, break_it, kw, msg):
    cm, _ = _distilled(tmp_path)
    break_it(tmp_path / "set")
    if "ipc" in kw:   # the first class whose count is checked is class 0; make the message deterministic
        for c in range(10):
            if c != 4:
                save_image(torch.zeros(3, 32, 32, dtype=torch.uint8), tmp_path / "set" / str(c) / "8.png")
                save_image(torch.zeros(3, 32, 32, dtype=torch.uint8), tmp_path / "set" / str(c) / "9.png")
    with pytest.raises(DataError, match=msg):
        load_distilled(tmp_path / "set", cm, **kw)
    with pytest.raises(DataError, match="distilled-set folder not found"):
        load_distilled(tmp_path / "nope", cm)
