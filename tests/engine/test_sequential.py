"""The sequential encoder, specified on logs whose next item is known."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from streamrec.engine.offline.evaluation import evaluate_full_ranking, leave_last_out
from streamrec.engine.offline.hybrid_training import train_model
from streamrec.engine.offline.sequential_training import (
    holdout_last,
    train_sequences,
    user_sequences,
    validation_ndcg,
)
from streamrec.engine.offline.training import TrainParams
from streamrec.engine.serving.candidates import full_ranking
from streamrec.engine.serving.catalog import Catalog
from streamrec.engine.serving.model import ItemModel, ModelFormatError
from streamrec.engine.serving.recommender import RankingParams, Recommender, index_entries
from streamrec.engine.serving.sequential import (
    SequenceEncoder,
    SequenceParams,
    pad_left,
    type_codes,
)
from streamrec.engine.types import Interaction, Item, UserState
from streamrec.index.exact import ExactIndex

N_ITEMS = 30
SMALL = SequenceParams(
    dim=16,
    heads=2,
    layers=1,
    max_len=8,
    dropout=0.1,
    learning_rate=0.01,
    batch_size=32,
    max_epochs=60,
    patience=10,
)
LINEAR = TrainParams(
    dim=8, windows=(5,), shifts=(1.0,), eig_powers=(0.5,), decays=(0.75,), popularity_weights=(0.0,)
)


def cycles(users: int = 150, length: int = 10, seed: int = 0) -> pd.DataFrame:
    """Every user walks the same 30-item cycle from a random start: the next item is known.

    Every item is equally popular and every user sees a similar set of items, so only the
    order of the events tells which item comes next.
    """
    rng = np.random.default_rng(seed)
    kinds = ["view", "click", "add_to_cart", "purchase"]
    rows = []
    for u in range(users):
        start = int(rng.integers(N_ITEMS))
        for j in range(length):
            rows.append(
                {
                    "event_id": f"e{u}-{j}",
                    "user_id": f"u{u}",
                    "item_id": f"i{(start + j) % N_ITEMS}",
                    "type": kinds[int(rng.integers(4))],
                    "ts": 1_700_000_000_000 + (u * length + j) * 1000,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained() -> tuple[SequenceEncoder, dict[str, int]]:
    events = cycles()
    index = {f"i{k}": k for k in range(N_ITEMS)}
    result = train_sequences(user_sequences(events, index), N_ITEMS, SMALL, seed=0, epochs=40)
    assert result.epochs_run == 40
    return result.encoder, index


def top1(encoder: SequenceEncoder, rows: list[int]) -> int:
    user = encoder.encode([rows], [["view"] * len(rows)])[0]
    return int(np.argmax(encoder.item_vectors() @ user))


def test_the_encoder_predicts_the_next_item_of_the_cycle(trained) -> None:
    encoder, _ = trained
    assert top1(encoder, [3, 4, 5]) == 6
    assert top1(encoder, [27, 28, 29]) == 0


def test_order_matters_the_same_items_in_another_order_predict_another_item(trained) -> None:
    encoder, _ = trained
    assert top1(encoder, [3, 4, 5]) == 6
    assert top1(encoder, [5, 4, 3]) != 6


def test_a_user_without_known_events_gets_a_zero_vector(trained) -> None:
    encoder, _ = trained
    out = encoder.encode([[], [1, 2]], [[], ["view", "purchase"]])
    assert not out[0].any()
    assert out[1].any()


def test_serving_computes_only_the_last_position_with_the_same_result(trained) -> None:
    """``encode`` runs the final block for the last position alone; the full forward pass
    (training's) gives the same last hidden state."""
    encoder, _ = trained
    rng = np.random.default_rng(3)
    lengths = [1, 3, SMALL.max_len, SMALL.max_len + 4]
    rows = [rng.integers(0, N_ITEMS, size=n).tolist() for n in lengths]
    kinds = [["view", "click", "purchase", "add_to_cart"][: 1 + n % 4] * n for n in lengths]
    kinds = [k[:n] for k, n in zip(kinds, lengths, strict=True)]
    served = encoder.encode(rows, kinds)
    codes = pad_left([(np.asarray(r) + 1).tolist() for r in rows], SMALL.max_len)
    types = pad_left([type_codes(k) for k in kinds], SMALL.max_len)
    with torch.inference_mode():
        full = encoder.net(torch.from_numpy(codes), torch.from_numpy(types))[:, -1, :]
    np.testing.assert_allclose(served, full.numpy(), rtol=1e-5, atol=1e-6)


def test_only_the_newest_max_len_events_count(trained) -> None:
    encoder, _ = trained
    long = list(range(N_ITEMS)) * 3
    tail = long[-SMALL.max_len :]
    np.testing.assert_array_equal(
        encoder.encode([long], [["view"] * len(long)]),
        encoder.encode([tail], [["view"] * len(tail)]),
    )


def test_bad_inputs_are_refused_with_the_field_named(trained) -> None:
    encoder, _ = trained
    with pytest.raises(ValueError, match="rows must be in"):
        encoder.encode([[N_ITEMS]], [["view"]])
    with pytest.raises(ValueError, match="event type must be one of"):
        encoder.encode([[1]], [["like"]])
    with pytest.raises(ValueError, match="heads must divide"):
        SequenceParams(dim=10, heads=3)


def test_training_is_deterministic_for_a_seed() -> None:
    events = cycles(users=20)
    index = {f"i{k}": k for k in range(N_ITEMS)}
    seqs = user_sequences(events, index)
    params = SequenceParams(dim=8, heads=2, layers=1, max_len=8, max_epochs=3)
    a = train_sequences(seqs, N_ITEMS, params, seed=3, epochs=3).encoder.item_vectors()
    b = train_sequences(seqs, N_ITEMS, params, seed=3, epochs=3).encoder.item_vectors()
    c = train_sequences(seqs, N_ITEMS, params, seed=4, epochs=3).encoder.item_vectors()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    events = cycles(users=40)
    index = {f"i{k}": k for k in range(N_ITEMS)}
    train, validation = holdout_last(user_sequences(events, index))
    params = SequenceParams(**{**SMALL.as_dict(), "max_epochs": 30, "patience": 3})
    result = train_sequences(train, N_ITEMS, params, seed=0, validation=validation)
    scores = [score for _, _, score in result.curve]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert result.epochs_run == min(30, result.best_epoch + 3)
    assert validation_ndcg(result.encoder, validation) == pytest.approx(max(scores))


def test_sampled_softmax_with_in_batch_negatives_learns_too() -> None:
    events = cycles()
    index = {f"i{k}": k for k in range(N_ITEMS)}
    train, validation = holdout_last(user_sequences(events, index))
    params = SequenceParams(**{**SMALL.as_dict(), "negatives": 3})
    result = train_sequences(train, N_ITEMS, params, seed=0, validation=validation)
    assert result.best_validation_ndcg > 0.8


@pytest.fixture(scope="module")
def hybrid() -> ItemModel:
    # One weight: the encoder is on whatever validation says (the next test covers the choice).
    model, _, report = train_model(
        cycles(), None, LINEAR, SMALL, seed=0, weights=(1.0,), now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert report is not None
    assert report.weight == 1.0
    assert report.refit
    return model


def test_the_encoder_stays_off_when_validation_shows_no_gain() -> None:
    # On the cycle the co-occurrence model alone already ranks every held-out item first
    # (seen items excluded), so every weight ties and the first, 0, is kept.
    model, _, report = train_model(
        cycles(), None, LINEAR, SMALL, seed=0, now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert report is not None
    assert report.weight == 0.0
    assert dict(report.weight_scores)[0.0] == 1.0
    assert model.encoder is None
    assert model.version.startswith("item2vec-")


def test_the_trained_model_uses_the_encoder_where_order_decides(hybrid: ItemModel) -> None:
    assert hybrid.encoder is not None
    assert hybrid.version.startswith("seqrec-")
    assert hybrid.query_dim == hybrid.dim + SMALL.dim
    split = leave_last_out(cycles(users=40, seed=9))
    universe = list(hybrid.item_ids)
    recall = evaluate_full_ranking(full_ranking(hybrid, universe), split, universe, ks=(1,))
    assert recall["recall@1"].mean > 0.9


def test_online_user_vector_equals_the_offline_one(hybrid: ItemModel) -> None:
    ids, vectors = index_entries(hybrid)
    index = ExactIndex(hybrid.query_dim + 1)
    index.upsert(ids, vectors)
    rec = Recommender(hybrid, index, Catalog(), RankingParams(k=3))
    for item_id in hybrid.item_ids:
        rec.apply_item(Item(item_id, f"Stop {item_id}", "cycle"))
    items = ["i3", "i4", "unknown", "i5"]
    kinds = ["view", "click", "view", "purchase"]
    state = UserState(
        "u",
        tuple(
            Interaction(i, k, 1000 + n) for n, (i, k) in enumerate(zip(items, kinds, strict=True))
        ),  # type: ignore[arg-type]
        frozenset(),
    )
    online = rec.user_vector(state)
    offline = hybrid.embed_user(items, kinds)
    # Same code, different batch shapes: equal up to float32 summation order.
    np.testing.assert_allclose(online, offline, rtol=1e-5, atol=1e-6)
    served = rec.recommend([state], ["t"], now_ms=5000)[0].recommendation
    assert served.items[0].item_id == "i6"


def test_a_saved_model_loads_with_the_same_encoder(hybrid: ItemModel, tmp_path: Path) -> None:
    hybrid.save(tmp_path / "m")
    loaded = ItemModel.load(tmp_path / "m")
    assert loaded.version == hybrid.version
    assert loaded.sequence_weight == hybrid.sequence_weight
    history, kinds = ["i1", "i2"], ["view", "view"]
    np.testing.assert_array_equal(
        loaded.embed_user(history, kinds), hybrid.embed_user(history, kinds)
    )
    np.testing.assert_array_equal(loaded.index_vectors, hybrid.index_vectors)


def test_encoder_weights_that_do_not_belong_to_the_version_are_refused(
    hybrid: ItemModel, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    hybrid.save(folder)
    with np.load(folder / "model.npz") as data:
        arrays = {k: data[k] for k in data.files}
    key = next(k for k in arrays if k.startswith("seq.") and k.endswith("weight"))
    arrays[key] = arrays[key] + 1.0
    np.savez(folder / "model.npz", **arrays)
    with pytest.raises(ModelFormatError, match="does not belong"):
        ItemModel.load(folder)


def test_a_time_budget_stops_training_and_keeps_the_best_epoch_so_far() -> None:
    events = cycles(users=40)
    index = {f"i{k}": k for k in range(N_ITEMS)}
    train, validation = holdout_last(user_sequences(events, index))
    params = SequenceParams(**{**SMALL.as_dict(), "max_epochs": 50, "patience": 50})
    now = iter([0.0, 5.0, 10.0])  # read before epochs 2, 3 and 4
    result = train_sequences(
        train, N_ITEMS, params, seed=0, validation=validation,
        deadline=10.0, clock=lambda: next(now),
    )  # fmt: skip
    assert result.epochs_run == 3  # epoch 4 would start at the deadline
    scores = [score for _, _, score in result.curve]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert validation_ndcg(result.encoder, validation) == pytest.approx(max(scores))
