"""NeRN coordinates, positional encodings, predictor sizes and the kernel layout."""
from __future__ import annotations

import math

import pytest
import torch

from wsbench.archs.resnet_cifar import resnet_cifar
from wsbench.methods.nern.embeddings import (kernel_coordinates, positional_encoding,
                                             positional_encoding_reference)
from wsbench.methods.nern.layout import ConvLayout
from wsbench.methods.nern.predictor import KernelPredictor, predictor_param_count


def test_encoding_shape_and_values_match_formula():
    coords = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.5, 1 / 3], [0.95, 0.999, 0.1]], dtype=torch.float64)
    for levels, base in ((40, 0.76), (40, 1.25), (3, 0.5)):
        enc = positional_encoding(coords, levels, base)
        assert enc.shape == (3, 6 * levels) and enc.dtype == torch.float32
        for i, row in enumerate(coords.tolist()):
            ref = sum((positional_encoding_reference(p, levels, base) for p in row), [])
            assert torch.allclose(enc[i].double(), torch.tensor(ref, dtype=torch.float64), atol=1e-6)
    # layout of one block: sin, cos interleaved per level; level 0 of coordinate 0.25 is pi/4
    enc = positional_encoding(torch.tensor([[0.25, 0.0, 0.0]]), 40, 0.76)
    assert enc.shape == (1, 240)
    assert enc[0, 0].item() == pytest.approx(math.sin(math.pi / 4), abs=1e-7)
    assert enc[0, 1].item() == pytest.approx(math.cos(math.pi / 4), abs=1e-7)
    assert enc[0, 2].item() == pytest.approx(math.sin(math.pi / 4 * 0.76), abs=1e-7)
    assert enc[0, 80].item() == 0.0 and enc[0, 81].item() == 1.0  # filter block starts at 2K


def test_local_coordinates_follow_positions():
    layout = ConvLayout(resnet_cifar(20))
    ident = [torch.arange(l.n_kernels) for l in layout.layers]
    coords = kernel_coordinates(layout, ident, "local")
    assert coords.shape == (29744, 3)
    assert (coords >= 0).all() and (coords < 1).all()
    first = layout.layers[0]  # stem 16 x 3: kernel (f=1, c=2) is row 5
    assert coords[5].tolist() == pytest.approx([0.0, 1 / 16, 2 / 3])
    l3 = layout.layers[3]
    row = l3.kernel_offset + 7 * l3.channels + 9
    assert coords[row].tolist() == pytest.approx([3 / 19, 7 / 16, 9 / 16])
    # a permutation only moves coordinates: kernel i gets slot positions[i]
    perm = [torch.randperm(l.n_kernels, generator=torch.Generator().manual_seed(1)) for l in layout.layers]
    moved = kernel_coordinates(layout, perm, "local")
    slot = perm[3][7 * l3.channels + 9].item()
    assert moved[row].tolist() == pytest.approx([3 / 19, (slot // 16) / 16, (slot % 16) / 16])
    assert first.shape == (16, 3, 3, 3)


@pytest.mark.parametrize("h", [140, 160, 180, 280, 320, 1024])
def test_predictor_size_formula(h):
    p = KernelPredictor(240, h, 9, 5)
    n = sum(t.numel() for t in p.parameters())
    assert n == 3 * h * h + 253 * h + 9 == predictor_param_count(240, h, 9, 5)


@pytest.mark.parametrize("depth,shortcut", [(20, "A"), (56, "A"), (20, "B"), (56, "B")])
def test_predictor_outputs_cover_every_kernel(depth, shortcut):
    model = resnet_cifar(depth, shortcut=shortcut)
    layout = ConvLayout(model)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert layout.keys == [f"{n}.weight" for n, _ in convs]
    assert layout.k_max == 3 and layout.out_dim == 9
    expected_kernels = {(20, "A"): 29744, (56, "A"): 94256, (20, "B"): 29744 + 2560, (56, "B"): 94256 + 2560}
    assert layout.n_kernels == expected_kernels[(depth, shortcut)]
    pred = KernelPredictor(240, 8, layout.out_dim)(torch.randn(layout.n_kernels, 240))
    assert pred.shape == (layout.n_kernels, 9)
    idx = layout.crop_index()
    flat = pred.reshape(-1) if idx is None else pred.reshape(-1)[idx]
    assert flat.numel() == layout.n_weights == sum(m.weight.numel() for _, m in convs)
    weights = layout.split(flat)
    for n, m in convs:
        assert weights[f"{n}.weight"].shape == m.weight.shape
    if shortcut == "B":  # a 1x1 kernel is the centre output, element [1, 1] = index 4
        sc = next(l for l in layout.layers if l.k == 1)
        assert sc.key.endswith("shortcut.0.weight")
        assert torch.equal(weights[sc.key].reshape(-1), pred[sc.kernel_offset:sc.kernel_offset + sc.n_kernels, 4])
        # the shortcut follows its block's conv2, as in the official code
        pos = layout.keys.index(sc.key)
        assert layout.keys[pos - 1].endswith("conv2.weight")
    else:
        assert idx is None


def test_padded_kernels_roundtrip():
    model = resnet_cifar(20, shortcut="B")
    layout = ConvLayout(model)
    sd = model.state_dict()
    table = layout.padded_kernels(sd)
    flat = table.reshape(-1)[layout.crop_index()]
    assert torch.equal(flat, layout.flat_weights(sd))
    sc = next(l for l in layout.layers if l.k == 1)
    rows = table[sc.kernel_offset:sc.kernel_offset + sc.n_kernels]
    assert (rows[:, [0, 1, 2, 3, 5, 6, 7, 8]] == 0).all()
