"""Fine-tuning the local reason model: pairs, masking, held-out users, a 2-step run on a
tiny random Llama that TransformersBackend then loads, and the CLI's arguments."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from streamrec.engine.offline import reason_data as rd
from streamrec.engine.offline import reason_finetune as ft
from streamrec.engine.reasons import Guard, TemplateGenerator, build_prompt
from streamrec.engine.types import Event
from tests.tiny_llama import build_tiny_llama

TITLES = ["Trail Runner 3", "Ridge Jacket", "Alpine Tent"]
CATEGORIES = ["running", "outdoor"]
SHOE = {"item_id": "s1", "title": "Trail Runner 3", "event": "view", "share": 0.7}
TENT = {"item_id": "t1", "title": "Alpine Tent", "event": "purchase", "share": 0.3}


def case(user: str, item: str = "x", items: tuple[dict[str, object], ...] = (SHOE,)):
    return rd.ReasonCase(user, item, "similar_to_recent", {"items": list(items)})


def guard() -> Guard:
    return Guard(TITLES, CATEGORIES)


def test_pairs_keep_only_guard_passing_targets_and_skip_excluded_prompts():
    cases = [case("u1"), case("u2", items=(SHOE, TENT))]
    good = (build_prompt(*_code_ev(cases[0])).user, "en", "You viewed Trail Runner 3")
    bad = (build_prompt(*_code_ev(cases[0])).user, "en", "Trending: you bought Ridge Jacket")
    other = ("Facts:\n- nothing we know", "en", "You viewed Trail Runner 3")
    pairs, report = rd.training_pairs(
        cases, guard(), "en", variants=3, accepted=[good, bad, other], frames=False
    )
    assert report.prompts == 2
    assert report.accepted_unmatched == 1
    assert report.rejected  # the hallucinated answer
    assert {p.source for p in pairs} == {"template", "accepted"}
    assert "Trending: you bought Ridge Jacket" not in {p.target for p in pairs}
    for p in pairs:
        evidence = cases[0].evidence if p.prompt.user == good[0] else cases[1].evidence
        assert guard().check(p.target, evidence, code="similar_to_recent").ok
    per_prompt = [
        sum(p.prompt.user == key for p in pairs) for key in {p.prompt.user for p in pairs}
    ]
    assert max(per_prompt) >= 2  # several template variants per prompt
    held = {build_prompt(*_code_ev(cases[1])).user}
    kept, _ = rd.training_pairs(cases, guard(), "en", exclude=held, frames=False)
    assert kept
    assert all(p.prompt.user not in held for p in kept)


def test_a_target_the_guard_rejects_is_dropped(monkeypatch):
    monkeypatch.setattr(
        rd,
        "template_targets",
        lambda *a, **k: ["You bought Ridge Jacket", "You viewed Trail Runner 3"],
    )
    pairs, report = rd.training_pairs([case("u1")], guard(), "en", frames=False)
    assert [p.target for p in pairs] == ["You viewed Trail Runner 3"]
    assert report.rejected["title"] == 1


def _code_ev(c: rd.ReasonCase) -> tuple[str, dict[str, object]]:
    return c.code, dict(c.evidence)


def test_held_out_users_are_disjoint_from_training_users():
    users = [f"u{n}" for n in range(50)]
    train, held = rd.split_users(users, 0.2, seed=3)
    assert train.isdisjoint(held)
    assert train | held == set(users)
    assert len(held) == 10
    assert rd.split_users(users, 0.2, seed=3) == (train, held)
    assert rd.split_users(["a", "b"], 0.01)[1]  # at least one held out
    cases = [case(u, items=({**SHOE, "title": TITLES[n % 3]},)) for n, u in enumerate(users)]
    evals = rd.eval_cases([c for c in cases if c.user_id in held], "en", 5, frames=False)
    assert evals
    assert {e.case.user_id for e in evals} <= held
    assert all(
        e.example == TemplateGenerator("en").canonical(e.case.code, e.case.evidence) for e in evals
    )


def test_with_frames_pairs_and_held_out_prompts_are_sentence_frames():
    """As the reason writer asks: titles as placeholders in the prompt and the target, the
    target checked by the guard with the case's own titles put back."""
    cases = [case("u1"), case("u2", items=({**SHOE, "title": "Ridge Jacket"},))]
    pairs, report = rd.training_pairs(cases, guard(), "en", variants=2)
    assert report.prompts == 1  # one frame: viewed [ITEM 1]
    assert pairs
    assert all("[ITEM 1]" in p.prompt.user and "[ITEM 1]" in p.target for p in pairs)
    assert all("Trail Runner 3" not in p.prompt.user + p.target for p in pairs)
    [held] = rd.eval_cases(cases, "en", 5)
    assert held.slots == {"[ITEM 1]": "Trail Runner 3"}
    assert held.example == "Because you viewed [ITEM 1]"
    metrics = rd.answer_metrics(
        [held, held],
        ["Since you viewed [ITEM 1], here it is", "You viewed [ITEM 1] and [ITEM 2]"],
        guard(),
        1.0,
    )
    assert metrics["guard_pass"] == 0.5
    assert metrics["rejections"] == {"placeholder": 1}
    assert metrics["answers"][0]["text"] == "Since you viewed Trail Runner 3, here it is"


def test_recombined_cases_make_the_frames_a_sample_of_users_does_not_show():
    """One user's item cites a viewed and a bought item, another's one bought item with a
    habit: the recombined cases cite one or two of those items, each viewed or bought,
    with the habit or without, and never the recommended item itself."""
    habit = {"code": "category_affinity", "category": "running", "count": 3, "of_recent": 5}
    one = case("u1", "j1", items=(SHOE, TENT))
    two = rd.ReasonCase("u2", "s1", "similar_to_recent", {"items": [TENT], "also": habit})
    popular = rd.ReasonCase("u3", "t1", "popular", {"count": 9})  # cites nothing: left out
    made = rd.recombined_cases([one, two, popular], 300, seed=1)

    assert len(made) == 300
    assert rd.recombined_cases([one, two, popular], 300, seed=1) == made  # seeded
    assert all(c.user_id.startswith("recombined-") for c in made)
    assert {c.code for c in made} == {"similar_to_recent"}
    shapes = {(tuple(i["event"] for i in c.evidence["items"]), "also" in c.evidence) for c in made}
    events = ("view", "purchase")
    cited = [(a,) for a in events] + [(a, b) for a in events for b in events]
    assert shapes == {(e, with_habit) for e in cited for with_habit in (False, True)}
    for c in made:
        cited = [i["item_id"] for i in c.evidence["items"]]
        assert c.item_id not in cited
        assert all(i["title"] in TITLES for i in c.evidence["items"])
        assert c.evidence.get("also") in (None, habit)
    # More frames than the users' own, and every one passes the guard as templates do.
    frames = rd.unique_prompts(made, "en")
    assert len(frames) > len(rd.unique_prompts([one, two], "en"))
    pairs, report = rd.training_pairs(made, guard(), "en", variants=1)
    assert report.pairs == len(frames)
    assert rd.recombined_cases([popular], 10) == []
    assert rd.recombined_cases([one], 0) == []


def test_user_states_cut_each_users_events_part_way():
    events = [Event(f"e{n}", f"u{n % 2}", f"i{n}", "view", n) for n in range(20)]
    states = rd.user_states(events, ["u0", "u1", "nobody"], history_length=4, seed=1)
    assert [s.user_id for s in states] == ["u0", "u1"]
    for state in states:
        assert 1 <= len(state.history) <= 4
        assert state.history[-1].item_id in state.seen
        assert len(state.seen) < 10  # not every event


def test_answer_metrics_judge_raw_answers_against_their_own_evidence():
    cases = rd.eval_cases([case("u1"), case("u2", items=(TENT,))], "en", 2)
    answers = [cases[0].example, "I'm here to help you with anything!"]
    metrics = rd.answer_metrics(cases, answers, guard(), 2.0)
    assert metrics["guard_pass"] == 0.5
    assert metrics["copies_example"] == 0.5
    assert metrics["rejections"] == {"ungrounded": 1, "uncited": 1}
    assert metrics["seconds_per_sentence"] == 1.0
    assert rd.answer_metrics(cases, [None, None], guard(), 1.0)["rejections"] == {"empty": 2}
    from streamrec.stream.cli.reasons_finetune import metrics_table

    assert "| base | 2 | 50.0% |" in metrics_table({"base": metrics})


# -- the tiny model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (tests/tiny_llama.py), built once for the module."""
    words = ["because", "you", "viewed", "bought", "trail", "runner", "alpine", "tent", "similar"]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), words, layers=3, lowercase=True)


def _load(folder: Path):
    from streamrec.stream.worker.local_model import TransformersBackend

    return TransformersBackend(folder, max_new_tokens=6)


def test_encoding_masks_the_prompt_and_matches_what_the_backend_generates_from(tiny_model_dir):
    backend = _load(tiny_model_dir)
    prompt = build_prompt("similar_to_recent", {"items": [SHOE]}, "en")
    assert ft.chat_text(backend.tokenizer, prompt) == backend._chat_text(prompt)
    end = ft.end_of_turn_id(backend.model, backend.tokenizer)
    assert end == 2
    enc = ft.encode_pair(backend.tokenizer, prompt, "because you viewed trail runner 3", end)
    prompt_ids = backend._encode(prompt)[0].tolist()
    n = len(prompt_ids)
    assert enc.input_ids[:n] == prompt_ids
    assert enc.labels[:n] == [ft.IGNORE] * n
    assert enc.labels[n:] == enc.input_ids[n:]
    assert enc.labels[-1] == end
    assert len(enc.labels) == len(enc.input_ids) == n + 7


def test_frozen_layers_plus_trained_ones_give_the_full_models_output(tiny_model_dir):
    torch = pytest.importorskip("torch")
    backend = _load(tiny_model_dir)
    model, tok = backend.model, backend.tokenizer
    prompts = [
        build_prompt("similar_to_recent", {"items": [SHOE]}, "en"),
        build_prompt("similar_to_recent", {"items": [SHOE, TENT]}, "en"),
    ]
    seqs = [ft.encode_pair(tok, p, "because you viewed", 2) for p in prompts]
    frozen = ft._frozen_outputs(model, seqs, 2, 8, None)
    layers = model.model.layers
    with torch.no_grad():
        full = ft._batch_loss(model, seqs, None, [0, 1], pad=1)
        model.model.layers = torch.nn.ModuleList(list(layers[2:]))
        try:
            split = ft._batch_loss(model, seqs, frozen, [0, 1], pad=1)
        finally:
            model.model.layers = layers
    assert math.isclose(float(full), float(split), rel_tol=1e-5)


@pytest.mark.parametrize("train_layers", [0, 1])
def test_a_two_step_finetune_saves_a_model_the_backend_loads_and_answers_from(
    tiny_model_dir, tmp_path, train_layers
):
    torch = pytest.importorskip("torch")
    backend = _load(tiny_model_dir)
    model, tok = backend.model, backend.tokenizer
    pairs, _ = rd.training_pairs([case("u1"), case("u2", items=(SHOE, TENT))], guard(), "en")
    seqs = [ft.encode_pair(tok, p.prompt, p.target, 2) for p in pairs]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[str, int, int]] = []
    result = ft.finetune(
        model,
        seqs,
        ft.FinetuneConfig(steps=2, batch_size=2, lr=1e-2, train_layers=train_layers),
        pad_id=1,
        progress=lambda stage, done, total, loss: seen.append((stage, done, total)),
    )
    assert len(result.losses) == 2
    assert all(math.isfinite(x) for x in result.losses)
    assert ("train", 2, 2) in seen
    assert (("cache", len(seqs), len(seqs)) in seen) == bool(train_layers)
    assert not model.training
    assert len(model.model.layers) == 3  # restored
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if train_layers:
        assert changed
        assert all("layers.2." in k or k == "model.norm.weight" for k in changed)
        assert result.trained_parameters < result.total_parameters
    else:
        assert "model.embed_tokens.weight" in changed
    from streamrec.stream.cli.reasons_finetune import _save

    out = tmp_path / "tuned"
    _save(model, tok, out)
    tuned = _load(out)
    answer = tuned.complete(pairs[0].prompt, 30.0)
    assert answer is None or isinstance(answer, str)
    batch = tuned.complete_batch([p.prompt for p in pairs[:2]], 30.0)
    assert len(batch) == 2
    from streamrec.stream.cli.reasons_finetune import generate_answers

    answers, seconds = generate_answers(
        tuned.complete_batch, [p.prompt for p in pairs[:3]], batch_size=2
    )
    assert len(answers) == 3
    assert seconds >= 0


def test_finetune_refuses_nothing_to_train_on(tiny_model_dir):
    backend = _load(tiny_model_dir)
    with pytest.raises(ValueError, match="nothing to train"):
        ft.finetune(
            backend.model, [ft.Encoded([1, 2], [ft.IGNORE] * 2)], ft.FinetuneConfig(), pad_id=1
        )


# -- the CLI ----------------------------------------------------------------------------------


def test_the_cli_parses_reasons_finetune(capsys):
    from streamrec.stream.cli.main import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["reasons", "finetune", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--accepted", "--steps", "--batch-size", "--eval-only", "--out", "--model-dir"):
        assert option in out
    args = parser.parse_args(["reasons", "finetune", "--out", "x", "--steps", "7"])
    assert args.steps == 7
    assert args.batch_size == 4
    assert args.lr == 1e-4
    assert args.func.__name__ == "cmd_reasons_finetune"


def test_accepted_answers_are_read_and_bad_lines_skipped(tmp_path):
    from streamrec.stream.cli.reasons_finetune import read_accepted

    path = tmp_path / "accepted.jsonl"
    path.write_text(
        '{"prompt_user": "Facts:", "language": "en", "sentence": "You viewed X"}\nnot json\n\n'
        '{"prompt_user": "Facts:"}\n',
        encoding="utf-8",
    )
    assert read_accepted(path) == [("Facts:", "en", "You viewed X")]
