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
        loaded = open_model(m.init)
        model, tokenizer = loaded.model, loaded.path / "tokenizer.json"
    if m.upcycle and not model.config.generalist:
        # a scratch model's embeddings already start at one scale (see _scratch): no text scale there
        model = upcycle(model, n_experts=m.experts, top_k=m.top_k, ttt=m.ttt, seed=recipe.run.seed,
                        text_scale=1.0 if m.init == "scratch" else None, segments=m.segments, shared=m.shared_experts,
                        conformer=m.encoder == "conformer", peer_experts=m.peer_experts, peer_top_k=m.peer_top_k)
    if m.video_motion and model.config.generalist and not model.config.video_motion:
        model.video.add_motion()
        model.config = dataclasses.replace(model.config, video_motion=True)
    if model.config.generalist and m.video_tokens != model.config.video_tokens:
        model.video.set_tokens(m.video_tokens)
        model.config = dataclasses.replace(model.config, video_tokens=m.video_tokens)
    c = model.config
    if c.generalist and m.speech_layers and m.speech_layers != c.speech_layers:
        from generalist_cli.model.heads import SpeechHead

        model.config = c = dataclasses.replace(c, speech_layers=m.speech_layers)
        model.speech_head = SpeechHead(c.n_audio_state, c.n_speech_mels, progress=c.speech_progress,
                                       layers=c.speech_layers).to(next(model.parameters()).dtype)
    if c.generalist and m.tts_input != c.tts_input:
        model.config = dataclasses.replace(c, tts_input=m.tts_input)
    old = model.config.n_experts
    if m.add_experts:
        model = add_experts(model, m.add_experts, init=m.add_experts_init)
    return model, tokenizer, old


def _scratch(m):
    """A randomly initialised Whisper-shaped model of the recipe's scratch size and tokenizer's vocabulary."""
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.store import tokenizer_for

    path = tokenizer_for(m.tokenizer)
    multilingual = Tokenizer(path, multilingual=True).eot == 50257  # English-only vocabularies end text at 50256
    w, layers, heads = m.scratch_width, m.scratch_layers, m.scratch_heads
    cfg = ModelConfig(n_audio_state=w, n_text_state=w, n_audio_head=heads, n_text_head=heads, n_audio_layer=layers,
                      n_text_layer=layers, n_audio_ffn=4 * w, n_text_ffn=4 * w, n_vocab=51865 if multilingual else 51864)
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
    """``model.train_encoder = false``: the encoder and what feeds only it (the modality embeddings, the video
    front-end) stop training, so audio goes through the encoder without autograd: no activations kept for it
    and no backward through it (a trainable modality embedding alone made the whole encoder run backward)."""
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


def train(recipe: Recipe, *, resume: bool = False, on_step: Callable[[int, float, float], None] | None = None,
          on_warn: Callable[[str], None] | None = None, on_eval: Callable[[dict], None] | None = None) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.upcycle import freeze_experts, release_new_experts

    r, t = recipe, recipe.train
    cuda = torch.cuda.is_available()
    if t.mixed_precision == "fp16" and not cuda:
        raise GenError("train.mixed_precision = fp16 needs a GPU", hint="use bf16 or no on a CPU")
    acc = Accelerator(mixed_precision=t.mixed_precision, cpu=not cuda,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    world, rank = acc.num_processes, acc.process_index
    parts = world * t.grad_accum
    if t.batch_size < parts:
        raise GenError(f"train.batch_size {t.batch_size} is smaller than processes x grad_accum = {parts}")
    if t.warmup_steps > t.max_steps and on_warn and acc.is_main_process:
        on_warn(f"warm-up ({t.warmup_steps} steps) is longer than training ({t.max_steps} steps): the learning "
                f"rate only reaches {t.max_steps / t.warmup_steps:.0%} of {t.lr:g}")
    run_dir = Path(r.run.out) / r.run.name
    ckpt = ckpt_io.latest(run_dir) if resume else None
    if resume and ckpt is None:
        raise GenError(f"{run_dir}: no checkpoint to resume from", hint="run without --resume to start")
    if not resume and ckpt_io.latest(run_dir) is not None:
        raise GenError(f"{run_dir}: already holds checkpoints",
                       hint="pass --resume to continue, or --set run.name=NEW for a new run")
    set_seed(r.run.seed)
    model, tokenizer_path, n_old = build_model(r, ckpt)
    if ckpt is not None and acc.is_main_process:  # keep_last may delete the checkpoint this run resumed from
        run_dir.mkdir(parents=True, exist_ok=True)
        stable = run_dir / "tokenizer.json"
        shutil.copyfile(tokenizer_path, stable.with_name("tokenizer.json.tmp"))
        os.replace(stable.with_name("tokenizer.json.tmp"), stable)
        tokenizer_path = stable
    model = model.to(acc.device)
    c = model.config
    tokenizer = Tokenizer(tokenizer_path, multilingual=c.multilingual, extra_tokens=c.extra_tokens, n_vocab=c.n_vocab)
    freeze_unused(model, r)
    freezer = freeze_experts(model, n_old) if r.model.freeze_old_experts and n_old and c.n_experts > n_old else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    start, trainer_state = 0, {}
    if ckpt is not None:
        trainer_state = ckpt_io.load_trainer(ckpt)
        ckpt_io.load_optimizer(ckpt, optimizer)
        start = trainer_state["step"]
    data = TrainData(r.data.sources, tokenizer=tokenizer_path)
    origin = ckpt or (tokenizer_path.parent if r.model.init != "scratch" else None)  # the folder it came from
    tasks = sorted(data.tasks() | (_tasks_of(origin) if origin is not None else set()))
    if r.model.output_tokens == "targets" and not c.output_tokens:  # (a checkpoint keeps the set it had)
        model.config = c = dataclasses.replace(c, output_tokens=data.target_vocabulary(tokenizer.eot))
    eval_data = TrainData(r.data.sources, split_attr="eval_split", max_examples=r.eval.max_examples,
                          tokenizer=tokenizer_path)
    if r.eval.train_examples:  # the same scores on training examples (memorisation vs generalisation)
        seen = TrainData(r.data.sources, max_examples=r.eval.train_examples, tokenizer=tokenizer_path)
        eval_data.sets += seen.sets
        eval_data.names += [f"{n}/train" for n in seen.names]
    step_module, optimizer = acc.prepare(StepModule(model, capacity=r.data.capacity), optimizer)
    if ckpt is not None:
        ckpt_io.set_rng_state(trainer_state["rng"])
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.resolved.toml").write_text(dump(r))
    writer = None
    if acc.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    metrics_path = run_dir / "metrics.jsonl"
    if ckpt is not None and acc.is_main_process:  # rows logged after the checkpoint will be logged again
        for log in (metrics_path, run_dir / "eval.jsonl"):
            _truncate_log(log, start)
    result = TrainResult(run_dir, start, float("nan"))
    state = {"old_experts": n_old}
    clock, budget_s = TrainClock(trainer_state.get("train_s", 0.0)), t.max_minutes * 60

    def save(step: int) -> Path | None:
        acc.wait_for_everyone()
        path = None
        state["train_s"] = clock.seconds()
        if acc.is_main_process:
            path = ckpt_io.save(run_dir, step=step, model=acc.unwrap_model(step_module).model,
                                tokenizer=tokenizer_path, optimizer=optimizer, trainer=state, keep_last=t.keep_last,
                                tasks=tasks)
        acc.wait_for_everyone()
        return path

    def evaluate(step: int) -> None:
        if not acc.is_main_process or not eval_data.sets:
            return
        row = {"step": step, "train_s": round(clock.seconds(), 1),
               **run_eval(acc.unwrap_model(step_module).model, tokenizer, eval_data, r)}
        result.evals.append(row)
        with open(run_dir / "eval.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        for k, v in _flat(row).items():
            writer.add_scalar(f"eval/{k}", v, step)
        if on_eval:
            on_eval(row)

    capture: dict = {}
    ttt_layers = [b.ttt for b in model.encoder.layers if getattr(b, "ttt", None) is not None]
    step = start
    released = any(bool(torch.isfinite(m.logit_bias).all()) for m in _moes(model)) if c.n_experts > n_old else True
    window = {"tokens": 0, "examples": 0, "time": clock.seconds(), "loss": 0.0, "n": 0}
    periodic = bool(r.eval.every or r.eval.every_minutes)
    eval_gap = r.eval.every_minutes * 60
    next_eval_s = (math.floor(clock.seconds() / eval_gap) + 1) * eval_gap if eval_gap else math.inf
    if periodic and start == 0:
        with clock.paused():
            evaluate(0)
    try:
        while step < t.max_steps and clock.left(budget_s) > 0:
            if not released and step >= t.release_new_experts_at:
                release_new_experts(model)
                released = True
            pairs = data.draw(seed=r.run.seed, step=step, n=t.batch_size, sampling=t.sampling, capacity=r.data.capacity)
            batch = collate(data.rows(pairs), tokenizer, max_target_tokens=r.data.max_target_tokens,
                            phonemes=model.config.tts_input == "phonemes")
            ex = batch.examples
            n_tok = max(1, batch.n_target_tokens)
            n_mel = max(1, sum(e.tgt_mel.numel() for e in ex if e.tgt_mel is not None))
            n_dur = max(1, sum(len(e.durations) for e in ex if e.durations is not None))
            logging = (step + 1) % t.log_every == 0 or step + 1 == t.max_steps
            hook = None
            if logging and ttt_layers:
                capture["layer"] = ttt_layers[0]
                hook = ttt_layers[0].register_forward_pre_hook(lambda mod, args: capture.__setitem__("x", args[0].detach()))
            sums = torch.zeros(6, device=acc.device)  # ce, mel, dur, aux, z, padding
            per_task: dict[str, list] = {}
            counts = None
            for micro in range(t.grad_accum):
                part = Batch(ex[micro * world + rank :: parts])
                sync = contextlib.nullcontext() if micro == t.grad_accum - 1 else acc.no_sync(step_module)
                with sync:
                    with acc.autocast():
                        out = step_module(part)
                    loss = world * (out["ce_sum"] / n_tok + t.mel_loss_coef * out["mel_sum"] / n_mel
                                    + t.duration_loss_coef * out["dur_sum"] / n_dur)
                    if "aux" in out:
                        loss = loss + (t.aux_loss_coef * out["aux"] + t.z_loss_coef * out["z"]) / t.grad_accum
                        counts = out["expert_counts"] if counts is None else counts + out["expert_counts"]
                    if not torch.isfinite(loss):
                        raise GenError(f"the loss became {float(loss)} at step {step + 1}; the run stopped",
                                       hint=f"lower train.lr; the last good checkpoint is {ckpt_io.latest(run_dir)}")
                    acc.backward(loss)
                sums += torch.stack([out["ce_sum"].detach().float(), out["mel_sum"].detach().float(),
                                     out["dur_sum"].detach().float(),
                                     out.get("aux", torch.zeros(())).detach().float() / parts,
                                     out.get("z", torch.zeros(())).detach().float() / parts,
                                     torch.tensor(out["padding"] / parts)]).to(acc.device)
                for k, (v, n) in out["per_task"].items():
                    a = per_task.setdefault(k, [0.0, 0])
                    a[0] += v
                    a[1] += n
            if hook is not None:
                hook.remove()
            grad_norm = acc.clip_grad_norm_(params, t.clip) if t.clip > 0 else None
            lr = t.lr * lr_factor(step, warmup=t.warmup_steps, total=t.max_steps, schedule=t.schedule,
                                  time_left=clock.left(budget_s))
            for g in optimizer.param_groups:
                g["lr"] = lr
            try:
                optimizer.step()
            except (RuntimeError, OverflowError) as exc:
                raise GenError(f"the optimizer step failed at step {step + 1} ({exc}); the run stopped",
                               hint=f"lower train.lr; the last good checkpoint is {ckpt_io.latest(run_dir)}") from exc
            optimizer.zero_grad(set_to_none=True)
            if freezer is not None:
                freezer.restore()
            step += 1
            sums = acc.reduce(sums, reduction="sum")
            ce = float(sums[0]) / n_tok
            total = ce + t.mel_loss_coef * float(sums[1]) / n_mel + t.duration_loss_coef * float(sums[2]) / n_dur
            total_with_aux = total + t.aux_loss_coef * float(sums[3]) + t.z_loss_coef * float(sums[4])
            if not math.isfinite(total_with_aux):
                raise GenError(f"the loss became {total_with_aux} at step {step}; the run stopped",
                               hint=f"lower train.lr; the last good checkpoint is {ckpt_io.latest(run_dir)}")
            result.step, result.loss = step, total
            window["tokens"] += batch.n_target_tokens
            window["examples"] += len(ex)
            window["loss"] += total
            window["n"] += 1
            last = step == t.max_steps or clock.left(budget_s) == 0
            logging = logging or last
            if on_step and acc.is_main_process:
                on_step(step, total, window["examples"] / max(1e-9, clock.seconds() - window["time"]))
            if logging and acc.is_main_process:
                elapsed = max(1e-9, clock.seconds() - window["time"])
                row = {"step": step, "train_s": round(clock.seconds(), 1), "loss": total, "loss_with_aux": total_with_aux, "ce": ce,
                       "mel_l1": float(sums[1]) / n_mel if sums[1] else None, "aux": float(sums[3]),
                       "z": float(sums[4]), "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "tokens_per_s": window["tokens"] / elapsed, "examples_per_s": window["examples"] / elapsed,
                       "padding": float(sums[5]) / world,
                       "tasks": {k: v / max(1, n) for k, (v, n) in per_task.items()}}
                if counts is not None:
                    frac = (counts.float() / counts.sum(-1, keepdim=True).clamp_min(1)).tolist()
                    row["expert_util"] = [[round(x, 4) for x in layer] for layer in frac]
                    row["router_entropy"] = out.get("router_entropy")
                if ttt_layers:
                    row["ttt_gate"] = float(torch.stack([torch.tanh(b.ttt_gate.detach()).abs().mean()
                                                        for b in model.encoder.layers]).mean())
                    row["ttt_inner_loss_ratio"] = _ttt_inner_ratio(model, capture)
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                for k, v in _flat(row).items():
                    writer.add_scalar(f"train/{k}", v, step)
                window.update(tokens=0, examples=0, time=clock.seconds(), loss=0.0, n=0)
            if not last and ((r.eval.every and step % r.eval.every == 0) or clock.seconds() >= next_eval_s):
                with clock.paused():
                    evaluate(step)
                while next_eval_s <= clock.seconds():
                    next_eval_s += eval_gap
            if step % t.save_every == 0 or last:
                with clock.paused():
                    result.checkpoint = save(step)
        if periodic or not result.evals:
            evaluate(step)
    except KeyboardInterrupt:
        optimizer.zero_grad(set_to_none=True)
        raise Interrupted(save(step) if step > start else ckpt_io.latest(run_dir)) from None
    finally:
        if writer is not None:
            writer.close()
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
            batch = collate(rows, tokenizer, max_target_tokens=recipe.data.max_target_tokens,
                            phonemes=model.config.tts_input == "phonemes")
            entry = token_loss(model, batch.examples, batch_size=recipe.eval.batch_size, capacity=recipe.data.capacity)
            speech = [(e, rw) for e, rw in zip(batch.examples, rows) if e.task == "tts"]
            if speech:  # text -> speech: mel L1 with teacher-forced durations
                from generalist_cli.evaluate.report import tts_scores

                entry["mel_l1"] = tts_scores(model, [e for e, _ in speech], [rw for _, rw in speech], False,
                                              asr_model=None)["mel_l1"]
            text_ex = [(e, rw) for e, rw in zip(batch.examples, rows) if e.task != "tts"][: recipe.eval.wer_examples]
            if text_ex:
                hyps = greedy_texts(model, tokenizer, [e for e, _ in text_ex], max_new_tokens=recipe.eval.max_new_tokens,
                                    langs=[str(rw["lang"]) for _, rw in text_ex])
                refs = [str(rw["text"]) for _, rw in text_ex]
                first = text_ex[0][1]
                entry.update(text_scores(refs, hyps, lang=str(first["lang"]), task=str(first["task"])),
                             examples=len(refs), sample={"ref": refs[0], "hyp": hyps[0]})
            out[name] = entry
    finally:
        model.train(was_training)
    return out
