"""Fine-tuning the local reason model on guard-accepted sentences, and measuring it: the
logic of ``streamrec reasons finetune`` (the CLI does the file work). torch is imported
only where needed; models and tokenizers are transformers objects (``Any``)."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamrec.engine.reasons._types import Evidence, Language
from streamrec.engine.reasons.generator import clean
from streamrec.engine.reasons.guard import Guard
from streamrec.engine.reasons.metrics import distinct_n
from streamrec.engine.reasons.prompt import Prompt, build_prompt
from streamrec.engine.reasons.templates import TemplateGenerator
from streamrec.engine.types import Event, Interaction, UserState

IGNORE = -100
"""The label of a token the loss skips (the prompt's tokens, padding)."""

Progress = Callable[[str, int, int, float], None]  # stage ("cache", "train"), done, total, loss


@dataclass(frozen=True)
class ReasonCase:
    """One recommended item's reason for one user."""

    user_id: str
    item_id: str
    code: str
    evidence: Evidence


def user_states(
    events: Iterable[Event], users: Sequence[str], *, history_length: int, seed: int = 0
) -> list[UserState]:
    """Each user's state after the first 30-90% of their events (time order; drawn per
    user, so histories of many lengths occur); users with fewer than 2 events left out."""
    wanted, by_user = set(users), dict[str, list[Event]]()
    for event in events:
        if event.user_id in wanted:
            by_user.setdefault(event.user_id, []).append(event)
    rng, out = random.Random(seed), []
    for user in users:
        own = by_user.get(user, [])
        if len(own) < 2:
            continue
        kept = own[: max(1, math.ceil(len(own) * rng.uniform(0.3, 0.9)))]
        history = tuple(Interaction(e.item_id, e.type, e.ts) for e in kept[-history_length:])
        purchased = frozenset(e.item_id for e in kept if e.type == "purchase")
        out.append(UserState(user, history, purchased, frozenset(e.item_id for e in kept)))
    return out


def split_users(users: Iterable[str], fraction: float, seed: int = 0) -> tuple[set[str], set[str]]:
    """(training users, held-out users): disjoint, by a seeded shuffle; at least one held
    out (and one kept) when ``fraction`` > 0 and there are two users or more."""
    ordered = sorted(set(users))
    random.Random(seed).shuffle(ordered)
    held = round(len(ordered) * fraction)
    if fraction > 0 and len(ordered) >= 2:
        held = min(max(held, 1), len(ordered) - 1)
    return set(ordered[held:]), set(ordered[:held])


@dataclass(frozen=True)
class TrainingPair:
    """A prompt and a sentence to answer it with; ``source``: template or accepted."""

    prompt: Prompt
    target: str
    source: str
    user_id: str


@dataclass
class PairReport:
    """Counts; ``rejected``: violation kinds of the targets the guard rejected."""

    prompts: int = 0
    pairs: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    accepted_unmatched: int = 0


def prompt_of(case: ReasonCase, language: Language, max_chars: int = 160) -> Prompt:
    """The language-model prompt for a case's reason."""
    return build_prompt(case.code, case.evidence, language, max_chars=max_chars)


def unique_prompts(
    cases: Iterable[ReasonCase], language: Language, max_chars: int = 160
) -> dict[str, tuple[Prompt, ReasonCase]]:
    """The distinct prompts of ``cases`` (by user message), each with its first case."""
    out: dict[str, tuple[Prompt, ReasonCase]] = {}
    for case in cases:
        prompt = prompt_of(case, language, max_chars)
        out.setdefault(prompt.user, (prompt, case))
    return out


def template_targets(
    code: str, evidence: Evidence, language: Language, variants: int, key: str, max_chars: int
) -> list[str]:
    """Up to ``variants`` template sentences (any tier but the generic last one, at most
    ``max_chars`` long), shuffled by a hash of ``key``."""
    tiers = TemplateGenerator(language, max_chars=max_chars).phrasings(code, evidence)
    specific = [t for tier in tiers[:-1] for t in tier] if len(tiers) > 1 else []
    unique = list(dict.fromkeys(t for t in specific if len(t) <= max_chars))
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    random.Random(seed).shuffle(unique)
    return unique[:variants]


def training_pairs(
    cases: Iterable[ReasonCase],
    guard: Guard,
    language: Language,
    *,
    variants: int = 3,
    accepted: Iterable[tuple[str, str, str]] = (),
    exclude: Iterable[str] = (),
    max_chars: int = 160,
) -> tuple[list[TrainingPair], PairReport]:
    """(prompt, sentence) pairs for the distinct prompts of ``cases`` but those in
    ``exclude`` (user messages): up to ``variants`` template sentences each and the
    ``accepted`` (user message, language, sentence) for it; a sentence ``guard`` rejects
    for the prompt's evidence (and user) is left out."""
    prompts = unique_prompts(cases, language, max_chars)
    for key in set(exclude):
        prompts.pop(key, None)
    extra: dict[str, list[str]] = {}
    report = PairReport(prompts=len(prompts))
    for user_message, answer_language, sentence in accepted:
        if answer_language != language or user_message not in prompts:
            report.accepted_unmatched += 1
        else:
            extra.setdefault(user_message, []).append(sentence)
    pairs: list[TrainingPair] = []
    for key, (prompt, case) in prompts.items():
        texts = template_targets(case.code, case.evidence, language, variants, key, max_chars)
        candidates = [("template", t) for t in texts]
        candidates += [("accepted", clean(t)) for t in extra.get(key, [])]
        seen: set[str] = set()
        for source, text in candidates:
            if not text or text in seen:
                continue
            seen.add(text)
            verdict = guard.check(text, case.evidence, code=case.code, user_id=case.user_id)
            if verdict.ok:
                pairs.append(TrainingPair(prompt, text, source, case.user_id))
                report.by_source[source] += 1
            else:
                report.rejected.update(verdict.kinds)
    report.pairs = len(pairs)
    return pairs, report


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


@dataclass(frozen=True)
class EvalCase:
    """A held-out prompt, its case and the template sentence it shows as its example."""

    prompt: Prompt
    case: ReasonCase
    example: str


def eval_cases(
    cases: Iterable[ReasonCase], language: Language, n: int, seed: int = 0, max_chars: int = 160
) -> list[EvalCase]:
    """Up to ``n`` distinct prompts of ``cases``, sampled with a seed, round robin over the
    codes from the rarest, so that a small sample still covers them."""
    prompts = list(unique_prompts(cases, language, max_chars).values())
    random.Random(seed).shuffle(prompts)
    by_code: dict[str, list[tuple[Prompt, ReasonCase]]] = {}
    for prompt, case in prompts:
        by_code.setdefault(case.code, []).append((prompt, case))
    queues = sorted(by_code.values(), key=len)
    picked: list[tuple[Prompt, ReasonCase]] = []
    while len(picked) < n and any(queues):
        picked += [q.pop() for q in queues if q][: n - len(picked)]
    templates = TemplateGenerator(language, max_chars=max_chars)
    return [EvalCase(p, c, templates.canonical(c.code, c.evidence)) for p, c in picked]


def answer_metrics(
    cases: Sequence[EvalCase], answers: Sequence[str | None], guard: Guard, seconds: float
) -> dict[str, Any]:
    """Raw answers judged against their prompts' evidence: ``guard_pass`` (share that the
    guard accepts after ``clean``; a missing answer fails as ``empty``), ``rejections``
    (answers per violation kind), distinct-1/2 and ``mean_chars`` of the cleaned answers,
    ``copies_example`` (share equal to the prompt's example), ``seconds_per_sentence``
    and every answer with its verdict."""
    if len(cases) != len(answers):
        msg = f"{len(cases)} cases but {len(answers)} answers"
        raise ValueError(msg)
    rejections: Counter[str] = Counter()
    judged: list[dict[str, Any]] = []
    passed = copies = 0
    for e, raw in zip(cases, answers, strict=True):
        text = clean(raw) if isinstance(raw, str) else ""
        verdict = guard.check(text, e.case.evidence, code=e.case.code, user_id=e.case.user_id)
        passed, copies = passed + verdict.ok, copies + (text == e.example)
        rejections.update(verdict.kinds)
        judged.append({"code": e.case.code, "facts": e.prompt.user, "raw": raw, "text": text})
        judged[-1].update(ok=verdict.ok, violations=verdict.violations)
    texts = [a["text"] for a in judged if a["text"]]
    n, language = len(cases), cases[0].prompt.language if cases else "en"
    return {
        "prompts": n,
        "guard_pass": passed / n if n else 0.0,
        "rejections": dict(rejections.most_common()),
        "distinct_1": distinct_n(texts, 1, language),
        "distinct_2": distinct_n(texts, 2, language),
        "mean_chars": sum(map(len, texts)) / len(texts) if texts else math.nan,
        "copies_example": copies / n if n else 0.0,
        "seconds_per_sentence": seconds / n if n else math.nan,
        "answers": judged,
    }
