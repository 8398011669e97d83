"""Fine-tuning the local reason model on (prompt, sentence) pairs: the training logic of
``streamrec reasons finetune`` (the pairs and the measures are in
:mod:`streamrec.engine.offline.reason_data`; the CLI does the file work). torch is imported
only where needed; models and tokenizers are transformers objects (``Any``)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.engine.reasons.prompt import Prompt

IGNORE = -100
"""The label of a token the loss skips (the prompt's tokens, padding)."""

Progress = Callable[[str, int, int, float], None]  # stage ("cache", "train"), done, total, loss


def chat_text(tokenizer: Any, prompt: Prompt) -> str:
    """The text the local backend generates from, as ``TransformersBackend`` builds it:
    the chat template with the assistant's turn opened, or the plain messages."""
    if getattr(tokenizer, "chat_template", None):
        options = {"tokenize": False, "add_generation_prompt": True}
        text: str = tokenizer.apply_chat_template(prompt.messages(), **options)
        return text
    return f"{prompt.system}\n\n{prompt.user}\n"


def end_of_turn_id(model: Any, tokenizer: Any) -> int:
    """The token that ends an answer: the first one generation stops at (the chat
    template's end of turn), else the tokenizer's end-of-sequence token."""
    found: Any = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = (found or [None])[0] if isinstance(found, list | tuple) else found
    return int(tokenizer.eos_token_id if found is None else found)


@dataclass(frozen=True)
class Encoded:
    """One training sequence: token ids, and labels with the prompt masked."""

    input_ids: list[int]
    labels: list[int]


def encode_pair(tokenizer: Any, prompt: Prompt, target: str, end_id: int) -> Encoded:
    """The chat prompt's tokens (as the backend encodes them), then the target's and the
    end-of-turn token; labels are :data:`IGNORE` on the prompt."""
    prompt_ids = list(tokenizer(chat_text(tokenizer, prompt))["input_ids"])
    answer_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [end_id]
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


@dataclass(frozen=True)
class FinetuneConfig:
    """AdamW (lr: linear warm-up over 10% of the steps, then linear decay to 0).
    ``train_layers`` 0: every weight; k > 0: the top k decoder layers and the final norm
    only. ``cache_batch``: sequences per forward pass through the frozen layers."""

    steps: int = 150
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    train_layers: int = 6
    max_grad_norm: float = 1.0
    seed: int = 0
    cache_batch: int = 8


@dataclass
class FinetuneResult:
    """Losses per step, weights trained and where the time went."""

    losses: list[float]
    trained_parameters: int
    total_parameters: int
    cache_seconds: float
    train_seconds: float


def finetune(
    model: Any,
    sequences: Sequence[Encoded],
    config: FinetuneConfig,
    *,
    pad_id: int,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Train ``model`` (a causal LM whose decoder blocks are ``model.model.layers``, e.g.
    Llama) in place on the answer tokens of ``sequences``; left in eval mode. Raises
    ValueError when there is no answer token to train on."""
    import torch

    if not any(t != IGNORE for s in sequences for t in s.labels):
        msg = "nothing to train on: no sequence with an answer token"
        raise ValueError(msg)
    torch.manual_seed(config.seed)
    decoder, layers = model.model, model.model.layers
    n_layers = len(layers)
    k = config.train_layers if 0 < config.train_layers < n_layers else 0
    top = [p for layer in layers[n_layers - k :] for p in layer.parameters()]
    trainable = top + list(decoder.norm.parameters()) if k else list(model.parameters())
    for p in model.parameters():
        p.requires_grad_(k == 0)
    for p in trainable:
        p.requires_grad_(True)
    total, trained = (sum(p.numel() for p in ps) for ps in (model.parameters(), trainable))
    started = time.perf_counter()
    cache = config.cache_batch
    frozen = _frozen_outputs(model, sequences, n_layers - k, cache, progress) if k else None
    cache_seconds = time.perf_counter() - started
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (config.steps - step) / max(1, config.steps - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    order: list[int] = []
    rng, losses, started = random.Random(config.seed), [], time.perf_counter()
    model.train()
    try:
        if k:
            decoder.layers = torch.nn.ModuleList(list(layers[n_layers - k :]))
        for step in range(config.steps):
            batch: list[int] = []
            while len(batch) < config.batch_size:
                if not order:
                    order = list(range(len(sequences)))
                    rng.shuffle(order)
                batch.append(order.pop())
            loss = _batch_loss(model, [sequences[i] for i in batch], frozen, batch, pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress("train", step + 1, config.steps, losses[-1])
    finally:
        decoder.layers = layers
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return FinetuneResult(losses, trained, total, cache_seconds, time.perf_counter() - started)


def _padded(rows: Sequence[Sequence[int]], value: int) -> Any:
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _frozen_outputs(
    model: Any, sequences: Sequence[Encoded], n_frozen: int, batch: int, progress: Progress | None
) -> list[Any]:
    """The output of the last frozen decoder layer for each sequence (its own length)."""
    import torch

    decoder, layers = model.model, model.model.layers
    captured: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    out: list[Any] = []
    handle = layers[n_frozen - 1].register_forward_hook(hook)
    decoder.layers = torch.nn.ModuleList(list(layers[:n_frozen]))
    try:
        with torch.no_grad():  # not inference_mode: the outputs feed a backward pass
            for start in range(0, len(sequences), batch):
                chunk = sequences[start : start + batch]
                ids = _padded([s.input_ids for s in chunk], 0)
                mask = _padded([[1] * len(s.input_ids) for s in chunk], 0)
                decoder(input_ids=ids, attention_mask=mask, use_cache=False)
                hidden = captured.pop()
                out += [hidden[n, : len(s.input_ids)].clone() for n, s in enumerate(chunk)]
                if progress is not None:
                    progress("cache", len(out), len(sequences), math.nan)
    finally:
        handle.remove()
        decoder.layers = layers
    return out


def _batch_loss(
    model: Any, batch: Sequence[Encoded], frozen: Sequence[Any] | None, at: Sequence[int], pad: int
) -> Any:
    """Mean cross-entropy of the answer tokens of one right-padded batch; logits only at
    the positions that predict an answer token."""
    import torch

    labels = _padded([s.labels for s in batch], IGNORE)
    mask = _padded([[1] * len(s.input_ids) for s in batch], 0)
    if frozen is None:
        ids = _padded([s.input_ids for s in batch], pad)
        hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=False)
    else:
        rows = [frozen[i] for i in at]
        embeds = torch.zeros(len(rows), labels.shape[1], rows[0].shape[-1], dtype=rows[0].dtype)
        for n, row in enumerate(rows):
            embeds[n, : row.shape[0]] = row
        hidden = model.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden.last_hidden_state[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])
