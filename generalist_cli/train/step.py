"""One forward pass over a part of a batch, as an ``nn.Module`` so that DDP/FSDP wrap it: embed every
example with its front-end, pack the encoder rows (and the paired decoder rows), run the generalist,
and return loss *sums* with their counts. The loop divides by the global counts, so a batch split over
processes and accumulation steps gives the same loss and gradients as the whole batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generalist_cli.model.moe import load_balancing_loss, router_z_loss
from generalist_cli.model.packing import gather_positions, pack, plan_rows
from generalist_cli.train.batches import Batch, n_targets


class StepModule(nn.Module):
    def __init__(self, model, *, capacity: int = 2048) -> None:
        super().__init__()
        self.model = model
        self.capacity = capacity

    def embed(self, e) -> torch.Tensor:
        m = self.model
        if e.modality == "audio":
            return m.embed_audio(e.source[None])[0]
        if e.modality == "video" and e.grid is None:  # landmarks
            return m.embed_pose(e.source)
        if e.modality == "video":
            return m.embed_patches(e.source, e.grid)
        return m.embed_text(e.source)

    def forward(self, batch: Batch) -> dict:
        m = self.model
        device = next(m.parameters()).device
        ex = batch.examples
        for e in ex:
            e.source, e.tokens = e.source.to(device), e.tokens.to(device)
        texts = [i for i, e in enumerate(ex) if e.modality == "text"]
        seqs = [None if e.modality == "text" else self.embed(e) for e in ex]
        if texts:
            for i, x in zip(texts, m.embed_texts([ex[i].source for i in texts])):
                seqs[i] = x
        rows = plan_rows([s.shape[0] for s in seqs], self.capacity)
        enc_x, enc_packing = pack(seqs, rows)
        dec_x, dec_packing = pack([e.tokens for e in ex], rows)
        hidden, enc, enc_routers, dec_routers = m.forward_packed_full(enc_x, enc_packing, dec_x, dec_packing)
        out: dict = {"padding": enc_packing.padding_fraction, "positions": int(enc_packing.valid.sum())}
        # logits only where a target token is predicted: position t predicts token t + 1
        picks, labels, owners = [], [], []
        width = hidden.shape[1]
        for i, e in enumerate(ex):
            if n_targets(e):
                r, a, b = dec_packing.spans[i]
                picks.append(torch.arange(r * width + a + e.prompt_len - 1, r * width + b - 1))
                labels.append(e.tokens[e.prompt_len :])
                owners.append(i)
        ce_sum = hidden.sum() * 0.0  # keeps every process's graph connected when a part has no text target
        per_task: dict[str, list] = {}
        correct = exact = 0
        if picks:  # one gather (a slice per example would copy the whole hidden tensor per example backwards)
            picked = gather_positions(hidden, torch.cat(picks))
            logits, target = m.target_logits(picked, torch.cat(labels))
            losses = F.cross_entropy(logits.float(), target, reduction="none")
            ce_sum = ce_sum + losses.sum()
            right = (logits.detach().argmax(-1) == target).tolist()
            values = losses.detach().tolist()  # one transfer, not a tensor op per example
            start = 0
            for i, lab in zip(owners, labels):
                acc = per_task.setdefault(ex[i].task, [0.0, 0])
                acc[0] += sum(values[start : start + len(lab)])
                acc[1] += len(lab)
                exact += all(right[start : start + len(lab)])
                start += len(lab)
            correct = sum(right)
        out["ce_sum"] = ce_sum
        out["per_task"] = per_task
        out["correct_tokens"], out["exact_examples"] = correct, exact
        # text -> speech: the speech head on the example's encoder states
        mel_sum, frames, dur_sum, n_dur = hidden.new_zeros(()), 0, hidden.new_zeros(()), 0
        tts = [i for i, e in enumerate(ex) if e.task == "tts"]
        if tts:
            for i in tts:
                e = ex[i]
                r, a, b = enc_packing.spans[i]
                h = enc[r, a:b]
                durations = e.durations.to(device)
                log_d = m.speech_head.log_durations(h[None])[0]
                dur_sum = dur_sum + F.mse_loss(log_d.float(), torch.log1p(durations.float()), reduction="sum")
                n_dur += len(durations)
                pred = m.speech_head(h, durations)
                target = e.tgt_mel.to(device)[: pred.shape[0]]
                mel_sum = mel_sum + F.l1_loss(pred.float(), target, reduction="sum")
                frames += target.numel()
                acc = per_task.setdefault("tts", [0.0, 0])
                acc[0] += float(F.l1_loss(pred.float(), target, reduction="sum").detach())
                acc[1] += target.numel()
        out.update(mel_sum=mel_sum, mel_count=frames, dur_sum=dur_sum, dur_count=n_dur)
        routers = enc_routers + dec_routers
        if routers:
            c = m.config
            valid = [enc_packing.valid] * len(enc_routers) + [dec_packing.valid] * len(dec_routers)
            out["aux"] = load_balancing_loss(
                routers, n_experts=c.n_experts, top_k=c.top_k, groups=c.moe_segments - c.moe_shared, valid=valid
            )
            out["z"] = router_z_loss(routers, valid=valid)
            out["expert_counts"] = torch.stack([r.counts for r in routers]).detach()
            probs = torch.softmax(torch.cat([r.logits for r in routers]).detach().float(), -1)
            out["router_entropy"] = float(-(probs * probs.clamp_min(1e-9).log()).sum(-1).mean())
        return out
