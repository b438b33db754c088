"""Counter-based random numbers: the int32 hashing gives exactly the bits of the int64 formula."""
from __future__ import annotations

import torch

from wsbench.zoo_builders import counter_rng as rng
from wsbench.zoo_builders import fused_dropout


def _uniform_int64(seeds: torch.Tensor, stream: int, step: int, n: int) -> torch.Tensor:
    """The defining formula, in int64 arithmetic: [B, n] uniforms."""
    k1, k2 = rng.member_keys(seeds, stream, step)
    ctr = torch.arange(n, dtype=torch.int64)
    h = rng._mix(rng._mix(k1.view(-1, 1) ^ ctr) ^ k2.view(-1, 1))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def test_int32_mixer_equals_int64_mixer_bit_for_bit():
    x = torch.randint(0, 2**32, (200_000,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    x[:5] = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1])
    assert torch.equal(rng._as_int32_bits(rng._mix(x)), rng._mix32_(rng._as_int32_bits(x).clone()))


def test_uniforms_equal_the_int64_formula():
    seeds = torch.tensor([0, 1, 7, 2**31 + 5, 2**32 - 1, 123456789])
    assert torch.equal(rng.uniform(seeds, rng.STREAM_DROPOUT, 17, (3, 5, 7)).view(len(seeds), -1),
                       _uniform_int64(seeds, rng.STREAM_DROPOUT, 17, 105))
    axis1 = rng.uniform_member_axis1(seeds, rng.STREAM_DROPOUT, 2**33 + 3, (4, 2, 3))
    ref = _uniform_int64(seeds, rng.STREAM_DROPOUT, 2**33 + 3, 24).view(len(seeds), 4, 2, 3)
    assert torch.equal(axis1, ref.transpose(0, 1))


def test_int64_fallback_for_many_counters_gives_the_same_numbers(monkeypatch):
    seeds = torch.arange(5)
    fast = rng.uniform(seeds, rng.STREAM_BATCH, 3, (50,))
    monkeypatch.setattr(rng, "INT32_COUNTERS", 10)
    assert torch.equal(rng.uniform(seeds, rng.STREAM_BATCH, 3, (50,)), fast)
    assert torch.equal(rng.uniform_member_axis1(seeds, rng.STREAM_BATCH, 3, (5, 10)),
                       fast.view(5, 5, 10).transpose(0, 1))


def _reference_multipliers(seeds: torch.Tensor, step: int, shape: tuple[int, ...], rate: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout multipliers from the int64 formula, members on axis 1."""
    u = _uniform_int64(seeds, rng.STREAM_DROPOUT, step, shape[0] * (shape[1] * shape[2])).view(len(seeds), *shape)
    r = rate.view(-1, 1, 1, 1)
    keep = torch.where(r < 1.0, 1.0 / (1.0 - r), torch.zeros_like(r))
    return ((u >= r).float() * keep).transpose(0, 1)


def test_dropout_multipliers_eager_and_compiled_equal_the_formula():
    seeds = torch.tensor([3, 2**32 - 1, 11, 123456789])
    rate = torch.tensor([0.0, 0.37, 1.0, 0.69])  # no dropout, some, all, the recipe's top
    shape = (6, 5, 7)
    ref = _reference_multipliers(seeds, 1234, shape, rate)
    eager = rng.dropout_multipliers_member_axis1(seeds, rng.STREAM_DROPOUT, 1234, shape, rate)
    assert torch.equal(eager, ref)
    assert torch.equal(ref[:, 0], torch.ones_like(ref[:, 0])) and not ref[:, 2].any()
    ones = torch.ones(shape[0], len(seeds) * shape[1], shape[2], 1)  # relu(1) * multiplier = the multiplier
    compiled = fused_dropout.activation_dropout(ones, len(seeds), seeds, rng.STREAM_DROPOUT, 1234, rate, "relu")
    assert fused_dropout.fused_available(), fused_dropout._FORWARD[False].failure  # it compiled here, not fell back
    assert torch.equal(compiled.view(shape[0], len(seeds), shape[1], shape[2]), ref)


def test_a_micro_batch_gets_the_masks_of_its_images_in_the_whole_step():
    """Rows first_row.. of a step's draw, eager and compiled, are the whole draw's rows: a step split
    into micro-batches drops the same units as the step in one pass."""
    seeds, rate = torch.tensor([3, 2**32 - 1, 11]), torch.tensor([0.2, 0.5, 0.69])
    shape = (10, 4, 3, 3)
    whole = rng.dropout_multipliers_member_axis1(seeds, rng.STREAM_DROPOUT, 77, shape, rate)
    assert torch.equal(whole, _reference_multipliers(seeds, 77, (10, 4, 9), rate).view(10, 3, 4, 3, 3))
    for first, n in ((0, 4), (4, 4), (8, 2), (7, 1)):
        part = rng.dropout_multipliers_member_axis1(seeds, rng.STREAM_DROPOUT, 77, (n,) + shape[1:], rate, first)
        assert torch.equal(part, whole[first:first + n])
        ones = torch.ones(n, len(seeds) * 4, 3, 3)
        fused = fused_dropout.activation_dropout(ones, len(seeds), seeds, rng.STREAM_DROPOUT, 77, rate, "relu", first)
        assert torch.equal(fused.view(n, len(seeds), 4, 3, 3), whole[first:first + n])
    assert fused_dropout.fused_available(), fused_dropout._FORWARD[False].failure
