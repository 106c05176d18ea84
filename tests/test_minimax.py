"Tests of ddrepro.minimax: DiffFit mapping, the two memory losses (hand values), the diffusion loss, fine-tuning."
import copy
import math
from types import SimpleNamespace

import pytest
import torch

from ddrepro.diffusion import random_dit, random_vae
from ddrepro.core import RunRecord
from ddrepro.minimax import (ClassMemory, MinimaxConfig, cosine_matrix, diffusion_loss, discretized_gaussian_nll,
                             finetune_minimax, mark_difffit_trainable, mean_pairwise_distance, meta_param_name,
                             minimax_losses, minimax_neg_loss, minimax_pos_loss, normal_kl, tie_block_embedders)
from ddrepro.diffusion import ema_update
from ddrepro.diffusion import make_scheduler




# --- DiffFit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, meta", [
    ("pos_embed.proj.weight", "x_embedder.proj.weight"),
    ("proj_out_1.bias", "final_layer.adaLN_modulation.1.bias"),
    ("proj_out_2.weight", "final_layer.linear.weight"),
    ("transformer_blocks.7.attn1.to_q.weight", "blocks.7.attn.qkv.weight"),
    ("transformer_blocks.7.attn1.to_out.0.bias", "blocks.7.attn.proj.bias"),
    ("transformer_blocks.0.ff.net.0.proj.bias", "blocks.0.mlp.fc1.bias"),
    ("transformer_blocks.0.ff.net.2.weight", "blocks.0.mlp.fc2.weight"),
    ("transformer_blocks.2.norm1.linear.weight", "blocks.2.adaLN_modulation.1.weight"),
    ("transformer_blocks.2.norm1.emb.class_embedder.embedding_table.weight", "y_embedder.embedding_table.weight"),
    ("transformer_blocks.2.norm1.emb.timestep_embedder.linear_1.bias", "t_embedder.mlp.0.bias"),
])
def test_meta_param_name(name, meta):
    assert meta_param_name(name) == meta


def test_difffit_set_on_diffusers_dit():
    dit = random_dit("tiny")
    names = set(mark_difffit_trainable(dit))
    every = {n for n, _ in dit.named_parameters()}
    expected = {n for n in every if n.endswith(".bias") or "class_embedder" in n}
    assert names == expected
    assert all(p.requires_grad == (n in names) for n, p in dit.named_parameters())


def test_tie_block_embedders_for_meta_weights():
    dit = random_dit("tiny")
    for blk in dit.transformer_blocks[1:]:
        blk.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    n_before = len(list(dit.parameters()))
    assert tie_block_embedders(dit)
    assert len(list(dit.parameters())) < n_before                # shared parameters are counted once
    assert not tie_block_embedders(random_dit("tiny"))


# --- the memory losses --------------------------------------------------------------------------------

def test_cosine_matrix_hand():
    a = torch.tensor([[3.0, 4.0, 0.0]])
    b = torch.tensor([[4.0, 3.0, 0.0], [0.0, 0.0, 2.0], [-3.0, -4.0, 0.0]])
    assert torch.allclose(cosine_matrix(a, b), torch.tensor([[24 / 25, 0.0, -1.0]]))


def test_pos_neg_losses_hand():
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])             # ê_1, ê_2 of one class
    real = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    gen = torch.tensor([[1.0, 1.0, 1.0], [0.0, -1.0, 0.0]])
    # cos with real: ê_1: (1/√2, 1/√2, 0), ê_2: (0, 1, 0) → min 0 → L_pos = λ(1 − 0)
    assert math.isclose(minimax_pos_loss(x, real, 0.002).item(), 0.002, rel_tol=1e-6)
    # cos with gen: ê_1: (2/√6, −1/√2), ê_2: (1/√3, −1) → max 2/√6
    assert math.isclose(minimax_neg_loss(x, gen, 0.008).item(), 0.008 * 2 / math.sqrt(6), rel_tol=1e-6)
    # with only (0,1,0) in the real memory: cosines 1/√2 (ê_1) and 1 (ê_2) → min 1/√2
    assert math.isclose(minimax_pos_loss(x, real[1:2], 1.0).item(), 1 - 1 / math.sqrt(2), rel_tol=1e-6)


def test_minimax_losses_divide_by_classes_and_update_memory():
    mem = ClassMemory(size=4)
    x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lab = torch.tensor([2, 2, 5])
    pos, neg = minimax_losses(x0, x0 * 2, lab, mem, 1.0, 1.0)       # empty memories: no loss
    assert pos.item() == 0 and neg.item() == 0
    assert mem.get(2)[0].shape == (2, 2) and mem.get(5)[1].shape == (1, 2)
    pos, neg = minimax_losses(torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 3.0]]), torch.tensor([2]), mem, 1.0, 1.0)
    # class 2 memories: real {(2,0), (0,2)}, gen {(1,0), (0,1)}; ê = (1,0): min cos 0, max cos 1; one class
    assert math.isclose(pos.item(), 1.0, rel_tol=1e-6) and math.isclose(neg.item(), 1.0, rel_tol=1e-6)
    # two classes in the batch halve each class's contribution
    # memories now: class 2 real {(2,0), (0,2), (3,3)}, gen {(1,0), (0,1), (1,0)}; class 5 real {(2,2)}, gen {(1,1)}
    pos2, neg2 = minimax_losses(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.ones(2, 2), torch.tensor([2, 5]), mem, 1.0, 1.0)
    assert math.isclose(pos2.item(), (1.0 + 0.0) / 2, abs_tol=1e-6)     # class 2: 1 − 0, class 5: 1 − 1
    assert math.isclose(neg2.item(), (1.0 + 1.0) / 2, rel_tol=1e-6)
    for _ in range(10):
        mem.add(7, torch.randn(3, 2), torch.randn(3, 2))
    assert len(mem.real[7]) == 4 and len(mem.gen[7]) == 4           # FIFO capped at `size`


def test_minimax_losses_gradient_flows_to_x0_only():
    mem = ClassMemory()
    mem.add(0, torch.randn(5, 8), torch.randn(5, 8))
    x0 = torch.randn(3, 8, requires_grad=True)
    pos, neg = minimax_losses(x0, torch.randn(3, 8), torch.zeros(3, dtype=torch.long), mem)
    (pos + neg).backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    assert all(not t.requires_grad for t in mem.gen[0])


# --- diffusion loss -----------------------------------------------------------------------------------

class Fixed(torch.nn.Module):
    def __init__(self, out):
        super().__init__(); self.out = out
    def forward(self, x, timestep, class_labels):
        return SimpleNamespace(sample=self.out)


def test_diffusion_loss_mse_and_x0():
    ac = make_scheduler("ddpm").alphas_cumprod
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    t = torch.tensor([0, 300, 999])
    r = diffusion_loss(Fixed(eps - 1.0), z0, torch.zeros(3, dtype=torch.long), t, eps, ac)
    assert torch.allclose(r["mse"], torch.ones(3))
    r = diffusion_loss(Fixed(eps.clone()), z0, torch.zeros(3, dtype=torch.long), t, eps, ac)
    assert torch.allclose(r["x0"], z0, atol=2e-3) and "vb" not in r


def test_vb_term_zero_at_true_posterior_and_frozen_mean():
    ac = make_scheduler("ddpm").alphas_cumprod
    g = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor([5, 700])
    out = torch.cat([eps, -torch.ones_like(eps)], 1).requires_grad_(True)     # v = −1 → posterior variance
    r = diffusion_loss(Fixed(out), z0, torch.zeros(2, dtype=torch.long), t, eps, ac)
    assert torch.allclose(r["vb"], torch.zeros(2), atol=1e-4)
    r["vb"].sum().backward()
    assert out.grad[:, :4].abs().max() == 0                       # the VB term does not train the mean (ADM)
    # KL formula vs torch.distributions
    m1, lv1, m2, lv2 = torch.tensor([0.1, -2.0]), torch.tensor([0.0, -3.0]), torch.tensor([0.5, 1.0]), torch.tensor([1.0, -1.0])
    N = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(N(m1, (lv1 / 2).exp()), N(m2, (lv2 / 2).exp()))
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), ref, atol=1e-6)
    # a narrow decoder centred on x gives probability ≈ 1 for the bin of x
    assert discretized_gaussian_nll(torch.tensor([0.2]), torch.tensor([0.2]), torch.tensor([-8.0])).item() < 1e-3


# --- fine-tuning ----------------------------------------------------------------------------------------

def _data(n=24, k=3):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, 16, 16, generator=g), torch.arange(k).repeat(n // k)


def test_finetune_moves_only_difffit_params_and_writes_record(tmp_path):
    imgs, labs = _data()
    dit = random_dit("tiny", num_embeds_ada_norm=3, out_channels=8)
    start = copy.deepcopy(dit).state_dict()
    ema, hist = finetune_minimax(dit, random_vae(), imgs, labs, MinimaxConfig(epochs=2, lr=1e-2), out_dir=tmp_path,
                                 device="cpu", log_every=0)
    end = dit.state_dict()
    moved = {k for k in start if not torch.equal(start[k], end[k])}
    assert moved == {k for k in start if k.endswith(".bias") or "class_embedder" in k}
    assert len(hist["loss"]) == 6 and hist["pos"][0] == 0 and hist["pos"][-1] > 0
    assert not ema.training and all(not p.requires_grad for p in ema.parameters())
    rec = RunRecord.load(tmp_path)
    assert rec.results["minimax"]["steps"] == 6 and (tmp_path / "ema" / "diffusion_pytorch_model.safetensors").exists()
    assert rec.assets["minimax_ema"]["sha256"]


def test_memory_losses_change_the_update():
    imgs, labs = _data()
    runs = []
    for condense in (False, True):
        dit = random_dit("tiny", num_embeds_ada_norm=3)
        finetune_minimax(dit, random_vae(), imgs, labs, MinimaxConfig(epochs=2, lr=1e-2, condense=condense, seed=4),
                         device="cpu", log_every=0)
        runs.append(dit.state_dict()["proj_out_2.bias"].clone())
    assert not torch.allclose(runs[0], runs[1])


def test_ema_update_and_auto_decay():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    w0 = a.weight.detach().clone()
    b0 = a.bias.detach().clone()
    b.bias.requires_grad_(False)                    # frozen parameters are left as they are
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * w0 + 0.1 * b.weight) and torch.equal(a.bias, b0)
    cfg = MinimaxConfig()
    assert math.isclose(cfg.decay(12000), 0.9999) and math.isclose(cfg.decay(600) ** 600, 0.9999 ** 12000, rel_tol=1e-9)
    assert MinimaxConfig(ema_decay=0.5).decay(10) == 0.5
    assert MinimaxConfig(max_steps=100).steps(10_000) == 100


def test_mean_pairwise_distance():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    lab = torch.tensor([0, 0, 0, 1, 1])
    # class 0: pairs (1,2): 1, (1,3): 2, (2,3): 1 → mean 4/3; class 1: identical → 0
    assert math.isclose(mean_pairwise_distance(e, lab), (4 / 3 + 0) / 2, rel_tol=1e-6)


def test_diffusion_loss_mse_equals_zoo_dit_loss():
    "The ε-MSE part is the zoo's DiT training loss for the same t and ε (zoo.noisy_latents draws t, then ε)."
    from ddrepro import zoo
    model = random_dit("tiny")
    g = torch.Generator().manual_seed(2)
    lat, labels = torch.randn(6, 4, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 4, 9])
    sched = make_scheduler("ddpm")
    with torch.no_grad():
        ref = zoo.dit_loss(model, lat, labels, sched, p_uncond=0, generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        t = torch.randint(0, 1000, (6,), generator=g)
        eps = torch.randn(lat.shape, generator=g)
        mine = diffusion_loss(model, lat, labels, t, eps, sched.alphas_cumprod)["mse"].mean()
    assert math.isclose(mine.item(), ref.item(), rel_tol=1e-4)


def test_command_line_fine_tune(tmp_path):
    from ddrepro.minimax import main
    random_dit("tiny").save_pretrained(tmp_path / "dit"); random_vae().save_pretrained(tmp_path / "vae")
    out = main(["--dataset", "fashion_mnist", "--per-class", "2", "--size", "16", "--max-steps", "2", "--batch-size", "4",
                "--dit", str(tmp_path / "dit"), "--vae", str(tmp_path / "vae"), "--device", "cpu", "--out", str(tmp_path / "mm")])
    rec = RunRecord.load(out)
    assert rec.status == "complete" and rec.results["minimax"]["steps"] == 2
    assert {"dit", "vae", "minimax_ema"} <= set(rec.assets) and rec.params["per_class"] == 2
