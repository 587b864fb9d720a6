"""Preference training on ``accelerate``: a DPO-family loss, optionally plus SPO's degree loss.

:func:`train` runs a :class:`TrainConfig`:

1. lock ``--out`` (one run at a time), check it (new, ``--resume``, ``--overwrite``) first;
2. read and validate the pairs and tokenize them once (:mod:`realspo.training.data`);
3. compute the reference log-probs once, with the initial model, cached on disk
   (:mod:`realspo.training.reference`); skipped for reference-free losses;
4. train: each micro-batch runs only the policy (:mod:`realspo.training.step`), on CPU in passes
   of whole pairs (:mod:`realspo.training.passes`); accelerate does gradient accumulation,
   mixed precision, DDP / FSDP / DeepSpeed;
5. write metrics, checkpoints (:mod:`realspo.training.checkpoints`: safetensors and JSON,
   no pickle) and the exported model (:mod:`realspo.training.run_dir`).

The step-0 metrics record is the first micro-batch, measured before any update: with a fresh
policy equal to its reference, ``loss`` there is the loss at zero margin (log 2 for ``sigmoid``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realspo.config import to_dict
from realspo.errors import InputError, TrainingDiverged
from realspo.faults import after_batch
from realspo.outputs import output_lock
from realspo.processes import destroy_process_group_at_exit
from realspo.training.checkpoints import (
    check_supported,
    remove_temporaries,
    restore_checkpoint,
    save_checkpoint,
)
from realspo.training.metrics import (
    BATCH_METRICS,
    METRIC_KEYS,
    Metrics,
    metric_record,
    peak_memory_mb,
)
from realspo.training.passes import pass_budget, run_passes
from realspo.training.run_dir import (
    METRICS,
    MetricsLog,
    RunStart,
    check_resume_config,
    check_run_dir,
    clear_run_dir,
    export_model,
    write_run_config,
)
from realspo.training.sharding import make_accelerator
from realspo.training.step import StepResult, build_model, check_finite, forward_batch
from realspo.training.trackers import end_trackers, start_trackers, tracker_values
from realspo.training.train_config import TrainConfig, default_cache_dir

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, *, on_batch: Callable[[int, list[int]], None] | None = None,
          stop_after: int | None = None) -> Path | None:
    """Run ``cfg`` (the options of ``realspo train``); return ``OUT``, holding the trained model.

    Args:
        cfg: the run's options (:class:`TrainConfig`); validated here.
        on_batch: ``on_batch(step, indices)`` after each micro-batch: the optimizer step
            (1-based) and the dataset indices it held (a data-order log).
        stop_after: end after this step (and its checkpoint) without exporting, as an
            interruption would.

    Returns:
        ``cfg.out``, holding the model, ``config.yaml`` and ``metrics.jsonl``; None after
        ``stop_after``.
    """
    cfg.validate()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("accelerate").setLevel(logging.WARNING)  # its info chatter
    out = Path(cfg.out)
    with _run_lock(out):
        start = check_run_dir(out, resume=cfg.resume, overwrite=cfg.overwrite)
        if start.resume_from is not None or start.restart:
            check_resume_config(out, to_dict(cfg))
        return _train(cfg, out, start, on_batch, stop_after)


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT``'s lock for the whole run: taken by the main process (rank 0) only, before
    the other processes could see a half-prepared ``OUT``."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with output_lock(out):
        yield


def _train(cfg: TrainConfig, out: Path, start: RunStart,
           on_batch: Callable[[int, list[int]], None] | None, stop_after: int | None) -> Path | None:
    from accelerate.utils import set_seed

    accelerator = make_accelerator(cfg, out)
    destroy_process_group_at_exit()
    check_supported(accelerator, saving=bool(cfg.save_steps), resuming=start.resume_from is not None)
    set_seed(cfg.seed)
    return _Run(cfg, accelerator, out, start).run(on_batch, stop_after)


@dataclass
class _Window:
    """Metric sums of this process since the last record."""

    sums: Metrics  # METRIC_KEYS
    count: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult) -> _Window:
        self.sums = self.sums + result.sums.detach()
        self.count += result.count
        self.tokens += result.tokens
        return self


class _Run:
    """One training run: what :func:`train` builds, and its loop."""

    def __init__(self, cfg: TrainConfig, accelerator: Any, out: Path, start: RunStart) -> None:
        from torch.utils.data import DataLoader
        from transformers import get_scheduler

        from realspo.models import load_model, load_tokenizer
        from realspo.training.data import EpochShuffleSampler, PairCollator

        self.cfg, self.acc, self.out, self.start = cfg, accelerator, out, start
        self.settings = cfg.batch_settings()  # what each micro-batch reads of cfg
        self.shown = {"nll": bool(cfg.nll_weight), "spo": cfg.spo}  # optional metrics written
        self.tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        train_set, eval_set = self._datasets()
        policy = load_model(cfg.model, dtype=torch.float32, device=accelerator.device,
                            trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
        if cfg.uses_reference:
            self._attach_reference(policy, train_set.pairs + (eval_set.pairs if eval_set else []))
        model = build_model(cfg, policy)
        collator = PairCollator(self.tokenizer.pad_token_id, cfg.uses_reference)
        loader = DataLoader(train_set, batch_size=cfg.batch_size,
                            sampler=EpochShuffleSampler(
                                len(train_set), cfg.seed, batch_size=cfg.batch_size,
                                lengths=train_set.lengths() if cfg.group_by_length else None),
                            collate_fn=collator)
        # fused on one CPU process that runs passes: no full-size temporaries (foreach's), the
        # same update within 1e-6; --pass-tokens 0 keeps the plain path bit for bit
        fused = (accelerator.device.type == "cpu" and accelerator.num_processes == 1
                 and pass_budget(cfg.pass_tokens, accelerator.device) > 0) or None
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.eval_loader = None
        if eval_set is not None:
            self.eval_loader = accelerator.prepare(DataLoader(
                eval_set, batch_size=cfg.eval_batch_size or cfg.batch_size, collate_fn=collator))
        self.batches = len(self.loader)  # micro-batches per epoch on this process
        self.steps_per_epoch = math.ceil(self.batches / cfg.grad_accum)
        self.total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        # Stepped by hand once per optimizer step (a prepared scheduler would step once per
        # process), and saved with each checkpoint.
        self.scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                       num_warmup_steps=math.ceil(cfg.warmup_ratio * self.total),
                                       num_training_steps=self.total)
        self.metrics = MetricsLog(out / METRICS)
        self.last_checkpoint = start.resume_from
        self.grad_norm: float | None = None

    def _datasets(self) -> tuple[Any, Any]:
        from realspo.training.data import PairDataset, read_pairs, split_eval

        cfg = self.cfg
        pairs = read_pairs(cfg.data, cfg.split)
        if cfg.eval_data:
            train_pairs, eval_pairs = pairs, read_pairs(cfg.eval_data, cfg.split)
        else:
            train_pairs, eval_pairs = split_eval(pairs, cfg.eval_fraction, cfg.seed)
        train_set = PairDataset(train_pairs, self.tokenizer, cfg.max_length, cfg.truncation,
                                cfg.chat_template)
        eval_set = (PairDataset(eval_pairs, self.tokenizer, cfg.max_length, cfg.truncation,
                                cfg.chat_template) if eval_pairs else None)
        self.truncated = train_set.truncated + (eval_set.truncated if eval_set else 0)
        self.merged = train_set.merged + (eval_set.merged if eval_set else 0)
        if self.acc.is_main_process:
            log.info("%d training pairs, %d evaluation pairs; %d pairs truncated to --max-length %d "
                     "(--truncation %s); %d with a token merged across the prompt/response "
                     "boundary (scored as response)", len(train_set), len(eval_set or []),
                     self.truncated, cfg.max_length, cfg.truncation, self.merged)
            if cfg.spo:
                from realspo.spo.variants import precompute_variants, variant_stats

                stats = variant_stats(precompute_variants(
                    [r for p in train_pairs for r in (p.chosen, p.rejected)], cfg.spo_config()))
                log.info("SPO: %d distinct responses graded into %d degree levels, %d skipped "
                         "(too few key phrases)", stats["graded"], cfg.spo_levels, stats["skipped"])
        return train_set, eval_set

    def _attach_reference(self, policy: torch.nn.Module, pairs: list[Any]) -> None:
        """Reference log-probs of every pair from the initial model, in the policy's precision
        (the main process computes and caches them first; the others read the cache)."""
        from realspo.training.prefix_tree import sharing_unsupported
        from realspo.training.reference import load_or_compute_reference

        cfg = self.cfg
        share = cfg.prefix_sharing != "off" and sharing_unsupported(policy, cfg.max_length) is None
        with self.acc.main_process_first(), self.acc.autocast():
            chosen, rejected, status = load_or_compute_reference(
                cfg.model, [p.as_row() for p in pairs], cfg.cache_dir or default_cache_dir(),
                max_length=cfg.max_length, truncation=cfg.truncation, model=policy,
                tokenizer=self.tokenizer, batch_size=2 * (cfg.eval_batch_size or cfg.batch_size),
                show_progress=self.acc.is_local_main_process, source=cfg.data,
                chat_template=cfg.chat_template, share_prefixes=share)
        for pair, c, r in zip(pairs, chosen.tolist(), rejected.tolist(), strict=True):
            pair.ref_chosen, pair.ref_rejected = c, r
        if self.acc.is_main_process:
            log.info("reference log-probs: %s", status)

    def _start(self) -> int:
        """Prepare ``OUT`` and restore a checkpoint; the step training continues from."""
        step, resume_from = 0, self.start.resume_from
        self.acc.wait_for_everyone()  # every process has checked OUT before it changes
        if resume_from is not None:
            step = int(restore_checkpoint(self.acc, self._parts(), resume_from)["step"])
            if step > self.total:  # a forged step would "finish" the run without training
                raise InputError(str(resume_from), f"a checkpoint at step {step}, beyond this "
                                                   f"run's {self.total} steps; not this run's")
            if self.acc.is_main_process:
                log.info("resuming from %s (step %d)", resume_from, step)
        elif self.start.restart and self.acc.is_main_process:
            log.info("--resume: %s has no checkpoint yet (stopped before the first one); starting "
                     "over from step 0 with its saved configuration", self.out)
        if self.acc.is_main_process:
            if resume_from is None:
                clear_run_dir(self.out)
            else:
                for path in remove_temporaries(self.out):
                    log.info("removed %s, left by an interrupted run", path)
                self.metrics.truncate_after(step)
            write_run_config(self.out, to_dict(self.cfg))
        self.acc.wait_for_everyone()
        return step

    # -- the loop --------------------------------------------------------------------------

    def run(self, on_batch: Callable[[int, list[int]], None] | None, stop_after: int | None
            ) -> Path | None:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.acc
        step = self._start()
        start_trackers(acc, to_dict(cfg), self.out)
        stop = self.total if stop_after is None else min(stop_after, self.total)
        window, first_record = self._window(), step == 0
        progress = tqdm(total=self.total, initial=step, desc="train", unit="step",
                        disable=not acc.is_local_main_process)
        epoch, skip = divmod(step, self.steps_per_epoch)
        skip *= cfg.grad_accum  # micro-batches of this epoch consumed before the checkpoint
        self.model.train()
        while step < stop:
            # accelerate's loader re-seeds its sampler with its own epoch counter on every
            # pass: set that counter (a resumed process starts it at 0).
            self.loader.set_epoch(epoch)
            loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
            for b, batch in enumerate(loader, start=skip):
                with acc.accumulate(self.model):
                    result = self._forward_backward(batch, step, spo_step=epoch * self.batches + b)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        self._clip(step + 1)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                window.add(result)
                if on_batch is not None:
                    on_batch(step + 1, batch["index"].tolist())
                if first_record:  # step 0: the first micro-batch, before any update
                    first = _Window(Metrics(METRIC_KEYS, torch.zeros_like(window.sums.values)),
                                    started=window.started)
                    self._log(0, first.add(result), truncated_pairs=self.truncated,
                              boundary_merged_pairs=self.merged)
                    first_record = False
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{result.loss.item():.4f}",
                                     acc=f"{result.per_pair['rewards/accuracies'].mean().item():.2f}")
                if step % cfg.logging_steps == 0 or step == self.total:
                    self._log(step, window)
                    window = self._window()
                if self.eval_loader is not None and cfg.eval_steps and step % cfg.eval_steps == 0:
                    self._evaluate(step)
                if cfg.save_steps and step % cfg.save_steps == 0:
                    self._save(step)
                after_batch()  # a no-op outside the kill-and-resume tests
                if step >= stop:
                    break
            epoch, skip = epoch + 1, 0
        progress.close()
        if step < self.total:
            return None  # stopped early by stop_after
        if self.eval_loader is not None and not (cfg.eval_steps and step % cfg.eval_steps == 0):
            self._evaluate(step)
        export_model(self.acc, self.model, self.tokenizer, self.cfg, self.out)
        end_trackers(acc)
        return self.out

    def _forward_backward(self, batch: dict[str, Any], step: int, spo_step: int) -> StepResult:
        """The micro-batch's loss and gradient: one forward/backward pass, or one per group of pairs."""
        # several processes keep one pass: each would need the same number of backward calls
        budget = pass_budget(self.cfg.pass_tokens, self.acc.device) if self.acc.num_processes == 1 else 0
        return run_passes(self.model, batch, self.settings, self.tokenizer, spo_step, budget, self.acc.backward,
                          check=lambda loss: check_finite(self.acc, loss, step + 1, self.last_checkpoint))

    def _window(self) -> _Window:
        return _Window(Metrics.zeros(METRIC_KEYS, device=self.acc.device))

    def _clip(self, step: int) -> None:
        norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.grad_norm = float(norm) if norm is not None else None
        # fp16 overflows are handled by the loss scaler (the step is skipped), not fatal
        if self.grad_norm is not None and not math.isfinite(self.grad_norm) \
                and self.acc.mixed_precision != "fp16":
            kept = self.last_checkpoint or "no checkpoint had been saved"
            raise TrainingDiverged(f"non-finite gradient norm at step {step}; stopped before updating "
                                   f"the model (last good checkpoint: {kept}); try a lower --lr")

    def _log(self, step: int, window: _Window, **extra: Any) -> None:
        """Reduce ``window`` over the processes and append one record (main process)."""
        counts = Metrics(("count", "tokens"), torch.tensor([window.count, window.tokens],
                                                            dtype=torch.float32, device=self.acc.device))
        packed = window.sums.float().cat(counts)  # one collective for the whole record
        totals = Metrics(packed.names, self.acc.reduce(packed.values, reduction="sum"))
        count, tokens = totals["count"].item(), totals["tokens"].item()
        if not self.acc.is_main_process:
            return
        record: dict[str, Any] = {"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                  "learning_rate": self.scheduler.get_last_lr()[0]}
        record.update(metric_record(totals.select(METRIC_KEYS), count, **self.shown))
        if step > 0 and self.grad_norm is not None:
            record["grad_norm"] = self.grad_norm
        record["tokens_per_second"] = tokens / max(time.perf_counter() - window.started, 1e-9)
        record["peak_memory_mb"] = peak_memory_mb()
        record.update(extra)
        self.metrics.write(record)
        self.acc.log(tracker_values(record), step=step)

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        """Metrics over the evaluation pairs (each counted once), as ``eval/*`` records."""
        self.model.eval()
        # Per-pair metrics are gathered (each pair once). Per-batch ones are summed with their
        # pair counts over every process; their mean per pair is scaled to the gathered pairs.
        rows, names = [], (*BATCH_METRICS, "count")
        batch_sums = Metrics.zeros(names, device=self.acc.device)
        for batch in self.eval_loader:
            result = forward_batch(self.model, batch, self.settings, self.tokenizer, spo_step=0)
            rows.append(self.acc.gather_for_metrics(result.per_pair.values))
            count = Metrics(("count",), torch.tensor([result.count], device=batch_sums.values.device))
            batch_sums = batch_sums + result.sums.select(BATCH_METRICS).cat(count)
        self.model.train()
        batch_sums = Metrics(names, self.acc.reduce(batch_sums.values, reduction="sum"))
        per_pair = Metrics(result.per_pair.names, torch.cat(rows))
        n = per_pair.values.shape[0]
        means = batch_sums.select(BATCH_METRICS).values / batch_sums["count"].clamp(min=1) * n
        sums = per_pair.sum().cat(Metrics(BATCH_METRICS, means))
        if self.acc.is_main_process:
            record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4)}
            record.update(metric_record(sums, n, **self.shown, prefix="eval/"))
            self.metrics.write(record)
            self.acc.log(tracker_values(record), step=step)

    def _parts(self) -> dict[str, Any]:
        """What a checkpoint holds besides the trainer state and RNG states."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.acc.scaler}

    def _save(self, step: int) -> None:
        epoch = step // self.steps_per_epoch
        state = {"step": step, "epoch": epoch, "total_steps": self.total,
                 "num_processes": self.acc.num_processes, "batches_per_epoch": self.batches,
                 "grad_accum": self.cfg.grad_accum}
        self.last_checkpoint = save_checkpoint(self.acc, self._parts(), self.out, step, state,
                                               keep=self.cfg.keep_checkpoints)
