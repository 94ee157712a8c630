"""Caption generation for any captioner with the ``encode``/``decode``/``reorder_cache`` interface.

``generate_tokens(captioner, memory, prompts, ...)`` continues each prompt (a list of token ids starting with
BOS) until EOS, ``max_new_tokens`` or the decoder's ``max_length``, by ``greedy`` decoding, ``beam`` search (sum of log-probs,
finished beams frozen, length-normalised pick) or ``top-p`` (nucleus) sampling from a seeded
generator. With ``use_cache`` each step feeds one token through the decoder's KV cache; without, the
whole sequence is run again every step (the reference the cache is tested against).
"""

from __future__ import annotations

import torch
from torch import Tensor

METHODS = ("greedy", "beam", "top-p")


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Prompts -> ids, key mask and positions ``(B, L)``, left-padded so every prompt ends at column L-1."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.bool)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, length - len(p):] = torch.tensor(p)
            mask[i, length - len(p):] = True
    positions = (mask.long().cumsum(1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), positions.to(device)


def _step(captioner, memory, ids, mask, positions, cache, use_cache):
    """Logits of the next token for every row ``(B, V)`` and the new cache."""
    if not use_cache:
        logits, _ = captioner.decode(memory, ids, mask, positions)
        return logits[:, -1].float(), None
    if cache is None:
        logits, cache = captioner.decode(memory, ids, mask, positions)
    else:
        logits, cache = captioner.decode(memory, ids[:, -1:], mask, positions[:, -1:], cache)
    return logits[:, -1].float(), cache


def _top_p(logits: Tensor, top_p: float, temperature: float, generator: torch.Generator | None) -> Tensor:
    probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # the smallest set whose mass reaches top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, choice)[:, 0]


@torch.no_grad()
def generate_tokens(captioner, memory: Tensor, prompts: list[list[int]], *, eos_id: int, pad_id: int,
             max_new_tokens: int = 64, method: str = "greedy", num_beams: int = 4, top_p: float = 0.9,
             temperature: float = 1.0, length_penalty: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """New tokens for each prompt (EOS and padding removed). ``memory`` ``(B, N, D)`` from ``encode``."""
    if method not in METHODS:
        raise ValueError(f"sampling method {method!r}: choose one of {', '.join(METHODS)}")
    if len(prompts) != memory.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {memory.shape[0]} clips")
    device = memory.device
    ids, mask, positions = left_pad(prompts, pad_id, device)
    b = len(prompts)
    beams = num_beams if method == "beam" else 1
    if beams > 1:
        memory, ids, mask, positions = (t.repeat_interleave(beams, 0) for t in (memory, ids, mask, positions))
    scores = torch.zeros(b, beams, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: only the first may expand at step one
    finished = torch.zeros(b * beams, dtype=torch.bool, device=device)
    lengths = torch.zeros(b * beams, device=device)
    new = torch.empty(b * beams, 0, dtype=torch.long, device=device)
    cache = None
    limit = getattr(captioner, "max_length", None)  # the decoder's positions end here
    for _ in range(max_new_tokens):
        if limit is not None and int(positions.max()) + 1 >= limit:
            break
        logits, cache = _step(captioner, memory, ids, mask, positions, cache, use_cache)
        if method == "greedy":
            token = logits.argmax(-1)
        elif method == "top-p":
            token = _top_p(logits, top_p, temperature, generator)
        else:
            logp = torch.log_softmax(logits, -1)
            logp[finished] = float("-inf")
            logp[finished, pad_id] = 0.0  # a finished beam only continues with padding, at no cost
            total = (scores.view(-1, 1) + logp).view(b, -1)  # (B, beams * V)
            scores, flat = total.topk(beams, dim=-1)
            rows = (torch.arange(b, device=device)[:, None] * beams + flat // logp.shape[-1]).view(-1)
            token = (flat % logp.shape[-1]).view(-1)
            ids, new, finished, lengths = ids[rows], new[rows], finished[rows], lengths[rows]
            if cache is not None:
                cache = captioner.reorder_cache(cache, rows)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        lengths = lengths + (~finished).float()
        finished = finished | (token == eos_id)
        new = torch.cat([new, token[:, None]], dim=1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
        if bool(finished.all()):
            break
    if beams > 1:
        norm = scores / lengths.view(b, beams).clamp_min(1) ** length_penalty
        best = norm.argmax(-1) + torch.arange(b, device=device) * beams
        new = new[best]
    out = []
    for row in new.tolist():
        out.append([t for t in (row[: row.index(eos_id)] if eos_id in row else row) if t != pad_id])
    return out
