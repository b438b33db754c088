"""scripts/encoder_parity.py (dwsnet_parity.py is its DWSNet entry) and scripts/official_dwsnets.py: the parts
that need no official checkout."""
from __future__ import annotations

import pytest
import torch
from script_loader import load_script


def test_official_inputs_put_our_siren_tensors_in_the_official_layout():
    off = load_script("official_dwsnets")
    from wsbench.archs import spec_for_arch

    spec = spec_for_arch("siren")
    tensors = {p.key: torch.randn(3, *p.shape) for p in spec.params}
    weights, biases = off.official_inputs(tensors)
    assert [tuple(w.shape) for w in weights] == [(3, a, b, 1) for a, b in off.SIREN_SHAPES]
    assert [tuple(b.shape) for b in biases] == [(3, b, 1) for _, b in off.SIREN_SHAPES]
    # entry [n, i, j] of the official weight is input i -> output j: our [n, j, i]
    assert torch.equal(weights[1][2, 5, 7, 0], tensors["layers.1.weight"][2, 7, 5])
    assert torch.equal(biases[0][:, :, 0], tensors["layers.0.bias"])


def test_batch_order_runs_shuffled_epochs_of_the_same_batches_for_both_models():
    par = load_script("encoder_parity")
    order = par.batch_order(130, steps=7, seed=3)
    assert len(order) == 7 and all(torch.equal(a, b) for a, b in zip(order, par.batch_order(130, steps=7, seed=3)))
    first_epoch = torch.cat(order[:2])  # 130 = 64 + 64 + 2: three batches an epoch
    assert [len(b) for b in order[:3]] == [64, 64, 2]
    assert sorted(torch.cat(order[:3]).tolist()) == list(range(130)) and len(set(first_epoch.tolist())) == 128
    assert all(len(b) > 1 for b in par.batch_order(129, steps=10, seed=0))  # a lone last network is dropped


def test_loss_windows_and_report():
    par = load_script("encoder_parity")
    assert par.windows([1.0, 3.0, 5.0, 7.0, 9.0], 2) == [2.0, 6.0, 9.0]
    runs = [{"method": m, "seed": 0, "params": 10, "init_logit_std": 0.5, "windows": [2.0, 1.0],
             "seconds_per_step": 0.1, "test": {"accuracy": 0.5, "loss": 1.5}} for m in ("official", "wsbench")]
    md = par.markdown({"method": "dwsnet", "repo": "o/r", "batch": 64, "zoo": "z", "command": "c", "date": "d", "torch": "t", "device": "cpu", "n_train": 4,
                       "n_test": 2, "steps": 4, "window": 2, "setup": "s.", "runs": runs, "loss_ratio": [1.0, 1.0],
                       "test_accuracy": {"official": 0.5, "wsbench": 0.5}})
    assert "| loss 1-2 | loss 3-4 |" in md and "| wsbench | 0 | 10 | 0.500 | 2.000 | 1.000 | 50.0% |" in md
    assert "loss window 1: 1.00, loss window 2: 1.00; test accuracy 50.0% vs 50.0%" in md


def test_without_the_official_checkout_the_script_says_so(monkeypatch):
    par = load_script("encoder_parity")
    monkeypatch.delenv("WSBENCH_OFFICIAL_DWSNETS", raising=False)
    with pytest.raises(SystemExit, match="WSBENCH_OFFICIAL_DWSNETS"):
        par.adapters("dwsnet", None)
    with pytest.raises(SystemExit, match="no original model known for 'mlp'"):
        par.official_for("mlp")


def test_entry_normaliser_uses_the_unbiased_std_of_the_training_tensors():
    om = load_script("official_model")
    train = {"w": torch.tensor([[1.0, 0.0], [3.0, 0.0]])}
    out = om.entry_normaliser(train)({"w": torch.tensor([[2.0 + 2 ** 0.5, 5.0]])})
    assert torch.allclose(out["w"], torch.tensor([[1.0, 5e8]]))  # std sqrt(2); a constant entry is clamped at 1e-8
