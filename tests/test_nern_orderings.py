"""NeRN smoothness orderings: the vectorised greedy walk against its plain-Python definition."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from wsbench.methods.nern.orderings import (apply_ordering, compute_positions, greedy_path_reference, greedy_paths,
                                            greedy_walk, greedy_walk_torch, inverse_permutation, ordering_index_bits,
                                            similarity_stack, undo_ordering)

from data_paths import PRETRAINED_R20 as PRETRAINED  # noqa: E402


def _cos(a: list[float], b: list[float]) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / (max(na, 1e-12) * max(nb, 1e-12))


def _naive_path(items: list[list[float]], sim) -> list[int]:
    return greedy_path_reference([[sim(a, b) for b in items] for a in items])


def test_walk_equals_reference_on_the_same_matrices():
    g = torch.Generator().manual_seed(0)
    items = torch.randn(6, 50, 9, generator=g)
    items[2, 10] = items[2, 3]  # duplicates: exact ties go to the lowest index
    items[2, 11] = items[2, 3]
    items[4, :20] = 0  # zero kernels: similarity 0 with everything
    sim = similarity_stack(items, "cosine")
    for walk in (greedy_walk, greedy_walk_torch):  # NumPy loop on CPU, torch loop on other devices
        paths = walk(sim)
        for b in range(6):
            assert paths[b].tolist() == greedy_path_reference(sim[b].tolist())
        for rule in ("l2", "dot"):
            s = similarity_stack(items[:, :, :1] if rule == "l2" else items, rule)
            assert [p.tolist() for p in walk(s)] == [greedy_path_reference(m.tolist()) for m in s]


def test_ties_go_to_lowest_index():
    sim = torch.zeros(1, 5, 5)
    assert greedy_walk(sim)[0].tolist() == [0, 1, 2, 3, 4] == greedy_path_reference(sim[0].tolist())
    assert greedy_walk_torch(sim)[0].tolist() == [0, 1, 2, 3, 4]


def test_grouped_paths_match_naive_cosine_in_float64():
    g = torch.Generator().manual_seed(1)
    sets = [torch.randn(n, 9, generator=g, dtype=torch.float64) for n in (1, 2, 7, 30, 30, 64, 7)]
    paths = greedy_paths(sets, "cosine", memory_budget=30 * 30 * 8)  # forces chunking of the 30s
    for s, p in zip(sets, paths):
        assert p.tolist() == _naive_path(s.tolist(), _cos)
        assert sorted(p.tolist()) == list(range(len(s)))


def _layers(n: int = 4) -> list[torch.Tensor]:
    sd = load_file(PRETRAINED)
    keys = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer2.1.conv2.weight"][:n]
    return [sd[k].double() for k in keys]


def test_crossfilter_on_pretrained_kernels_matches_naive():
    ws = _layers(3)  # up to 512 kernels: the plain-Python walk is quadratic
    pos = compute_positions(ws, "crossfilter")
    for w, p in zip(ws, pos):
        items = w.reshape(w.shape[0] * w.shape[1], -1).tolist()
        path = _naive_path(items, _cos)
        assert p.tolist() == inverse_permutation(torch.tensor(path)).tolist()


def _naive_infilter(w: torch.Tensor, one_by_one: str) -> list[int]:
    f, c = w.shape[:2]
    kern = w.reshape(f, c, -1).tolist()
    scalar = w.shape[2] == 1
    within_sim = (lambda a, b: -(a[0] - b[0]) ** 2) if scalar else _cos
    pis = [_naive_path(kern[i], within_sim) for i in range(f)]
    if scalar and one_by_one == "l2":
        rows = [[kern[i][pis[i][t]][0] for t in range(c)] for i in range(f)]
        sim = [[-sum((x - y) ** 2 for x, y in zip(a, b)) for b in rows] for a in rows]
    else:
        sim = [[sum(_cos(kern[i][pis[i][t]], kern[j][pis[j][t]]) for t in range(c)) for j in range(f)]
               for i in range(f)]
    sigma = greedy_path_reference(sim)
    inv_sigma = {v: k for k, v in enumerate(sigma)}
    out = [0] * (f * c)
    for fi in range(f):
        inv_pi = {v: k for k, v in enumerate(pis[fi])}
        for ci in range(c):
            out[fi * c + ci] = inv_sigma[fi] * c + inv_pi[ci]
    return out


@pytest.mark.parametrize("one_by_one", ["l2", "cosine"])
def test_infilter_matches_naive(one_by_one):
    g = torch.Generator().manual_seed(2)
    ws = _layers(3) + [torch.randn(12, 8, 1, 1, generator=g, dtype=torch.float64)]
    pos = compute_positions(ws, "infilter", one_by_one)
    for w, p in zip(ws, pos):
        assert p.tolist() == _naive_infilter(w, one_by_one)


def test_one_by_one_rules_differ_as_documented():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 5, 1, 1, generator=g, dtype=torch.float64)
    l2 = compute_positions([w], "crossfilter", "l2")[0]
    cos = compute_positions([w], "crossfilter", "cosine")[0]
    vals = w.reshape(-1).tolist()
    assert l2.tolist() == inverse_permutation(torch.tensor(
        _naive_path([[v] for v in vals], lambda a, b: -(a[0] - b[0]) ** 2))).tolist()
    assert cos.tolist() == inverse_permutation(torch.tensor(_naive_path([[v] for v in vals], _cos))).tolist()
    # cosine of scalars is only a sign: the official rule visits all kernels of one sign first
    path = inverse_permutation(cos)
    signs = [vals[i] > 0 for i in path.tolist()]
    assert sum(a != b for a, b in zip(signs, signs[1:])) == 1


@pytest.mark.parametrize("mode", ["none", "crossfilter", "infilter"])
def test_apply_and_undo_are_exact_inverses(mode):
    ws = [w.float() for w in _layers()]
    for w, p in zip(ws, compute_positions(ws, mode)):
        assert sorted(p.tolist()) == list(range(w.shape[0] * w.shape[1]))
        smooth = apply_ordering(w, p)
        assert torch.equal(undo_ordering(smooth, p), w)
        if mode == "none":
            assert torch.equal(smooth, w)
        # slot positions[i] holds kernel i
        i = 5
        f, c = divmod(p[i].item(), w.shape[1])
        assert torch.equal(smooth[f, c], w.reshape(-1, *w.shape[2:])[i])


def test_orderings_make_neighbours_more_similar():
    w = _layers()[3].float()
    def neighbour_cos(p):
        k = torch.nn.functional.normalize(apply_ordering(w, p).reshape(-1, 9), dim=1)
        return (k[1:] * k[:-1]).sum(1).mean().item()
    none, cross = (compute_positions([w], m)[0] for m in ("none", "crossfilter"))
    assert neighbour_cos(cross) > neighbour_cos(none) + 0.3


def test_index_bits():
    shapes = [(16, 3, 3, 3), (64, 64, 3, 3)]
    assert ordering_index_bits(shapes, "none") == 0
    assert ordering_index_bits(shapes, "crossfilter") == 48 * 6 + 4096 * 12
    assert ordering_index_bits(shapes, "infilter") == 48 * 2 + 16 * 4 + 4096 * 6 + 64 * 6
