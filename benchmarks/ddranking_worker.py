"""One DD-Ranking hard-label evaluation of one image set; runs in the DD-Ranking venv (numpy < 2), never imports ddrepro.

    .venv-ddranking/bin/python benchmarks/ddranking_worker.py SET.pt TEST.pt [--seed 0] [--epochs 1000]
        [--threads 1] [--lr 0.01] [--batch-size 256] [--step-size EPOCHS//2] [--test-interval 10]
        [--norm imagenet|fmnist]

SET.pt / TEST.pt are dicts written by benchmarks/ddranking_crosscheck.py: `images` uint8 (N,3,32,32), `labels` int64 (N,)
in 0..9, `name` str. The last stdout line is `DDRANKING_RESULT {json}` with best, final (accuracies in [0,1]),
seconds and the per-evaluation curve; DD-Ranking's own chatter (MetricLogger lines, "Test Acc@1", tqdm) goes to stderr,
compact progress lines to stdout.

How DD-Ranking is driven (ddranking 0.2.0). Its evaluator classes cannot take a custom dataset: their `__init__`
calls `ddranking.utils.get_dataset`, which only knows CIFAR10/100, TinyImageNet, the ImageNet subsets and ImageNet1K
(it downloads CIFAR or reads ImageFolders, and leaves its variables unbound for any other name), and
`GeneralEvaluator` has bugs that make its hard-label path unusable in 0.2.0 (it reads an undefined `use_torchvision`,
an unset `self.test_interval`, loads teacher checkpoints even for hard labels and never fills `accs`). So the worker
builds a `ddranking.metrics.LabelRobustScoreHard` *without* its `__init__` (`object.__new__`), sets the attributes
that its `__init__` would set from the config below, and calls its own per-run evaluation
`LabelRobustScoreHard._compute_hard_label_metrics_helper(image_tensor, None, hard_labels, lr, mode='syn',
hyper_param_search=False)`, i.e. DD-Ranking's unmodified training loop `_compute_hard_label_metrics`:
`ddranking.utils.build_model('ConvNet-3', ...)`, `get_optimizer('sgd', ...)`, `get_lr_scheduler('step', ...)`,
`train_one_epoch(..., aug_func=DSA(aug_params))` every epoch and `validate(model, test_loader_syn)` every
`test_interval` epochs, returning the best of those test accuracies. Two read-only hooks are added around it:
`ddranking.metrics.hard_label.validate` is wrapped to record every accuracy it returns (the last one is the FINAL
accuracy when `epochs % test_interval == 0`), and `build_model` is wrapped to keep a handle on the student so that,
when the last epoch is not an evaluation epoch, the final model is evaluated once more with the same `validate`
(that extra point is not counted in `best`, which stays exactly DD-Ranking's number).

Protocol (DD-Ranking's repo configs for the hard-label DC/DSA/DM CIFAR-10 runs, `DM/CIFAR10/IPC10.yaml`,
`DSA/…`, and `configs/Demo_LRS_Hard_Label.yaml`): ConvNet-3 (`build_model('ConvNet-3')`: width 128, instance norm
(GroupNorm with one group per channel), ReLU, 2×2 average pooling, linear head), SGD momentum 0.9, weight decay 5e-4,
lr 0.01 (the configs' `default_lr`; `compute_metrics(syn_lr=None)` would instead search lr in
{0.001, 0.005, 0.01, 0.05, 0.1} and keep the best on the test set — not done here), StepLR γ=0.1 at
`step_size` = epochs // 2 (the demo config's 500 of 1000; the method configs omit it, which makes 0.2.0's
`get_lr_scheduler('step')` assert), 1000 epochs, batch size 256 (syn_batch_size), test batch 256, DSA
`ddranking.aug.DSA` with flip 0.5, rotate 15, saturation 2, brightness 1, contrast 0.5, scale 1.2, crop 0.125,
cutout 0.5, aug_mode 'S' (one random op group per batch, as DC/DSA/DM), seed -1 (global RNG), applied to
normalised images; evaluation every 10 epochs (`self.test_interval = 10` in its `__init__`). Seeding:
`ddranking.utils.set_seed(seed)` (torch, numpy, random) before the model is built. `num_workers=0`; `--device`
cpu (default) or cuda.

Normalisation: DD-Ranking normalises every input (synthetic tensors are used as given; its test sets go through
ToTensor + Normalize) with CIFAR statistics for CIFAR and ImageNet mean/std for every other dataset it knows
(TinyImageNet, ImageNet subsets, ImageNet1K — the ImageFolder path a custom data set would take). Default here:
`--norm imagenet` (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) for both the set and the test set;
`--norm fmnist` uses the DC/DSA/DM FashionMNIST constants (0.2861, 0.3530) instead.
"""
import argparse
import contextlib
import json
import sys
import time
from importlib.metadata import version

NORMS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
         "fmnist": ((0.2861,) * 3, (0.3530,) * 3)}
DSA_PARAMS = dict(flip=0.5, rotate=15.0, saturation=2.0, brightness=1.0, contrast=0.5, scale=1.2, crop=0.125, cutout=0.5)
RESULT_TAG = "DDRANKING_RESULT"


def normalise(images, norm):
    import torch
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in NORMS[norm])
    return (images.float() / 255.0 - mean) / std


def load_pt(path):
    import torch
    d = torch.load(path, map_location="cpu", weights_only=True)
    imgs, labels = d["images"], d["labels"]
    if imgs.dtype != torch.uint8 or imgs.ndim != 4 or imgs.shape[1] != 3:
        raise SystemExit(f"{path}: images must be uint8 N×3×H×W, got {imgs.dtype} {tuple(imgs.shape)}")
    if labels.dtype != torch.long or labels.shape != (len(imgs),):
        raise SystemExit(f"{path}: labels must be int64 ({len(imgs)},), got {labels.dtype} {tuple(labels.shape)}")
    return imgs, labels, d.get("name", str(path))


def evaluate(set_path, test_path, seed=0, epochs=1000, lr=0.01, batch_size=256, step_size=None, test_interval=10,
             norm="imagenet", test_batch_size=256, device="cpu", log=None):
    "Train DD-Ranking's ConvNet-3 on the set, test on the test set; returns dict(best, final, seconds, curve, …)."
    import torch
    from torch.utils.data import DataLoader, RandomSampler
    import ddranking.metrics.hard_label as hl
    from ddranking.aug import DSA
    from ddranking.metrics import LabelRobustScoreHard
    from ddranking.utils import TensorDataset, set_seed

    out = sys.stdout
    log = log or (lambda s: print(s, file=out, flush=True))
    x, y, name = load_pt(set_path)
    tx, ty, _ = load_pt(test_path)
    num_classes = int(max(int(y.max()), int(ty.max())) + 1)
    im_size = tuple(x.shape[2:])
    step_size = step_size or max(1, epochs // 2)

    ev = object.__new__(LabelRobustScoreHard)          # the attributes LabelRobustScoreHard.__init__ would set
    ev.use_dist, ev.rank, ev.gpu, ev.world_size = False, 0, 0, 1
    ev.device = device
    ev.dataset = "FashionMNIST(custom)"
    ev.model_name, ev.use_torchvision = "ConvNet-3", False
    ev.num_classes, ev.im_size, ev.ipc = num_classes, im_size, len(y) // num_classes
    ev.class_map = {c: c for c in range(num_classes)}
    ev.custom_train_trans = None
    ev.optimizer, ev.lr_scheduler, ev.weight_decay, ev.momentum, ev.step_size = "sgd", "step", 0.0005, 0.9, step_size
    ev.num_epochs, ev.test_interval = epochs, test_interval
    ev.syn_batch_size, ev.real_batch_size, ev.num_workers = batch_size, test_batch_size, 0
    ev.aug_func = DSA(dict(DSA_PARAMS))
    test_ds = TensorDataset(normalise(tx, norm), ty)
    ev.test_loader_syn = DataLoader(test_ds, batch_size=test_batch_size, num_workers=0, sampler=RandomSampler(test_ds))

    curve, models = [], []
    t0 = time.perf_counter()
    orig_validate, orig_build = hl.validate, hl.build_model

    def validate(*a, **k):
        acc = orig_validate(*a, **k)
        curve.append(((len(curve) + 1) * test_interval, float(acc) / 100.0))   # called every test_interval epochs
        log(f"[ddranking] {name} seed {seed}: epoch {curve[-1][0]}/{epochs} test acc {curve[-1][1]:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
        return acc

    def build_model(*a, **k):
        m = orig_build(*a, **k); models.append(m); return m

    hl.validate, hl.build_model = validate, build_model
    try:
        set_seed(seed)
        with contextlib.redirect_stdout(sys.stderr):    # DD-Ranking's MetricLogger / validate prints
            best, _ = ev._compute_hard_label_metrics_helper(image_tensor=normalise(x, norm), image_path=None,
                                                            hard_labels=y, lr=lr, mode="syn", hyper_param_search=False)
            if curve and curve[-1][0] == epochs:
                final = curve[-1][1]
            else:                                        # last epoch was not an evaluation epoch: one more test pass
                final = float(orig_validate(model=models[-1], loader=ev.test_loader_syn, class_map=ev.class_map,
                                            device=device)) / 100.0
    finally:
        hl.validate, hl.build_model = orig_validate, orig_build
    return dict(name=name, seed=seed, best=float(best) / 100.0, final=final, seconds=time.perf_counter() - t0,
                epochs=epochs, lr=lr, batch_size=batch_size, step_size=step_size, test_interval=test_interval,
                norm=norm, device=device, n_train=len(y), n_test=len(ty), curve=curve, ddranking_version=version("ddranking"),
                torch=torch.__version__, threads=torch.get_num_threads())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set_pt"); ap.add_argument("test_pt")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1); ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=256); ap.add_argument("--step-size", type=int, default=None)
    ap.add_argument("--test-interval", type=int, default=10); ap.add_argument("--norm", choices=sorted(NORMS), default="imagenet")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    out = sys.stdout                                   # progress goes here even while DD-Ranking's prints are redirected
    r = evaluate(a.set_pt, a.test_pt, seed=a.seed, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                 step_size=a.step_size, test_interval=a.test_interval, norm=a.norm, device=a.device,
                 log=lambda s: print(s, file=out, flush=True))
    print(RESULT_TAG, json.dumps(r), file=out, flush=True)
    return r


if __name__ == "__main__":
    main()
