"""NeRN as a Reconstructor: fit a predictor to one network, return the predicted network, its size
and one variant per meta-compression sparsity."""
from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...errors import NotApplicableError
from ...registry import METHODS
from ..base import Reconstruction, ReconstructionTarget, Reconstructor, RunContext
from ..compression import layer_errors
from .config import validate_config
from .fit import Fitter
from .meta import magnitude_prune, size_report
from .orderings import ordering_index_bits
from .trainer import NeRNTrainer


def kept_params(target: ReconstructionTarget, predicted: list[str]) -> int:
    """Numbers stored as-is: every float tensor NeRN does not predict, except BN running statistics
    (foldable into the affine parameters) - the same rule as `compression.kept_size`."""
    return sum(v.numel() for k, v in target.state_dict.items()
               if k not in predicted and v.is_floating_point() and "running" not in k)


@METHODS.register("nern")
class NeRN(Reconstructor):
    # 2: the official code's measured behaviour (raw coordinates, RMSE with the sampled-kernel RMSE
    #    estimate, gradient centralisation, aliased FMD maps, cosine 1x1 rule)
    version: ClassVar[int] = 2
    description: ClassVar[str] = ("neural representation of a CNN's conv kernels: an MLP from kernel coordinates to "
                                  "kernels, trained with reconstruction + KD + feature-map losses (ICLR 2023)")

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.cfg = validate_config(config)

    def trainer(self, target: ReconstructionTarget, ctx: RunContext, **data: Any) -> NeRNTrainer:
        self._check_target(target)
        return NeRNTrainer(self.cfg, target, ctx, **data)

    def _check_target(self, target: ReconstructionTarget) -> None:
        if self.cfg["fmd_weight"] > 0 or self.cfg["fmd_aliasing"] is True:
            model = target.build_model("cpu")
            import inspect

            if "return_features" not in inspect.signature(model.forward).parameters:
                raise NotApplicableError(f"nern: fmd_weight > 0 needs feature maps, which architecture "
                                         f"{target.arch!r} does not provide; set fmd_weight: 0")
            if self.cfg["fmd_aliasing"] is True and target.arch != "resnet_cifar":
                raise NotApplicableError("nern: fmd_aliasing is the official ResNet quirk; only for resnet_cifar")

    @classmethod
    def supports(cls, spec: Any) -> tuple[bool, str]:
        if not any(lay.kind == "conv" for lay in spec.layers):
            return False, f"NeRN predicts conv kernels; {spec.describe()} has no conv layers"
        return True, ""

    def reconstruct(self, target: ReconstructionTarget, ctx: RunContext) -> Reconstruction:
        t_all = time.perf_counter()
        trainer = self.trainer(target, ctx)
        fitter = Fitter(trainer)
        fitter.run()
        fitter.load_selected()
        rec = self.assemble(trainer, fitter)
        rec.extra["wall_s"] = time.perf_counter() - t_all
        return rec

    # ------------------------------------------------------------------ results
    def assemble(self, trainer: NeRNTrainer, fitter: Fitter) -> Reconstruction:
        cfg, layout, target = self.cfg, trainer.layout, trainer.target
        keys = layout.keys
        kept = kept_params(target, keys)
        perm_bits = ordering_index_bits([l.shape for l in layout.layers], cfg["ordering"])
        emb_params = trainer.learned_emb.numel() if trainer.learned_emb is not None else 0
        st, tm = trainer.state, trainer.timings
        trained = max(st.iteration - fitter.resumed_from, 0)
        extra: dict[str, Any] = {
            "iterations": st.iteration,
            "iterations_this_run": trained,
            "resumed_from": fitter.resumed_from,
            "warm_start": fitter.warm_start,
            "it_per_s": trained / tm.training if tm.training > 0 else None,
            "time_ordering_s": tm.ordering, "time_encodings_s": tm.encodings, "time_setup_s": tm.setup,
            "time_data_s": tm.data, "time_training_s": tm.training, "time_eval_s": tm.evaluation,
            "final_losses": fitter.last_losses,
            "best_val_acc": st.best_acc if st.best_acc >= 0 else None,
            "best_iteration": st.best_iteration if st.best_iteration >= 0 else None,
            "val_history": st.history,
            "selection": cfg["selection"],
            "n_kernels": layout.n_kernels,
            "permutation_bits": perm_bits,
            "student_bn_folded": trainer.net.folded,
            "device": str(trainer.device),
            "resolved_config": {k: v for k, v in cfg.items() if k != "description"},  # every key, defaults included
        }
        variants: dict[str, Reconstruction] = {}
        base_state = {k: v.detach().clone() for k, v in trainer.predictor.state_dict().items()}
        for sparsity in cfg["prune_sparsities"]:
            pruned = magnitude_prune(trainer.predictor, sparsity)
            sd = self._state_dict(trainer, pruned)
            size = size_report(pruned, kept, perm_bits, emb_params)
            var_extra = {"sparsity": sparsity, "size": size.as_dict(),
                         "layer_rel_error": layer_errors(target.state_dict, sd, keys)}
            variants[f"sparsity{sparsity:g}"] = Reconstruction(sd, size.n_params, size.n_bytes, var_extra)
        trainer.predictor.load_state_dict(base_state)
        main_sd = self._state_dict(trainer, trainer.predictor)
        size = size_report(trainer.predictor, kept, perm_bits, emb_params)
        extra["size"] = size.as_dict()
        extra["layer_rel_error"] = layer_errors(target.state_dict, main_sd, keys)
        return Reconstruction(main_sd, size.n_params, size.n_bytes, extra, variants)

    @staticmethod
    def _state_dict(trainer: NeRNTrainer, predictor: torch.nn.Module) -> dict[str, Tensor]:
        flat = trainer.predicted_flat(predictor).float().cpu()
        weights = trainer.layout.split(flat)
        out = {}
        for k, v in trainer.target.state_dict.items():
            out[k] = weights[k].clone().to(v.dtype) if k in weights else v.detach().clone()
        return out


