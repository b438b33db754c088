"""Training many small CNNs at once, each with its own hyper-parameters.

B networks of the `small_cnn` architecture (stride-2 3x3 convs, GAP, [hidden linear,] linear) share one flat
parameter tensor [B, D]. Convolutions run as one grouped convolution (groups=B; or im2col +
batched matmul, `conv_impl="unfold"`), so B networks cost one kernel launch per layer. Each
member has its own learning rate, weight decay, optimizer (sgd / momentum / adam with
torch.optim's semantics, rmsprop with Keras's: the Small CNN Zoo's), dropout rate, weight
initialisation (scheme and scale), training-data subset and seed; members of one batch share the
activation function (callers group members by activation). `TrainingRules` hold what a recipe
fixes for all members: conv padding, which parameters weight decay applies to, optimizer
constants, and whether an epoch is one pass over the member's own subset. All randomness is counter-based (counter_rng), so a
member's training does not depend on its batch-mates. A member whose loss or parameters stop
being finite is frozen at its last finite parameters and reported as diverged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import counter_rng as rng
from . import fused_dropout

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu, "sigmoid": torch.sigmoid,
}
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
MOMENTUM, ADAM_BETAS, ADAM_EPS = 0.9, (0.9, 0.999), 1e-8
RMSPROP_RHO, KERAS_EPS = 0.9, 1e-7  # tf.keras RMSprop / Adam defaults (the Small CNN Zoo's optimizers)
W_INITS = ("scaled_he", "he_normal", "glorot_normal", "orthogonal", "normal", "truncated_normal")
TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to +-2 (Keras VarianceScaling's correction)


@dataclass(frozen=True)
class TrainingRules:
    """What a recipe fixes for every member (defaults: the suite's v1 small-CNN zoos)."""
    weight_decay_on: str = "all"  # "all" parameters, or "kernels" only (Keras kernel_regularizer)
    adam_eps: float = ADAM_EPS
    epoch: str = "dataset"  # "dataset": ceil(N/bs) steps, minibatches drawn with replacement from the subset;
    # "subset": one pass over the member's own subset without replacement, floor(n_sub/bs) steps (Keras)


@dataclass(frozen=True)
class CnnArch:
    """The `small_cnn` kwargs that fix the parameter shapes."""
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 16
    n_conv: int = 3
    padding: int = 1  # 0 = the published Small CNN Zoo ('valid')
    fc_hidden: int = 0  # > 0: a hidden linear layer before the classifier (SNE's Arch2)

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """State-dict keys and shapes, in the order of `small_cnn`'s state_dict."""
        out, c_in = [], self.in_channels
        for i in range(self.n_conv):
            out += [(f"convs.{i}.weight", (self.channels, c_in, 3, 3)), (f"convs.{i}.bias", (self.channels,))]
            c_in = self.channels
        if self.fc_hidden:
            out += [("fc_hidden.weight", (self.fc_hidden, self.channels)), ("fc_hidden.bias", (self.fc_hidden,))]
        width = self.fc_hidden or self.channels
        return out + [("fc.weight", (self.num_classes, width)), ("fc.bias", (self.num_classes,))]

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes())


@dataclass
class MemberHParams:
    """Per-member hyper-parameters, one entry per member."""
    seed: Sequence[int]
    optimizer: Sequence[str]
    lr: Sequence[float]
    weight_decay: Sequence[float]
    dropout: Sequence[float]
    init_scale: Sequence[float]
    train_fraction: Sequence[float]
    w_init: Sequence[str] | None = None  # None: scaled_he for all (see init_params)
    init_std: Sequence[float] | None = None  # for the normal / truncated_normal schemes

    def __len__(self) -> int:
        return len(self.seed)


@dataclass
class BatchResult:
    """Snapshots at the checkpoint epochs: flat parameters [B, D] and metrics [B] (CPU)."""
    snapshots: dict[int, Tensor]
    metrics: dict[int, dict[str, Tensor]]
    diverged_step: Tensor  # [B] int64, -1 = never diverged
    steps_per_epoch: int
    train_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def unflatten(arch: CnnArch, flat: Tensor) -> dict[str, Tensor]:
    """Views [B, *shape] per state-dict key of a flat [B, D] tensor."""
    out, i = {}, 0
    for key, shape in arch.shapes():
        n = math.prod(shape)
        out[key] = flat[:, i:i + n].view(flat.shape[0], *shape)
        i += n
    return out


def init_params(arch: CnnArch, seeds: Tensor, init_scale: Tensor, w_init: Sequence[str] | None = None,
                init_std: Tensor | None = None) -> Tensor:
    """Zero biases and weights by each member's scheme (flat [B, D]):
    - scaled_he (default): normal, std init_scale * sqrt(2 / fan_in);
    - he_normal, glorot_normal: Keras's, normals truncated to +-2 std, std sqrt(2 / fan_in) resp.
      sqrt(2 / (fan_in + fan_out)) after the truncation;
    - orthogonal: Keras's (QR of a normal matrix in the kernel's (fan_in, out) layout, signs fixed);
    - normal, truncated_normal: std init_std (Keras RandomNormal / TruncatedNormal)."""
    nb, dev = len(seeds), seeds.device
    schemes = list(w_init) if w_init is not None else ["scaled_he"] * nb
    bad = sorted(set(schemes) - set(W_INITS))
    if bad:
        raise ValueError(f"unknown weight init(s) {bad}; known: {W_INITS}")
    std = init_std.view(-1, 1) if init_std is not None else torch.ones(nb, 1, device=dev)
    parts = []
    for j, (key, shape) in enumerate(arch.shapes()):
        n = math.prod(shape)
        if key.endswith("bias"):
            parts.append(torch.zeros(nb, n, device=dev))
            continue
        fan_in, fan_out = math.prod(shape[1:]), shape[0] * math.prod(shape[2:])
        z = rng.normal(seeds, rng.STREAM_INIT, j, (n,))
        out = z * (init_scale.view(-1, 1) * math.sqrt(2.0 / fan_in))  # scaled_he: the v1 zoos' draws, unchanged
        if set(schemes) != {"scaled_he"}:
            lo = 0.5 * math.erfc(2.0 / math.sqrt(2.0))  # P(z < -2)
            u = rng.uniform(seeds, rng.STREAM_INIT, 1000 + j, (n,)).double()
            t = torch.special.ndtri(lo + (u + 0.5 / (1 << 24)) * (1.0 - 2.0 * lo)).float()  # unit normal within +-2
            candidates = {"he_normal": t * (math.sqrt(2.0 / fan_in) / TRUNCATED_STD),
                          "glorot_normal": t * (math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD),
                          "normal": z * std, "truncated_normal": t * std,
                          "orthogonal": _orthogonal(z, shape)}
            for name, value in candidates.items():
                chosen = torch.tensor([s == name for s in schemes], device=dev).view(-1, 1)
                out = torch.where(chosen, value, out)
        parts.append(out)
    return torch.cat(parts, dim=1)


def _orthogonal(z: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Keras's Orthogonal(gain=1) of normals z [B, n] for a torch weight of `shape` (out, in, *k):
    built in Keras's kernel layout (*k, in, out) flattened to (fan_in, out), returned flat in torch's."""
    nb, out = z.shape[0], shape[0]
    rows = math.prod(shape[1:])  # in * k * k
    big, small = max(rows, out), min(rows, out)
    q, r = torch.linalg.qr(z.view(nb, big, small))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(1)
    keras = q if rows >= out else q.transpose(1, 2)  # [B, rows, out], rows in Keras's (*k, in) order
    k_shape = tuple(shape[2:]) + (shape[1], out)  # (*k, in, out)
    w = keras.reshape(nb, *k_shape).permute(0, len(k_shape), len(k_shape) - 1, *range(1, len(k_shape) - 1))
    return w.reshape(nb, -1)


# CPU activations in channels-last order: mkldnn's grouped convolutions with 1-32 channels a group run 1.4-3.8x
# faster on them than on NCHW (256 members, 32 images, 2 threads: 8 -> 8 channels at 14x14, forward and backward,
# 59 vs 170 ms; training steps 0.82-0.90x the time); the results are the same to float rounding. Only inputs of
# at least CHANNELS_LAST_MIN_ELEMENTS values (a zoo build's; its compiled dropout then runs on static shapes)
CPU_CHANNELS_LAST, CHANNELS_LAST_MIN_ELEMENTS = True, 1 << 20


def uses_channels_last(device_type: str, input_values: int) -> bool:
    """Whether `forward` runs a first-layer input of this many values on this device in channels-last order."""
    return CPU_CHANNELS_LAST and device_type == "cpu" and input_values >= CHANNELS_LAST_MIN_ELEMENTS


def _conv(h: Tensor, w: Tensor, b: Tensor, groups: int, impl: str, padding: int) -> Tensor:
    """h [N, B*Ci, H, W], w [B, Co, Ci, 3, 3], b [B, Co] -> [N, B*Co, H', W'] (stride 2)."""
    nb, co, ci = w.shape[:3]
    if impl == "unfold" and groups > 1:
        n, _, hh, ww = h.shape
        ho, wo = (hh + 2 * padding - 3) // 2 + 1, (ww + 2 * padding - 3) // 2 + 1
        cols = F.unfold(h, 3, padding=padding, stride=2).view(n, nb, ci * 9, ho * wo)
        out = torch.einsum("nbkl,bok->nbol", cols, w.reshape(nb, co, ci * 9)) + b.view(1, nb, co, 1)
        return out.reshape(n, nb * co, ho, wo)
    return F.conv2d(h, w.reshape(nb * co, ci, 3, 3), b.reshape(-1), stride=2, padding=padding, groups=groups)


def forward(arch: CnnArch, flat: Tensor, x: Tensor, activation: str, *, dropout: Tensor | None = None,
            seeds: Tensor | None = None, step: int = 0, conv_impl: str = "grouped",
            compile_dropout: bool | None = None, first_image: int = 0, compile_min_elements: int | None = None) -> Tensor:
    """Logits [B, N, classes] of B networks.

    x is [N, B, C, H, W] (one batch per member) or [N, C, H, W] (shared by all members).
    With `dropout` ([B] rates) the masks come from counter_rng(seeds, step), image i of x taking the
    masks of image first_image + i of the step (a micro-batch gets its images' masks); `compile_dropout`
    (None: for activations of at least `compile_min_elements` values, default fused_dropout.COMPILE_MIN_ELEMENTS)
    runs activation and dropout as compiled loops (fused_dropout), with the same masks."""
    p = unflatten(arch, flat)
    nb, act = flat.shape[0], ACTIVATIONS[activation]
    if x.dim() == 5:
        h, first_groups = x.reshape(x.shape[0], nb * arch.in_channels, *x.shape[3:]), nb
    else:
        h, first_groups = x, 1  # shared input: the first conv is one ordinary conv with B*Co outputs
    channels_last = uses_channels_last(h.device.type, h.numel())
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)  # the convolutions' outputs follow
    for i in range(arch.n_conv):
        w, b = p[f"convs.{i}.weight"], p[f"convs.{i}.bias"]
        if i == 0 and first_groups == 1:
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride=2, padding=arch.padding)
        else:
            h = _conv(h, w, b, nb, conv_impl, arch.padding)
        if dropout is not None and _fused(compile_dropout, h, activation, compile_min_elements):
            h = fused_dropout.activation_dropout(h, nb, seeds, rng.STREAM_DROPOUT, step * 64 + i, dropout, activation,
                                                 first_image)
            continue
        h = act(h)
        if dropout is not None:
            n, _, hh, ww = h.shape
            mask = rng.dropout_multipliers_member_axis1(seeds, rng.STREAM_DROPOUT, step * 64 + i,
                                                        (n, arch.channels, hh, ww), dropout, first_image)
            h = (h.view(n, nb, arch.channels, hh, ww) * mask).reshape(n, nb * arch.channels, hh, ww)
            if channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
    # a channels-last h is pooled in its memory order, so that the gradient reaching the last dropout is one too
    pooled = h.permute(0, 2, 3, 1).mean(dim=(1, 2)) if channels_last else h.mean(dim=(2, 3))
    feats = pooled.view(h.shape[0], nb, arch.channels)
    if arch.fc_hidden:
        feats = act(torch.einsum("nbc,boc->nbo", feats, p["fc_hidden.weight"]) + p["fc_hidden.bias"].unsqueeze(0))
    return torch.einsum("nbc,boc->bno", feats, p["fc.weight"]) + p["fc.bias"].unsqueeze(1)


def _fused(compile_dropout: bool | None, h: Tensor, activation: str, min_elements: int | None = None) -> bool:
    if compile_dropout is None:
        least = fused_dropout.COMPILE_MIN_ELEMENTS if min_elements is None else min_elements
        compile_dropout = h.numel() >= least and fused_dropout.fused_available()
    return compile_dropout and activation in fused_dropout.FUSED_ACTIVATIONS


def _ce_per_member(logits: Tensor, y: Tensor) -> Tensor:
    nb, n, c = logits.shape
    return F.cross_entropy(logits.reshape(nb * n, c), y.reshape(-1), reduction="none").view(nb, n).mean(1)


def loss_and_grad(arch: CnnArch, flat: Tensor, activation: str, x: Tensor, y: Tensor, idx: Tensor, *,
                  dropout: Tensor | None, seeds: Tensor, step: int, conv_impl: str = "grouped",
                  micro_batch: int | None = None, compile_min_elements: int | None = None) -> tuple[Tensor, Tensor]:
    """Each member's mean cross-entropy [B] over its step images x[idx[b]] (idx [B, bs]) and the gradient
    [B, D] of their sum. With `micro_batch` < bs the images run in slices of that many and the
    gradients add up: a step's activations then take micro_batch / bs of the memory, the dropout masks
    are the whole batch's and the result equals the one-pass step to float rounding. `compile_min_elements`:
    see forward."""
    bs = idx.shape[1]
    chunk = bs if not micro_batch or micro_batch >= bs else micro_batch
    params = flat.detach().requires_grad_(True)
    if chunk == bs:  # one pass, as before micro-batches existed (the same bits)
        logits = forward(arch, params, x[idx.T], activation, dropout=dropout, seeds=seeds, step=step, conv_impl=conv_impl,
                         compile_min_elements=compile_min_elements)
        loss = _ce_per_member(logits, y[idx])
        grad, = torch.autograd.grad(loss.sum(), params)
        return loss.detach(), grad
    loss, grad = torch.zeros(flat.shape[0], device=flat.device), torch.zeros_like(flat)
    for first in range(0, bs, chunk):
        part = idx[:, first:first + chunk]
        logits = forward(arch, params, x[part.T], activation, dropout=dropout, seeds=seeds, step=step,
                         conv_impl=conv_impl, first_image=first, compile_min_elements=compile_min_elements)
        nb, n, c = logits.shape
        part_loss = F.cross_entropy(logits.reshape(nb * n, c), y[part].reshape(-1), reduction="none").view(nb, n).sum(1) / bs
        part_grad, = torch.autograd.grad(part_loss.sum(), params)
        loss += part_loss.detach()
        grad += part_grad
        del logits, part_loss, part_grad  # free this slice's graph before the next one is built
    return loss, grad


class BatchedOptimizer:
    """Per-member SGD / SGD with momentum 0.9 / Adam (torch.optim's update rules) / RMSprop
    (tf.keras's: rho 0.9, eps 1e-7, no momentum), with coupled (L2) weight decay on every
    parameter or, with `decay_mask` ([D], 1 = decayed), on some; diverged members are frozen."""

    def __init__(self, flat: Tensor, optimizer: Sequence[str], lr: Tensor, weight_decay: Tensor, *,
                 decay_mask: Tensor | None = None, adam_eps: float = ADAM_EPS) -> None:
        bad = sorted(set(optimizer) - set(OPTIMIZERS))
        if bad:
            raise ValueError(f"unknown optimizer(s) {bad}; known: {OPTIMIZERS}")
        dev = flat.device
        self.lr, self.wd = lr.view(-1, 1), weight_decay.view(-1, 1)
        if decay_mask is not None:
            self.wd = self.wd * decay_mask.view(1, -1).to(flat.dtype)
        self.adam_eps = adam_eps
        self.mu = torch.tensor([MOMENTUM if o == "momentum" else 0.0 for o in optimizer], device=dev).view(-1, 1)
        self.is_adam = torch.tensor([o == "adam" for o in optimizer], device=dev).view(-1, 1)
        self.is_rms = torch.tensor([o == "rmsprop" for o in optimizer], device=dev).view(-1, 1)
        self.any_adam, self.any_rms = bool(self.is_adam.any()), bool(self.is_rms.any())
        self.any_sgd = not bool((self.is_adam | self.is_rms).all())
        self.buf = torch.zeros_like(flat)
        self.m, self.v = torch.zeros_like(flat), torch.zeros_like(flat)
        self.t = 0

    @torch.no_grad()
    def step(self, flat: Tensor, grad: Tensor, alive: Tensor) -> Tensor:
        """New parameters [B, D]; `alive` ([B] bool) is updated in place."""
        self.t += 1
        g = grad + self.wd * flat
        upd = torch.zeros_like(flat)
        if self.any_sgd:
            self.buf = self.mu * self.buf + g
            upd = self.buf
        b1, b2 = ADAM_BETAS  # Adam and RMSprop share the second-moment buffer (a member has one rule)
        if self.any_adam:
            v_adam = b2 * self.v + (1 - b2) * g * g
        if self.any_rms:
            v_rms = RMSPROP_RHO * self.v + (1 - RMSPROP_RHO) * g * g
            self.v = torch.where(self.is_rms, v_rms, v_adam) if self.any_adam else v_rms
        elif self.any_adam:
            self.v = v_adam
        if self.any_adam:
            self.m = b1 * self.m + (1 - b1) * g
            bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
            adam = (self.m / bc1) / (self.v.sqrt() / math.sqrt(bc2) + self.adam_eps)
            upd = torch.where(self.is_adam, adam, upd)
        if self.any_rms:
            upd = torch.where(self.is_rms, g / (self.v.sqrt() + KERAS_EPS), upd)
        new = flat - self.lr * upd
        alive &= torch.isfinite(new).all(dim=1)
        return torch.where(alive.view(-1, 1), new, flat)


@dataclass
class ImageData:
    """Images on the training device: x [N, C, H, W] float, y [N] int64."""
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@torch.no_grad()
def evaluate(arch: CnnArch, flat: Tensor, activation: str, x: Tensor, y: Tensor, *, idx: Tensor | None = None,
             conv_impl: str = "grouped", max_elems: int | None = None) -> tuple[Tensor, Tensor]:
    """Accuracy and mean cross-entropy [B] of each member on x (shared) or on x[idx[b]] (per member),
    in image chunks of at most `max_elems` first-layer activations (default 2^28 on GPU, 2^26 on CPU)."""
    nb = flat.shape[0]
    max_elems = max_elems or (1 << 28 if flat.device.type == "cuda" else 1 << 26)
    n = idx.shape[1] if idx is not None else x.shape[0]
    per_image = nb * arch.channels * ((x.shape[-2] + 1) // 2) * ((x.shape[-1] + 1) // 2)
    chunk = max(1, min(n, max_elems // max(per_image, 1)))
    correct = torch.zeros(nb, device=flat.device)
    loss = torch.zeros(nb, device=flat.device)
    for i in range(0, n, chunk):
        if idx is not None:
            sel = idx[:, i:i + chunk]
            logits, yy = forward(arch, flat, x[sel.T], activation, conv_impl=conv_impl), y[sel]
        else:
            logits = forward(arch, flat, x[i:i + chunk], activation, conv_impl=conv_impl)
            yy = y[i:i + chunk].expand(nb, -1)
        correct += (logits.argmax(-1) == yy).float().sum(1)
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yy.reshape(-1), reduction="none").view(nb, -1).sum(1)
    return (correct / n).cpu(), (loss / n).cpu()


def train_batch(arch: CnnArch, hp: MemberHParams, activation: str, data: ImageData, *, epochs: int,
                checkpoints: Sequence[int], batch_size: int, eval_train_images: int = 2000,
                conv_impl: str = "grouped", on_step: Callable[[int], None] | None = None,
                rules: TrainingRules = TrainingRules(), micro_batch: int | None = None) -> BatchResult:
    """Train B members for `epochs` epochs. With rules.epoch "dataset", an epoch is ceil(N_train /
    batch_size) steps for every member, which draws its minibatches with replacement from its own
    random f-subset of the training images; with "subset", it is one pass over the member's subset
    in a fresh random order, floor(n_sub / batch_size) steps (all members of the batch must then have
    the same train_fraction). Snapshots are taken after the epochs in `checkpoints` (0 = at
    initialisation). `micro_batch` bounds the images of one forward/backward pass (see loss_and_grad)."""
    import time

    dev = data.x_train.device
    nb, n_train = len(hp), data.x_train.shape[0]
    seeds = torch.as_tensor(list(hp.seed), dtype=torch.int64, device=dev)
    as_t = lambda v: torch.as_tensor(list(v), dtype=torch.float32, device=dev)  # noqa: E731
    lr, wd, p_drop, scale, frac = (as_t(v) for v in (hp.lr, hp.weight_decay, hp.dropout, hp.init_scale, hp.train_fraction))
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    n_sub = torch.clamp((frac * n_train).round().to(torch.int64), 1, n_train)
    subset = rng.per_member_permutation(seeds, rng.STREAM_SUBSET, n_train)  # member b uses subset[b, :n_sub[b]]
    eval_idx = subset.gather(1, rng.randint(seeds, rng.STREAM_EVAL, 0, min(eval_train_images, n_train), n_sub))
    use_dropout = bool((p_drop > 0).any())

    flat = init_params(arch, seeds, scale, hp.w_init, as_t(hp.init_std) if hp.init_std is not None else None)
    decay_mask = None
    if rules.weight_decay_on == "kernels":
        decay_mask = torch.cat([torch.full((math.prod(shape),), float(not key.endswith("bias")), device=dev)
                                for key, shape in arch.shapes()])
    elif rules.weight_decay_on != "all":
        raise ValueError(f"weight_decay_on must be 'all' or 'kernels', got {rules.weight_decay_on!r}")
    opt = BatchedOptimizer(flat, hp.optimizer, lr, wd, decay_mask=decay_mask, adam_eps=rules.adam_eps)
    alive = torch.ones(nb, dtype=torch.bool, device=dev)
    diverged_step = torch.full((nb,), -1, dtype=torch.int64, device=dev)
    if rules.epoch == "subset":
        if len(set(n_sub.tolist())) != 1:
            raise ValueError("epoch 'subset': the members of one batch must share their train_fraction")
        n_pass = int(n_sub[0])
        steps_per_epoch = max(1, n_pass // batch_size)  # Keras drop_remainder
    elif rules.epoch == "dataset":
        steps_per_epoch = math.ceil(n_train / batch_size)
    else:
        raise ValueError(f"epoch must be 'dataset' or 'subset', got {rules.epoch!r}")
    compile_min = fused_dropout.compile_min_elements(epochs * steps_per_epoch)
    snapshots: dict[int, Tensor] = {}
    metrics: dict[int, dict[str, Tensor]] = {}

    def snapshot(epoch: int) -> None:
        snapshots[epoch] = flat.detach().cpu().clone()
        tr_acc, tr_loss = evaluate(arch, flat, activation, data.x_train, data.y_train, idx=eval_idx, conv_impl=conv_impl)
        te_acc, te_loss = evaluate(arch, flat, activation, data.x_test, data.y_test, conv_impl=conv_impl)
        metrics[epoch] = {"train_acc": tr_acc, "train_loss": tr_loss, "test_acc": te_acc, "test_loss": te_loss}

    if 0 in checkpoints:
        snapshot(0)
    t0, step = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        if rules.epoch == "subset":  # this epoch's order of the member's subset: a pass without replacement
            order = torch.argsort(rng.uniform(seeds, rng.STREAM_BATCH, (1 << 40) + epoch, (n_pass,)), dim=1, stable=True)
        for i in range(steps_per_epoch):
            if rules.epoch == "subset":
                pos = order[:, i * batch_size:(i + 1) * batch_size] if n_pass >= batch_size else order
            else:
                pos = rng.randint(seeds, rng.STREAM_BATCH, step, batch_size, n_sub)
            idx = subset.gather(1, pos)  # [B, bs] image indices
            loss, grad = loss_and_grad(arch, flat, activation, data.x_train, data.y_train, idx,
                                       dropout=p_drop if use_dropout else None, seeds=seeds, step=step,
                                       conv_impl=conv_impl, micro_batch=micro_batch, compile_min_elements=compile_min)
            was_alive = alive.clone()
            alive &= torch.isfinite(loss)
            flat = opt.step(flat, grad, alive)
            diverged_step = torch.where(was_alive & ~alive, torch.full_like(diverged_step, step), diverged_step)
            step += 1
            if on_step is not None:
                on_step(step)
        if epoch in checkpoints:
            snapshot(epoch)
    return BatchResult(snapshots, metrics, diverged_step.cpu(), steps_per_epoch, time.perf_counter() - t0)
