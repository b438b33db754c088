"""The training loop around NeRNTrainer.step: logging, model selection, checkpoint and resume."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from ...errors import IntegrityError, TrainingDivergedError
from .checkpoint import (adopt_same_run_checkpoint, find_prefix_checkpoint, load_checkpoint, run_identity,
                         save_checkpoint, state_dict_digest)
from .config import NON_RESULT_KEYS
from .optim import load_optimizer_tensors, optimizer_tensors
from .trainer import NeRNTrainer

LOSS_NAMES = ("rec", "kd", "fmd", "total")


def _clone_state(trainer: NeRNTrainer) -> dict[str, Tensor]:
    out = {f"predictor.{k}": v.detach().clone() for k, v in trainer.predictor.state_dict().items()}
    if trainer.learned_emb is not None:
        out["embedding"] = trainer.learned_emb.detach().clone()
    return out


def _load_state(trainer: NeRNTrainer, tensors: dict[str, Tensor], prefix: str) -> None:
    dev = trainer.device
    sd = {k[len(prefix) + len("predictor."):]: v.to(dev) for k, v in tensors.items()
          if k.startswith(prefix + "predictor.")}
    trainer.predictor.load_state_dict(sd)
    if trainer.learned_emb is not None:
        with torch.no_grad():
            trainer.learned_emb.copy_(tensors[prefix + "embedding"].to(dev))


def check_checkpoint_shapes(trainer: NeRNTrainer, tensors: dict[str, Tensor], where: str) -> None:
    """IntegrityError (one line) when a checkpoint holds a tensor this run does not have or of
    another shape: an edited or foreign file, caught before it is loaded into the model."""
    model = {f"predictor.{k}": tuple(v.shape) for k, v in trainer.predictor.state_dict().items()}
    if trainer.learned_emb is not None:
        model["embedding"] = tuple(trainer.learned_emb.shape)
    params = [tuple(p.shape) for g in trainer.optimizer.param_groups for p in g["params"]]

    def expected(key: str) -> tuple[int, ...] | None | bool:
        """The shape `key` must have; None: any (an optimizer step counter); False: no such tensor."""
        head, _, rest = key.partition(".")
        if head == "best":
            return model.get(rest, False)
        if head in ("slow", "opt"):
            pid, _, name = rest.partition(".")
            if not pid.isdigit() or int(pid) >= len(params) or (head == "slow") == bool(name):
                return False
            return None if name == "step" else params[int(pid)]
        return model.get(key, False)

    for key, v in tensors.items():
        want = expected(key)
        if want is False:
            raise IntegrityError(f"nern: checkpoint {where} holds tensor {key!r} that this run does not have; "
                                 f"delete it to start afresh")
        if want is not None and tuple(v.shape) != want:
            raise IntegrityError(f"nern: checkpoint {where}: tensor {key!r} has shape {tuple(v.shape)}, this run "
                                 f"needs {want}; delete it to start afresh")


class Fitter:
    def __init__(self, trainer: NeRNTrainer) -> None:
        self.t = trainer
        ctx = trainer.ctx
        self.workdir = ctx.workdir
        self.identity = run_identity(trainer.cfg, NON_RESULT_KEYS, trainer.target.member_id,
                                     state_dict_digest(trainer.target.state_dict), ctx.seed)
        self.resumed_from = 0
        self.warm_start: dict[str, object] | None = None  # another run's checkpoint this run started from
        self.last_losses: dict[str, float] = {}

    # ------------------------------------------------------------------ checkpoint
    def _save(self) -> None:
        if self.workdir is None:
            return
        t, st = self.t, self.t.state
        tensors = _clone_state(t)
        if st.best is not None:
            tensors.update({f"best.{k}": v for k, v in st.best.items()})
        opt_t, opt_s = optimizer_tensors(t.optimizer)
        tensors.update(opt_t)
        scalars = {"identity": self.identity, "iteration": st.iteration, "best_acc": st.best_acc,
                   "best_iteration": st.best_iteration, "history": st.history, "optimizer": opt_s,
                   "has_best": st.best is not None, "rmse_all": t.rmse_all}
        save_checkpoint(self.workdir, tensors, scalars)

    def _resume(self) -> None:
        if self.workdir is None:
            return
        adopted = adopt_same_run_checkpoint(self.workdir, self.identity)
        if adopted is not None:
            self.t.ctx.log(f"[nern] moved this training's checkpoint from {adopted} (another run key of the same training: config, member, weights and seed) to "
                           f"{self.workdir}")
        loaded = load_checkpoint(self.workdir, self.identity)
        source = self.workdir
        if loaded is None:
            prefix = find_prefix_checkpoint(self.workdir, self.identity)
            if prefix is None:
                return
            loaded = load_checkpoint(*prefix)
            if loaded is None:
                return
            source = prefix[0]
            self.warm_start = {"run": prefix[0].name, "iteration": int(loaded[1]["iteration"])}
            self.t.ctx.log(f"[nern] starting from {prefix[0]} at iteration {loaded[1]['iteration']}: that run "
                           f"is this one up to there (it differs only in KD/FMD settings, not yet used)")
        tensors, scalars = loaded
        t, st = self.t, self.t.state
        check_checkpoint_shapes(t, tensors, str(source))
        _load_state(t, tensors, "")
        # RAdam's step counters stay on the CPU (on CUDA they would force a sync every step)
        load_optimizer_tensors(t.optimizer, {k: v if k.endswith(".step") else v.to(t.device)
                                             for k, v in tensors.items() if k.startswith(("opt.", "slow."))},
                               scalars["optimizer"])
        st.iteration = int(scalars["iteration"])
        st.best_acc = float(scalars["best_acc"])
        st.best_iteration = int(scalars["best_iteration"])
        st.history = list(scalars["history"])
        t.rmse_all = scalars.get("rmse_all")
        if scalars["has_best"]:
            st.best = {k[len("best."):]: v.to(t.device) for k, v in tensors.items() if k.startswith("best.")}
        self.resumed_from = st.iteration
        if self.warm_start is None:
            t.ctx.log(f"[nern] resumed from {self.workdir} at iteration {st.iteration}")

    # ------------------------------------------------------------------ loop
    def _evaluate(self) -> None:
        t, st = self.t, self.t.state
        t0 = time.perf_counter()
        acc = t.evaluate()
        t.timings.evaluation += time.perf_counter() - t0
        st.history.append({"iteration": st.iteration, "val_acc": acc, **self.last_losses})
        if acc > st.best_acc:
            st.best_acc, st.best_iteration = acc, st.iteration
            st.best = _clone_state(t)

    def run(self, stop_after: int | None = None) -> None:
        """Train up to cfg["iterations"] (or stop early after `stop_after` total iterations)."""
        t, st, cfg = self.t, self.t.state, self.t.cfg
        self._resume()
        total = cfg["iterations"] if stop_after is None else min(stop_after, cfg["iterations"])
        select = cfg["selection"] == "val"
        acc_sum = None
        n_acc = 0
        t0 = time.perf_counter()
        eval_before = t.timings.evaluation
        with t.precision_context():
            t.predictor.train()
            while st.iteration < total:
                losses = t.step(st.iteration)
                acc_sum = losses if acc_sum is None else acc_sum + losses
                n_acc += 1
                st.iteration += 1
                it = st.iteration
                last = it == cfg["iterations"]
                log_now = it % cfg["log_every"] == 0 or last or it == total
                save = self.workdir is not None and (it % cfg["checkpoint_every"] == 0 or last or it == total)
                if (log_now or save) and not torch.isfinite(acc_sum).all():
                    self._diverged(it)  # checked where a NaN would reach the log or a checkpoint, not every step
                if log_now:
                    vals = (acc_sum / n_acc).tolist()
                    self.last_losses = dict(zip(LOSS_NAMES, vals))
                    acc_sum, n_acc = None, 0
                    t.ctx.log(f"[nern] it {it}/{cfg['iterations']} " +  # a line, not a bar: also in CI logs
                              " ".join(f"{k}={v:.4g}" for k, v in self.last_losses.items()))
                if select and (it % cfg["eval_every"] == 0 or last):
                    self._evaluate()
                if save:
                    self._save()
        t._sync()
        t.timings.training += time.perf_counter() - t0 - (t.timings.evaluation - eval_before)

    def _diverged(self, it: int) -> None:
        cfg = self.t.cfg
        hint = (" (KD/FMD from the first step: a student built from a barely trained predictor can overflow; "
                "start them after a reconstruction-only warm-up, loss_warmup, as the ResNet56 paper preset does)"
                if self.t.distill and cfg["loss_warmup"] < it else "")
        raise TrainingDivergedError(f"nern: the loss became NaN/Inf by iteration {it} of {self.t.target.member_id}"
                                    f"{hint}; the last finite checkpoint, if any, is kept")

    def final_predictor_state(self) -> dict[str, Tensor]:
        """The selected predictor: best on validation, or the last one."""
        st = self.t.state
        if self.t.cfg["selection"] == "val" and st.best is not None:
            return st.best
        return _clone_state(self.t)

    def load_selected(self) -> None:
        _load_state(self.t, self.final_predictor_state(), "")
