"""NeRN training: set-up (ordering, encodings, student), the training step, evaluation, resume.

One step (cf. the official `Trainer.train`, made cheaper with the same gradients):
1. The predictor runs on ALL kernel embeddings without autograd, and on the sampled rows with
   autograd; the sampled predictions are scattered into the full table, which is cropped into one
   flat weight vector. Only sampled kernels send gradient to the predictor (as the official code).
2. Reconstruction loss over all weights; after the warm-up, the teacher (no grad) and the student
   (the same BN-folded module with the predicted kernels, via functional_call) see the same batch,
   and the KD / FMD losses are added.
3. One backward, one optimizer step (gradients centralised first, as the official Ranger). Loss
   sums stay on the device; the host only reads them at log and evaluation intervals.

Steps without KD/FMD (the warm-up, or reconstruction-only runs) predict only the sampled rows:
only they carry gradient, and for the MSE, sum((pred - w)^2 over the sampled rows) / (all weights)
has exactly the full loss's gradient. For the official RMSE, d sqrt(MSE_all) = d MSE_all /
(2 RMSE_all): the same sampled objective scaled by 1 / (2 RMSE_all). RMSE_all is, by default
(`rmse_scale: sampled`), estimated from the step's own sampled kernels (their squared errors
weighted by N/n for distinct uniform draws, 1/(n p_i) for norm-weighted draws: an unbiased estimate
of the all-weight sum; ~2 % noise on ResNet20, free). `rmse_scale: refresh` takes it from a full
no-grad prediction every `rmse_refresh_every` steps instead (1 = exactly the official gradient; a
full prediction costs ~2.5x a sampled step on ResNet20). Measured against the official curve
(3 seeds, iterations 500-1,500 every 50, mean of ours / official): exact 1.008, sampled 1.012,
refresh every 10 steps 1.028 (a stale RMSE is too small right after a loss spike).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..base import ReconstructionTarget, RunContext
from .config import resolve_auto
from .embeddings import kernel_coordinates, positional_encoding, random_embeddings
from .layout import ConvLayout
from .losses import alias_resnet_maps, fmd_loss, kd_loss, reconstruction_loss
from .optim import build_optimizer, cosine_lr, set_lr
from .orderings import compute_positions
from .predictor import KernelPredictor, predict_all
from .sampling import ImageBatches, KernelSampler, StepRandom, noise_batch
from .student import FunctionalNet


@dataclass
class Timings:
    ordering: float = 0.0
    encodings: float = 0.0
    setup: float = 0.0  # everything before the first step except loading images
    data: float = 0.0
    training: float = 0.0
    evaluation: float = 0.0


@dataclass
class TrainState:
    iteration: int = 0
    best_acc: float = -1.0
    best_iteration: int = -1
    best: dict[str, Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class NeRNTrainer:
    def __init__(self, cfg: dict[str, Any], target: ReconstructionTarget, ctx: RunContext,
                 train_images: Tensor | None = None, val_split: Any = None) -> None:
        self.cfg = cfg
        self.target = target
        self.ctx = ctx
        self.device = torch.device(ctx.device)
        self.timings = Timings()
        self.state = TrainState()
        self._train_images = train_images
        self._val = val_split
        self._setup()

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg, dev = self.cfg, self.device
        t_start = time.perf_counter()
        torch.manual_seed(self.ctx.seed)
        model = self.target.build_model(dev)
        self.layout = layout = ConvLayout(model)
        sd = {k: v.to(dev) for k, v in self.target.state_dict.items()}
        weights = [sd[l.key].float() for l in layout.layers]
        t0 = time.perf_counter()
        budget = cfg["ordering_memory_mb"] << 20 if cfg["ordering_memory_mb"] else None
        self.positions = compute_positions(weights, cfg["ordering"], cfg["one_by_one"], budget)
        self._sync()
        self.timings.ordering = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb_dim = 6 * cfg["levels"]
        if cfg["embedding"] == "random":
            self.emb = random_embeddings(layout.n_kernels, emb_dim, self.ctx.seed, dev)
        else:
            coords = kernel_coordinates(layout, self.positions, cfg["coordinates"], dev)
            self.emb = positional_encoding(coords, cfg["levels"], cfg["base"])
        self._sync()
        self.timings.encodings = time.perf_counter() - t0
        self.learned_emb = None
        if cfg["embedding"] == "learned":
            self.learned_emb = torch.nn.Parameter(self.emb.clone())

        self.target_flat = layout.flat_weights(sd).to(dev)
        idx = layout.crop_index()
        self.crop = idx.to(dev) if idx is not None else None
        # for steps without KD/FMD: per-kernel targets and a mask of the entries that are real weights
        self.target_table = layout.padded_kernels({k: v.cpu() for k, v in sd.items()}).to(dev)
        valid = torch.ones(layout.n_kernels * layout.out_dim, device=dev)
        if self.crop is not None:
            valid = torch.zeros_like(valid).index_fill_(0, self.crop, 1.0)
        self.valid = valid.view(layout.n_kernels, layout.out_dim)
        norms = layout.padded_kernels({k: v.cpu() for k, v in sd.items()}).norm(dim=1).to(dev)
        self.sampler = KernelSampler(layout.n_kernels, cfg["weights_batch"], cfg["kernel_sampling"],
                                     cfg["weighted_fraction"], norms)
        self.use_fmd = cfg["fmd_weight"] > 0
        self.use_kd = cfg["kd_weight"] > 0
        self.distill = self.use_fmd or self.use_kd
        self.net = FunctionalNet(model, layout, fold_bn=cfg["fold_bn"], input_size=self._input_size(),
                                 channels_last=resolve_auto(cfg["channels_last"], dev.type), log=self.ctx.log)
        self.teacher_params = self.net.params(layout.split(self.target_flat))
        self.predictor = KernelPredictor(emb_dim, cfg["hidden"], layout.out_dim, cfg["n_layers"]).to(dev)
        params = list(self.predictor.parameters()) + ([self.learned_emb] if self.learned_emb is not None else [])
        self.optimizer = build_optimizer(params, cfg["optimizer"], cfg["lr"], tuple(cfg["betas"]), cfg["eps"],
                                         cfg["weight_decay"], cfg["lookahead_k"], cfg["lookahead_alpha"],
                                         cfg["gradient_centralization"])
        self.alias_maps = cfg["fmd_aliasing"] is True or (cfg["fmd_aliasing"] == "auto"
                                                          and self.target.arch == "resnet_cifar")
        self.rmse_all: float | None = None  # the last full-prediction RMSE (sampled RMSE steps)
        self._one = torch.ones((), device=dev)
        self.rnd = StepRandom(self.ctx.seed, dev)
        self.tf32 = resolve_auto(cfg["tf32"], dev.type)
        self.autocast = ((lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if cfg["bf16"]
                         else contextlib.nullcontext)
        self._loss_fn: Callable = self._losses
        if cfg["compile"]:  # the whole loss (predictor, student, teacher, losses); backward is compiled too
            mode = None if cfg["compile"] is True else cfg["compile"]
            self._loss_fn = torch.compile(self._losses, dynamic=False, mode=mode)
        self._sync()
        self.timings.setup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        self._setup_data(model)
        self.timings.data = time.perf_counter() - t0

    def _input_size(self) -> int:
        try:
            from ...data import dataset_info

            return dataset_info(self.target.dataset).size
        except Exception:  # noqa: BLE001 - unknown dataset: the fold check just uses 32x32
            return 32

    def _setup_data(self, model: torch.nn.Module) -> None:
        cfg, dev = self.cfg, self.device
        first = self.layout.layers[0]
        self.images = None
        needs_val = cfg["selection"] == "val"
        if (cfg["data"] == "task" and self.distill) or needs_val:
            from ...data import dataset_info, load_split

            info = dataset_info(self.target.dataset)
            gray = info.channels == 3 and first.channels == 1
            if cfg["data"] == "task" and self.distill:
                x = self._train_images
                if x is None:
                    x = load_split(self.target.dataset, "train", device=dev, grayscale=gray,
                                   limit=cfg["train_limit"]).x
                mean = (info.gray_mean,) if gray or info.channels == 1 else info.mean
                std = (info.gray_std,) if gray or info.channels == 1 else info.std
                black = -torch.tensor(mean, device=dev) / torch.tensor(std, device=dev)
                self.images = ImageBatches(x.to(dev), cfg["image_batch"], cfg["augment"], black)
                self.input_shape = tuple(x.shape[1:])
            if needs_val and self._val is None:
                self._val = load_split(self.target.dataset, "val", device=dev, grayscale=gray,
                                       limit=cfg["val_limit"])
            if self._val is not None:
                self.input_shape = tuple(self._val.x.shape[1:])
        if self.images is None and not hasattr(self, "input_shape"):
            from ...data import dataset_info

            info = dataset_info(self.target.dataset)
            self.input_shape = (first.channels, info.size, info.size)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ one step
    def embeddings(self) -> Tensor:
        return self.learned_emb if self.learned_emb is not None else self.emb

    def predicted_flat(self, predictor: torch.nn.Module | None = None) -> Tensor:
        """All conv weights as one flat vector, without autograd."""
        pred = predict_all(predictor or self.predictor, self.embeddings().detach())
        flat = pred.reshape(-1)
        return flat if self.crop is None else flat[self.crop]

    def _distill_losses(self, flat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.use_fmd
        with self.autocast():
            with torch.no_grad():
                t_out = self.net(self.teacher_params, x, feats)
            s_out = self.net(self.net.params(self.layout.split(flat)), x, feats)
        t_logits, t_maps = t_out if feats else (t_out, None)
        s_logits, s_maps = s_out if feats else (s_out, None)
        zero = flat.new_zeros(())
        kd = kd_loss(s_logits, t_logits, self.cfg["kd_loss"]) if self.use_kd else zero
        if feats:
            if self.alias_maps:
                t_maps, s_maps = alias_resnet_maps(t_maps), alias_resnet_maps(s_maps)
            fmd = fmd_loss([m.float() for m in s_maps], [m.float() for m in t_maps])
        else:
            fmd = zero
        return kd, fmd

    def _inputs(self, it: int) -> Tensor:
        if self.images is not None:
            return self.images.get(self.rnd, it)
        shape = (self.cfg["image_batch"], *self.input_shape)
        return noise_batch(shape, self.cfg["noise"], self.rnd.device_gen(it, "noise"), self.device)

    def _losses(self, idx: Tensor, x: Tensor | None, rec_scale: Tensor,
                total_w: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """((rec, kd, fmd, total) to log, the objective to differentiate) for sampled kernels `idx`
        and inputs `x` (None: warm-up or no distillation, so no KD/FMD; then `rec_scale` turns the
        sampled MSE gradient into the loss's: 1 for the MSE, 1 / (2 RMSE_all) for the RMSE)."""
        cfg = self.cfg
        emb = self.embeddings()
        if x is None:
            return self._sampled_rec_losses(emb, idx, rec_scale, total_w)
        with torch.no_grad():
            full = self.predictor(emb.detach())
        part = self.predictor(emb.index_select(0, idx))
        flat = full.index_put((idx,), part).reshape(-1)
        if self.crop is not None:
            flat = flat[self.crop]
        rec = reconstruction_loss(flat, self.target_flat, cfg["rec_loss"])
        kd, fmd = self._distill_losses(flat, x)
        total = rec + cfg["kd_weight"] * kd + cfg["fmd_weight"] * fmd
        return torch.stack([rec, kd, fmd, total]), total

    def _sampled_rec_losses(self, emb: Tensor, idx: Tensor, rec_scale: Tensor,
                            total_w: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The reconstruction step without predicting every kernel: only sampled kernels get gradient
        anyway, so rec_scale * sum((pred - w)^2 over the sampled rows) / (all weights) has exactly the
        full loss's gradient (a kernel drawn m times counts m times, as in the full form). What is
        logged as `rec` is the loss of the sampled weights (mean squared error, or its root), an
        estimate of the full loss (evaluation predicts every kernel)."""
        part = self.predictor(emb.index_select(0, idx))
        mask = self.valid.index_select(0, idx)
        per_row = ((part - self.target_table.index_select(0, idx)) * mask).square().sum(1)
        sq = per_row.sum()
        if total_w is not None:  # rmse_scale "sampled": the all-weight MSE estimated from these rows
            mse_est = (per_row.detach() * total_w).sum() / self.target_flat.numel()
            rec_scale = 0.5 / mse_est.clamp_min(1e-30).sqrt()
        objective = sq * rec_scale / self.target_flat.numel()
        est = sq.detach() / mask.sum().clamp_min(1.0)
        if self.cfg["rec_loss"] == "rmse":
            est = est.sqrt()
        zero = est.new_zeros(())
        return torch.stack([est, zero, zero, est]), objective

    @torch.no_grad()
    def full_mse(self) -> float:
        """Mean squared error of every predicted weight against the original (one full prediction)."""
        return float((self.predicted_flat() - self.target_flat).square().mean())

    def _rec_scale(self, it: int, idx: Tensor, weighted: bool) -> tuple[Tensor, Tensor | None]:
        """For a step without KD/FMD: (gradient scale, per-draw weights of the sampled RMSE estimate or
        None); see the module docstring."""
        cfg = self.cfg
        if cfg["rec_loss"] == "mse":
            return self._one, None
        if cfg["rmse_scale"] == "sampled":
            return self._one, self.sampler.total_weights(idx, weighted)
        if self.rmse_all is None or it % cfg["rmse_refresh_every"] == 0:
            self.rmse_all = max(self.full_mse(), 1e-30) ** 0.5
        return torch.tensor(0.5 / self.rmse_all, device=self.device), None

    def step(self, it: int) -> Tensor:
        """One optimisation step; returns the detached (rec, kd, fmd, total) losses on the device."""
        cfg = self.cfg
        set_lr(self.optimizer, cosine_lr(it, cfg["iterations"], cfg["lr"], cfg["lr_min"]))
        idx, weighted = self.sampler.sample_branch(self.rnd, it)
        x = self._inputs(it) if self.distill and it >= cfg["loss_warmup"] else None
        scale, total_w = (self._one, None) if x is not None else self._rec_scale(it, idx, weighted)
        losses, objective = self._loss_fn(idx, x, scale, total_w)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return losses.detach().clone()  # (a CUDA-graph output is overwritten by the next replay)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, predictor: torch.nn.Module | None = None) -> float:
        """Top-1 accuracy on the validation split with the predicted weights."""
        val = self._val
        params = self.net.params(self.layout.split(self.predicted_flat(predictor)))
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        bs = self.cfg["eval_batch"]
        for i in range(0, len(val.y), bs):
            logits = self.net(params, val.x[i:i + bs], False)
            correct += (logits.argmax(1) == val.y[i:i + bs]).sum()
        return float(correct.item()) / max(len(val.y), 1)

    def precision_context(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return _Tf32(self.tf32)


class _Tf32:
    """TF32 for convolutions only: the predictor's matmuls stay full float32 (its outputs are weights)."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self):
        self.prev = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = self.on
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.prev
