"""The training loop (Hugging Face accelerate): one process or many (``accelerate launch``: DDP, FSDP),
mixed precision, gradient accumulation, clipping, packed multitask batches, MoE auxiliary losses,
atomic checkpoints with exact resume, metrics.jsonl + TensorBoard, periodic evaluation.

A step: draw the global batch (a pure function of seed and step), cut it into ``processes x grad_accum``
interleaved parts, run each part through :class:`~generalist_cli.train.step.StepModule` and divide every
loss sum by its *global* count, so any split of the batch gives the same loss and gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from generalist_cli.errors import GenError
from generalist_cli.recipe import Recipe, dump
from generalist_cli.train import checkpoint as ckpt_io
from generalist_cli.train.batches import Batch, TrainData, collate, read_rows
from generalist_cli.train.schedule import TrainClock, lr_factor
from generalist_cli.train.step import StepModule


class Interrupted(Exception):
    """Ctrl-C: a checkpoint was saved; the CLI exits 130."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__("interrupted")
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    evals: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None


def build_model(recipe: Recipe, ckpt: Path | None):
    """(model, tokenizer.json, old expert count) from a checkpoint or from the recipe's init (a store name,
    hub id or folder, resolved by the store: its tokenizer.json lies in the folder it was loaded from)."""
    from generalist_cli.model.upcycle import add_experts, upcycle
    from generalist_cli.store.load import load_model
    from generalist_cli.store.store import open_model

    m = recipe.model
    if ckpt is not None:
        loaded = load_model(ckpt)
        return loaded.model, ckpt / "tokenizer.json", ckpt_io.load_trainer(ckpt).get("old_experts", 0)
    if m.init == "scratch":
        model, tokenizer = _scratch(m)
    else:
        loaded = open_model(m.init, adapters=False)  # the base weights: shipped adapters are not trained on
        model, tokenizer = loaded.model, loaded.path / "tokenizer.json"
    if m.upcycle and not model.config.generalist:
        # a scratch model's embeddings already start at one scale (see _scratch): no text scale there
        text_scale = 1.0 if m.init == "scratch" else None
        model = upcycle(model, **m.upcycle_kwargs(), seed=recipe.run.seed, text_scale=text_scale)
    if model.config.generalist:
        model = _with_config(model, _final_config(model.config, m))
    old = model.config.n_experts
    if m.add_experts:
        model = add_experts(model, m.add_experts, init=m.add_experts_init)
    if m.adapter:
        from generalist_cli.features.tokenizer import Tokenizer
        from generalist_cli.model.adapters import add_adapters

        token = Tokenizer(tokenizer, multilingual=model.config.multilingual).language_token(m.adapter)
        model = add_adapters(model, m.adapter, m.adapter_rank, token)
    return model, tokenizer, old


def _final_config(c, m):
    """The generalist config ``m`` (the recipe's model section) asks for on top of the init's ``c``: the video
    motion stream and tokens, the speech head's depth, the TTS input. A pure function."""
    return dataclasses.replace(
        c,
        video_motion=c.video_motion or m.video_motion,
        video_tokens=m.video_tokens,
        speech_layers=m.speech_layers or c.speech_layers,
        tts_input=m.tts_input,
    )


def _with_config(model, config):
    """``model`` as built from ``config``: a new model made from the final config, the old weights loaded
    where they fit (by name and shape); new parts keep their construction init (the motion stream starts at
    zero, so the function is unchanged until trained). The same model when nothing changed."""
    if config == model.config:
        return model
    from generalist_cli.model.generalist import Generalist

    p = next(model.parameters())
    new = Generalist(config).to(device=p.device, dtype=p.dtype).train(model.training)
    target = new.state_dict()
    old = model.state_dict()
    if config.speech_layers != model.config.speech_layers:  # a new speech head: none of the old one's layers
        old = {k: v for k, v in old.items() if not k.startswith("speech_head.")}
    misfits = [k for k, v in old.items() if k not in target or target[k].shape != v.shape]
    if misfits:
        raise ValueError(f"weights that do not fit the final config: {misfits[:3]}")
    new.load_state_dict(old, strict=False)
    return new


def _scratch(m):
    """A randomly initialised Whisper-shaped model of the recipe's scratch size and tokenizer's vocabulary."""
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.store import tokenizer_for

    path = tokenizer_for(m.tokenizer)
    multilingual = Tokenizer(path, multilingual=True).eot == 50257  # English-only vocabularies end text at 50256
    w, layers, heads = m.scratch_width, m.scratch_layers, m.scratch_heads
    cfg = ModelConfig(
        n_audio_state=w,
        n_text_state=w,
        n_audio_head=heads,
        n_text_head=heads,
        n_audio_layer=layers,
        n_text_layer=layers,
        n_audio_ffn=4 * w,
        n_text_ffn=4 * w,
        n_vocab=51865 if multilingual else 51864,
    )
    model = Generalist(cfg)
    with torch.no_grad():
        # every embedding at one scale, N(0, 0.02) as GPT-2 and transformers' Whisper init (nn.Embedding's own
        # N(0, 1) decoder positions would drown the tokens 50:1), and Whisper's fixed sinusoidal encoder
        # positions scaled to the same RMS, so text entering the encoder keeps its token identity
        model.decoder.embed_tokens.weight.normal_(0, 0.02)
        model.decoder.embed_positions.weight.normal_(0, 0.02)
        pos = model.encoder.embed_positions.weight
        pos.mul_(0.02 / pos.pow(2).mean().sqrt())
    return model, path


def freeze_unused(model, recipe: Recipe) -> None:
    """``model.adapter``: only the language adapter trains (the base model stays bit-identical).
    ``model.train_encoder = false``: the encoder and what feeds only it (the modality embeddings, the video
    front-end) stop training, so audio goes through the encoder without autograd: no activations kept for it
    and no backward through it (a trainable modality embedding alone made the whole encoder run backward)."""
    if recipe.model.adapter:  # an adapter trains alone: the base model stays bit-identical
        for name, p in model.named_parameters():
            p.requires_grad_(".adapters.by_lang." in name)
        return
    if recipe.model.train_encoder:
        return
    for part in (model.encoder, getattr(model, "modality_embedding", None), getattr(model, "video", None)):
        for p in part.parameters() if part is not None else ():
            p.requires_grad_(False)


def _ttt_inner_ratio(model, capture: dict) -> float | None:
    """Inner loss after / before one TTT update on the captured input of the first TTT layer."""
    x = capture.get("x")
    layer = capture.get("layer")
    if x is None or layer is None:
        return None
    with torch.no_grad():
        return layer.inner_loss_ratio(x[:1, : layer.mini_batch].float())


def check_sources(recipe: Recipe) -> None:
    """Every data source is a prepared dataset: one error naming each missing one with the ``gen prepare``
    command that makes it (from the recipe's header, where recipes show their commands)."""
    from generalist_cli.data.prepare import STAMP

    header = [line.lstrip("# ").strip() for line in _recipe_text(recipe).splitlines() if line.startswith("#")]
    missing = []
    for s in recipe.data.sources:
        path = Path(s.path)
        if (path / "dataset_dict.json").exists() or (path / STAMP).exists():
            continue
        cmd = next((c for c in header if c.startswith("gen prepare") and s.path in c.split()), None)
        missing.append(f"{s.path} (make it with: {cmd or 'gen prepare ... --out ' + s.path})")
    if missing:
        raise GenError(
            f"{recipe.path or 'the recipe'}: no prepared dataset at " + "; ".join(missing),
            hint="prepare the data first, then train",
        )


def _recipe_text(recipe: Recipe) -> str:
    try:
        return Path(recipe.path).read_text(encoding="utf-8") if recipe.path else ""
    except OSError:
        return ""


def combine_losses(ce, mel, dur, *, n_tok: int, n_mel: int, n_dur: int, t) -> "torch.Tensor | float":
    """The training loss from its sums and *global* counts (tensors for backward, floats for the logs):
    CE per target token + mel L1 per value + log-duration MSE per phoneme, weighted by the recipe."""
    return ce / n_tok + t.mel_loss_coef * mel / n_mel + t.duration_loss_coef * dur / n_dur


@dataclass
class StepLog:
    """What one optimizer step returns (the loop logs it; nothing is kept on the trainer)."""

    step: int
    loss: float  # combine_losses: what a checkpoint's quality is judged by
    loss_with_aux: float  # + the MoE balance and z losses
    ce: float
    mel_l1: float | None
    aux: float
    z: float
    lr: float
    grad_norm: float | None
    tokens: int
    examples: int
    padding: float
    per_task: dict[str, float]
    expert_counts: "torch.Tensor | None" = None
    router_entropy: float | None = None


class Trainer:
    """One training run in parts (torchtune's recipe shape): the constructor sets up the accelerator, model,
    optimizer, data and logs (resuming from the run's last checkpoint); :meth:`step` runs one optimizer step
    and returns its :class:`StepLog`; :meth:`evaluate`, :meth:`save` and :meth:`close` do the rest. The
    schedule (when to log, evaluate, save and stop) is :func:`train`'s."""

    def __init__(self, recipe: Recipe, *, resume: bool = False, on_warn: Callable[[str], None] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from generalist_cli.features.tokenizer import Tokenizer
        from generalist_cli.model.upcycle import freeze_experts

        self.recipe, self.t = r, t = recipe, recipe.train
        cuda = torch.cuda.is_available()
        if t.mixed_precision == "fp16" and not cuda:
            raise GenError("train.mixed_precision = fp16 needs a GPU", hint="use bf16 or no on a CPU")
        self.acc = acc = Accelerator(
            mixed_precision=t.mixed_precision,
            cpu=not cuda,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.parts = acc.num_processes * t.grad_accum
        if t.batch_size < self.parts:
            raise GenError(f"train.batch_size {t.batch_size} is smaller than processes x grad_accum = {self.parts}")
        if t.warmup_steps > t.max_steps and on_warn and acc.is_main_process:
            on_warn(
                f"warm-up ({t.warmup_steps} steps) is longer than training ({t.max_steps} steps): the learning "
                f"rate only reaches {t.max_steps / t.warmup_steps:.0%} of {t.lr:g}"
            )
        self.run_dir = Path(r.run.out) / r.run.name
        check_sources(r)  # before any model work
        ckpt = self._checkpoint_to_resume(resume)
        set_seed(r.run.seed)
        model, tokenizer_path, n_old = build_model(r, ckpt)
        origin = ckpt or (tokenizer_path.parent if r.model.init != "scratch" else None)  # the folder it came from
        if ckpt is not None and acc.is_main_process:  # keep_last may delete the checkpoint this run resumed from
            tokenizer_path = self._keep_tokenizer(tokenizer_path)
        self.model = model = model.to(acc.device)
        c = model.config
        self.tokenizer = Tokenizer(
            tokenizer_path, multilingual=c.multilingual, extra_tokens=c.extra_tokens, n_vocab=c.n_vocab
        )
        self.tokenizer_path = tokenizer_path
        freeze_unused(model, r)
        self.freezer = (
            freeze_experts(model, n_old) if r.model.freeze_old_experts and n_old and c.n_experts > n_old else None
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
        trainer_state = ckpt_io.load_trainer(ckpt) if ckpt is not None else {}
        if ckpt is not None:
            ckpt_io.load_optimizer(ckpt, optimizer)
        self.start = self.step_no = trainer_state.get("step", 0)
        self.data = TrainData(r.data.sources, tokenizer=tokenizer_path)
        self.tasks = sorted(self.data.tasks() | (_tasks_of(origin) if origin is not None else set()))
        if r.model.output_tokens == "targets" and not c.output_tokens:  # (a checkpoint keeps the set it had)
            model.config = dataclasses.replace(c, output_tokens=self.data.target_vocabulary(self.tokenizer.eot))
        self.eval_data = self._eval_data()
        self.step_module, self.optimizer = acc.prepare(StepModule(model, capacity=r.data.capacity), optimizer)
        if ckpt is not None:
            ckpt_io.set_rng_state(trainer_state["rng"])
        self.writer = self._open_logs(resumed=ckpt is not None)
        self.state = {"old_experts": n_old}
        self.clock = TrainClock(trainer_state.get("train_s", 0.0))
        self.released = (
            any(bool(torch.isfinite(m.logit_bias).all()) for m in _moes(model)) if c.n_experts > n_old else True
        )
        self.ttt_layers = [b.ttt for b in model.encoder.layers if getattr(b, "ttt", None) is not None]

    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        ckpt = ckpt_io.latest(self.run_dir) if resume else None
        if resume and ckpt is None:
            raise GenError(f"{self.run_dir}: no checkpoint to resume from", hint="run without --resume to start")
        if not resume and ckpt_io.latest(self.run_dir) is not None:
            raise GenError(
                f"{self.run_dir}: already holds checkpoints",
                hint="pass --resume to continue, or --set run.name=NEW for a new run",
            )
        return ckpt

    def _keep_tokenizer(self, path: Path) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stable = self.run_dir / "tokenizer.json"
        shutil.copyfile(path, stable.with_name("tokenizer.json.tmp"))
        os.replace(stable.with_name("tokenizer.json.tmp"), stable)
        return stable

    def _eval_data(self) -> TrainData:
        r = self.recipe
        eval_data = TrainData(
            r.data.sources, split_attr="eval_split", max_examples=r.eval.max_examples, tokenizer=self.tokenizer_path
        )
        if r.eval.train_examples:  # the same scores on training examples (memorisation vs generalisation)
            seen = TrainData(r.data.sources, max_examples=r.eval.train_examples, tokenizer=self.tokenizer_path)
            eval_data.sets += seen.sets
            eval_data.names += [f"{n}/train" for n in seen.names]
        return eval_data

    def _open_logs(self, *, resumed: bool):
        if not self.acc.is_main_process:
            return None
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.resolved.toml").write_text(dump(self.recipe))
        if resumed:  # rows logged after the checkpoint will be logged again
            for log in (self.run_dir / "metrics.jsonl", self.run_dir / "eval.jsonl"):
                _truncate_log(log, self.start)
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _stop(self, what: str) -> GenError:
        return GenError(
            f"{what}; the run stopped",
            hint=f"lower train.lr; the last good checkpoint is {ckpt_io.latest(self.run_dir)}",
        )

    def step(self, *, time_left: float = 1.0, watch_ttt: bool = False) -> StepLog:
        """One optimizer step over the batch the seed and step number draw. ``time_left``: the share of a
        wall-clock budget left (the linear decay follows it); ``watch_ttt``: keep the first TTT layer's input
        for the inner-loss ratio the log reports."""
        from generalist_cli.model.upcycle import release_new_experts

        r, t, acc = self.recipe, self.t, self.acc
        if not self.released and self.step_no >= t.release_new_experts_at:
            release_new_experts(self.model)
            self.released = True
        pairs = self.data.draw(
            seed=r.run.seed, step=self.step_no, n=t.batch_size, sampling=t.sampling, capacity=r.data.capacity
        )
        batch = collate(
            self.data.rows(pairs),
            self.tokenizer,
            max_target_tokens=r.data.max_target_tokens,
            phonemes=self.model.config.tts_input == "phonemes",
        )
        if t.pose_augment:
            augment_landmarks(batch, seed=(r.run.seed, self.step_no))
        if t.spec_augment:
            augment_mels(batch, seed=(r.run.seed, self.step_no))
        hook = None
        if watch_ttt and self.ttt_layers:
            self._capture = {"layer": self.ttt_layers[0]}
            hook = self.ttt_layers[0].register_forward_pre_hook(
                lambda mod, args: self._capture.__setitem__("x", args[0].detach())
            )
        counts_of = self._counts(batch)
        try:
            sums, per_task, counts, entropy = self._accumulate(batch, counts_of)
        finally:
            if hook is not None:
                hook.remove()
        grad_norm = acc.clip_grad_norm_(self.params, t.clip) if t.clip > 0 else None
        lr = t.lr * lr_factor(
            self.step_no, warmup=t.warmup_steps, total=t.max_steps, schedule=t.schedule, time_left=time_left
        )
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        try:
            self.optimizer.step()
        except (RuntimeError, OverflowError) as exc:
            raise self._stop(f"the optimizer step failed at step {self.step_no + 1} ({exc})") from exc
        self.optimizer.zero_grad(set_to_none=True)
        if self.freezer is not None:
            self.freezer.restore()
        self.step_no += 1
        return self._log(batch, counts_of, acc.reduce(sums, reduction="sum"), per_task, counts, entropy, lr, grad_norm)

    def _counts(self, batch: Batch) -> dict[str, int]:
        ex = batch.examples
        return {
            "n_tok": max(1, batch.n_target_tokens),
            "n_mel": max(1, sum(e.tgt_mel.numel() for e in ex if e.tgt_mel is not None)),
            "n_dur": max(1, sum(len(e.durations) for e in ex if e.durations is not None)),
        }

    def _accumulate(self, batch: Batch, counts_of: dict[str, int]):
        """Forward and backward over the ``processes x grad_accum`` parts of ``batch``: (sums of ce, mel, dur,
        aux, z, padding; per-task CE sums and counts; expert counts; router entropy)."""
        t, acc, parts = self.t, self.acc, self.parts
        world, rank = acc.num_processes, acc.process_index
        ex = batch.examples
        sums = torch.zeros(6, device=acc.device)
        per_task: dict[str, list] = {}
        counts = entropy = None
        for micro in range(t.grad_accum):
            part = Batch(ex[micro * world + rank :: parts])
            sync = contextlib.nullcontext() if micro == t.grad_accum - 1 else acc.no_sync(self.step_module)
            with sync:
                with acc.autocast():
                    out = self.step_module(part)
                loss = world * combine_losses(out["ce_sum"], out["mel_sum"], out["dur_sum"], **counts_of, t=t)
                if "aux" in out:
                    loss = loss + (t.aux_loss_coef * out["aux"] + t.z_loss_coef * out["z"]) / t.grad_accum
                    counts = out["expert_counts"] if counts is None else counts + out["expert_counts"]
                    entropy = out.get("router_entropy")
                if not torch.isfinite(loss):
                    raise self._stop(f"the loss became {float(loss)} at step {self.step_no + 1}")
                acc.backward(loss)
            sums += torch.stack(
                [
                    out["ce_sum"].detach().float(),
                    out["mel_sum"].detach().float(),
                    out["dur_sum"].detach().float(),
                    out.get("aux", torch.zeros(())).detach().float() / parts,
                    out.get("z", torch.zeros(())).detach().float() / parts,
                    torch.tensor(out["padding"] / parts),
                ]
            ).to(acc.device)
            for k, (v, n) in out["per_task"].items():
                a = per_task.setdefault(k, [0.0, 0])
                a[0] += v
                a[1] += n
        return sums, per_task, counts, entropy

    def _log(self, batch: Batch, counts_of: dict[str, int], sums, per_task, counts, entropy, lr, grad_norm) -> StepLog:
        t, c = self.t, counts_of
        total = combine_losses(float(sums[0]), float(sums[1]), float(sums[2]), **c, t=t)
        total_with_aux = total + t.aux_loss_coef * float(sums[3]) + t.z_loss_coef * float(sums[4])
        if not math.isfinite(total_with_aux):
            raise self._stop(f"the loss became {total_with_aux} at step {self.step_no}")
        return StepLog(
            step=self.step_no,
            loss=total,
            loss_with_aux=total_with_aux,
            ce=float(sums[0]) / c["n_tok"],
            mel_l1=float(sums[1]) / c["n_mel"] if sums[1] else None,
            aux=float(sums[3]),
            z=float(sums[4]),
            lr=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else None,
            tokens=batch.n_target_tokens,
            examples=len(batch.examples),
            padding=float(sums[5]) / self.acc.num_processes,
            per_task={k: v / max(1, n) for k, (v, n) in per_task.items()},
            expert_counts=counts,
            router_entropy=entropy,
        )

    def metrics_row(self, log: StepLog, *, seconds: float, tokens: int, examples: int) -> dict:
        """The metrics.jsonl row of ``log``: rates over the window of steps since the last row."""
        row = {
            "step": log.step,
            "train_s": round(self.clock.seconds(), 1),
            "loss": log.loss,
            "loss_with_aux": log.loss_with_aux,
            "ce": log.ce,
            "mel_l1": log.mel_l1,
            "aux": log.aux,
            "z": log.z,
            "lr": log.lr,
            "grad_norm": log.grad_norm,
            "tokens_per_s": tokens / seconds,
            "examples_per_s": examples / seconds,
            "padding": log.padding,
            "tasks": log.per_task,
        }
        if log.expert_counts is not None:
            counts = log.expert_counts
            frac = (counts.float() / counts.sum(-1, keepdim=True).clamp_min(1)).tolist()
            row["expert_util"] = [[round(x, 4) for x in layer] for layer in frac]
            row["router_entropy"] = log.router_entropy
        if self.ttt_layers:
            row["ttt_gate"] = float(
                torch.stack([torch.tanh(b.ttt_gate.detach()).abs().mean() for b in self.model.encoder.layers]).mean()
            )
            row["ttt_inner_loss_ratio"] = _ttt_inner_ratio(self.model, getattr(self, "_capture", {}))
        return row

    def write_metrics(self, row: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        for k, v in _flat(row).items():
            self.writer.add_scalar(f"train/{k}", v, row["step"])

    def evaluate(self) -> dict | None:
        """Scores on the eval splits now (main process; evaluation time is not training time), written to
        eval.jsonl and TensorBoard; None where there is nothing to score."""
        if not self.acc.is_main_process or not self.eval_data.sets:
            return None
        with self.clock.paused():
            row = {
                "step": self.step_no,
                "train_s": round(self.clock.seconds(), 1),
                **run_eval(self.acc.unwrap_model(self.step_module).model, self.tokenizer, self.eval_data, self.recipe),
            }
        with open(self.run_dir / "eval.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        for k, v in _flat(row).items():
            self.writer.add_scalar(f"eval/{k}", v, self.step_no)
        return row

    def save(self) -> Path | None:
        """A checkpoint of this step (atomic; model, optimizer, RNG, clock); its path on the main process."""
        acc = self.acc
        with self.clock.paused():
            acc.wait_for_everyone()
            path = None
            self.state["train_s"] = self.clock.seconds()
            if acc.is_main_process:
                path = ckpt_io.save(
                    self.run_dir,
                    step=self.step_no,
                    model=acc.unwrap_model(self.step_module).model,
                    tokenizer=self.tokenizer_path,
                    optimizer=self.optimizer,
                    trainer=self.state,
                    keep_last=self.t.keep_last,
                    tasks=self.tasks,
                )
            acc.wait_for_everyone()
        return path

    def interrupted(self) -> Interrupted:
        """Ctrl-C: the step's gradients dropped, a checkpoint saved when this run made progress."""
        self.optimizer.zero_grad(set_to_none=True)
        return Interrupted(self.save() if self.step_no > self.start else ckpt_io.latest(self.run_dir))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    on_step: Callable[[int, float, float], None] | None = None,
    on_warn: Callable[[str], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Run ``recipe`` to ``train.max_steps`` or its ``train.max_minutes``: log every ``log_every`` steps,
    evaluate every ``eval.every`` steps or ``eval.every_minutes`` of training, save every ``save_every``."""
    trainer = Trainer(recipe, resume=resume, on_warn=on_warn)
    t, ev, clock, main = recipe.train, recipe.eval, trainer.clock, trainer.acc.is_main_process
    budget_s, gap = t.max_minutes * 60, ev.every_minutes * 60
    result = TrainResult(trainer.run_dir, trainer.start, float("nan"))
    periodic = bool(ev.every or ev.every_minutes)
    next_eval_s = (math.floor(clock.seconds() / gap) + 1) * gap if gap else math.inf
    window = {"tokens": 0, "examples": 0, "time": clock.seconds()}

    def evaluate() -> None:
        row = trainer.evaluate()
        if row is not None:
            result.evals.append(row)
            if on_eval:
                on_eval(row)

    try:
        if periodic and trainer.start == 0:
            evaluate()
        while trainer.step_no < t.max_steps and clock.left(budget_s) > 0:
            logging = (trainer.step_no + 1) % t.log_every == 0 or trainer.step_no + 1 == t.max_steps
            log = trainer.step(time_left=clock.left(budget_s), watch_ttt=logging)
            result.step, result.loss = log.step, log.loss
            window["tokens"] += log.tokens
            window["examples"] += log.examples
            last = log.step == t.max_steps or clock.left(budget_s) == 0
            seconds = max(1e-9, clock.seconds() - window["time"])
            if on_step and main:
                on_step(log.step, log.loss, window["examples"] / seconds)
            if (logging or last) and main:
                trainer.write_metrics(
                    trainer.metrics_row(log, seconds=seconds, tokens=window["tokens"], examples=window["examples"])
                )
                window = {"tokens": 0, "examples": 0, "time": clock.seconds()}
            if not last and ((ev.every and log.step % ev.every == 0) or clock.seconds() >= next_eval_s):
                evaluate()
                while next_eval_s <= clock.seconds():
                    next_eval_s += gap
            if log.step % t.save_every == 0 or last:
                result.checkpoint = trainer.save()
        if periodic or not result.evals:
            evaluate()
    except KeyboardInterrupt:
        raise trainer.interrupted() from None
    finally:
        trainer.close()
    return result


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of a JSON-lines log up to ``step`` (a run killed after its last checkpoint logged steps
    that the resumed run repeats; a line cut by the kill is dropped)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)


def _tasks_of(path: Path) -> set[str]:
    """Tasks a checkpoint (or the model a run starts from) was trained on, from its meta.json."""
    try:
        return set(json.loads((path / "meta.json").read_text()).get("tasks") or ())
    except (OSError, ValueError):
        return set()


def _moes(model):
    from generalist_cli.model.upcycle import moe_layers

    return moe_layers(model)


def _flat(row: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v):
            out[prefix + k] = float(v)
    return out


def run_eval(model, tokenizer, eval_data: TrainData, recipe: Recipe) -> dict:
    """Per source: CE per token and teacher-forced accuracy on the eval split, and the text scores of greedy
    outputs for text targets (WER/CER; BLEU/chrF for translation; top-1 for signs)."""
    from generalist_cli.evaluate.decode import greedy_texts, token_loss
    from generalist_cli.evaluate.metrics import text_scores

    was_training = model.training
    model.eval()
    out = {}
    try:
        for name, ds in zip(eval_data.names, eval_data.sets):
            rows = read_rows([ds], [(0, i) for i in range(len(ds))])
            batch = collate(
                rows,
                tokenizer,
                max_target_tokens=recipe.data.max_target_tokens,
                phonemes=model.config.tts_input == "phonemes",
            )
            entry = token_loss(model, batch.examples, batch_size=recipe.eval.batch_size, capacity=recipe.data.capacity)
            speech = [(e, rw) for e, rw in zip(batch.examples, rows) if e.task == "tts"]
            if speech:  # text -> speech: mel L1 with teacher-forced durations
                from generalist_cli.evaluate.report import tts_scores

                entry["mel_l1"] = tts_scores(
                    model, [e for e, _ in speech], [rw for _, rw in speech], False, asr_model=None
                )["mel_l1"]
            text_ex = [(e, rw) for e, rw in zip(batch.examples, rows) if e.task != "tts"][: recipe.eval.wer_examples]
            if text_ex:
                hyps = greedy_texts(
                    model,
                    tokenizer,
                    [e for e, _ in text_ex],
                    max_new_tokens=recipe.eval.max_new_tokens,
                    langs=[str(rw["lang"]) for _, rw in text_ex],
                )
                refs = [str(rw["text"]) for _, rw in text_ex]
                first = text_ex[0][1]
                entry.update(
                    text_scores(refs, hyps, lang=str(first["lang"]), task=str(first["task"])),
                    examples=len(refs),
                    sample={"ref": refs[0], "hyp": hyps[0]},
                )
            out[name] = entry
    finally:
        model.train(was_training)
    return out


def augment_mels(batch, *, seed: tuple[int, ...]) -> None:
    """Each audio example's log-mel of ``batch`` masked by SpecAugment
    (:func:`generalist_cli.features.mel.spec_augment`), drawn from ``seed`` and the example's place in the
    batch (a resumed run draws the same)."""
    import numpy as np

    from generalist_cli.features.mel import spec_augment

    for i, e in enumerate(batch.examples):
        if e.modality == "audio":
            mel = spec_augment(e.source.float().numpy(), np.random.default_rng([*seed, i]))
            e.source = torch.from_numpy(mel).to(e.source.dtype)


def augment_landmarks(batch, *, seed: tuple[int, ...]) -> None:
    """Each landmark clip of ``batch`` replaced by a training variant (:func:`generalist_cli.features.pose.augment`),
    drawn from ``seed`` and the clip's place in the batch (a resumed run draws the same)."""
    import numpy as np

    from generalist_cli.features.pose import augment

    for i, e in enumerate(batch.examples):
        if e.modality == "video" and e.grid is None:
            e.source = torch.from_numpy(augment(e.source.numpy(), np.random.default_rng([*seed, i])))
