"""A SASRec-style causal transformer that turns a user's recent events into a vector.

The encoder reads the user's last ``max_len`` events (item and event type), oldest first,
and returns the transformer's output at the newest position: the user vector ``h`` (d,).
Items are scored by the inner product with the encoder's own item embeddings, so the item
table can go straight into a FAISS inner-product index. The same :meth:`SequenceEncoder.
encode` runs offline (evaluation) and online (the worker, on every event, from the history
kept in Redis): there is one code path.

Architecture (Kang & McAuley 2018, with pre-norm blocks): item + event-type + position
embeddings; ``layers`` blocks of causal multi-head self-attention and a GELU feed-forward;
a final layer norm. Sequences are left-padded, so the newest event always sits at the last
position; padding is masked out of attention (each position may also attend to itself, so
a padded row stays finite).

Example:
    >>> enc = SequenceEncoder.create(n_items=100, params=SequenceParams(), seed=0)  # doctest: +SKIP
    >>> h = enc.encode([[3, 7, 9]], [["view", "view", "purchase"]])  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch convention

from streamrec.engine.types import EVENT_TYPES

__all__ = ["SequenceEncoder", "SequenceParams", "TransformerNet"]

_TYPE_CODE = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class SequenceParams:
    """Shape and training settings of the sequential encoder.

    Attributes:
        dim: Hidden size d (also the item embedding size).
        layers: Transformer blocks.
        heads: Attention heads (must divide ``dim``).
        max_len: Events read per user (the newest ``max_len``).
        dropout: Dropout on embeddings, attention and feed-forward while training.
        learning_rate: Adam learning rate.
        weight_decay: AdamW weight decay.
        batch_size: Training windows per step.
        max_epochs: Upper bound on training epochs.
        patience: Stop after this many epochs without a better validation NDCG@10.
        negatives: 0 for a full softmax over all items; otherwise a sampled softmax over the
            batch's own targets plus this many uniformly drawn items.
        use_types: Add an event-type embedding to each input event.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.3
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    negatives: int = 0
    use_types: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "max_len", "batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                msg = f"SequenceParams.{name} must be >= 1, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.dim % self.heads:
            msg = f"SequenceParams.heads must divide dim={self.dim}, got {self.heads}"
            raise ValueError(msg)
        if not 0.0 <= self.dropout < 1.0:
            msg = f"SequenceParams.dropout must be in [0, 1), got {self.dropout}"
            raise ValueError(msg)
        if self.negatives < 0 or self.patience < 0:
            msg = "SequenceParams.negatives and patience must be >= 0"
            raise ValueError(msg)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class _Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, *, last_only: bool = False
    ) -> torch.Tensor:
        """(b, L, d) -> (b, L, d); with ``last_only`` (serving the final block) only the
        last position's output, (b, 1, d): its query, attention and feed-forward alone,
        since nothing after the final block reads the other positions."""
        b, length, d = x.shape
        h = self.norm1(x)
        if last_only:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(h[:, -1:], weight[:d], bias[:d]).view(b, 1, self.heads, d // self.heads)
            k, v = (
                F.linear(h, weight[d:], bias[d:])
                .view(b, length, 2, self.heads, d // self.heads)
                .permute(2, 0, 3, 1, 4)
            )
            q, allowed, x = q.transpose(1, 2), allowed[:, :, -1:, :], x[:, -1:]
            length = 1
        else:
            q, k, v = (
                self.qkv(h).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            )
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, length, d)))
        out: torch.Tensor = x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))
        return out


class TransformerNet(nn.Module):
    """The torch module: (b, L) item codes and type codes -> (b, L, d) hidden states.

    Item code 0 is padding; item ``r`` of the model is code ``r + 1``.
    """

    def __init__(self, n_items: int, params: SequenceParams) -> None:
        super().__init__()
        d = params.dim
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.types = nn.Embedding(len(EVENT_TYPES) + 1, d, padding_idx=0)
        self.positions = nn.Embedding(params.max_len, d)
        self.use_types = params.use_types
        self.drop = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            _Block(d, params.heads, params.dropout) for _ in range(params.layers)
        )
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.types.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()
            self.types.weight[0].zero_()

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, *, last_only: bool = False
    ) -> torch.Tensor:
        """(b, L, d) hidden states; with ``last_only``, (b, 1, d): the last position's."""
        b, length = items.shape
        x = self.items(items) * (self.items.embedding_dim**0.5)
        if self.use_types:
            x = x + self.types(types)
        pos = torch.arange(self.positions.num_embeddings - length, self.positions.num_embeddings)
        x = self.drop(x + self.positions(pos)[None, :, :])
        valid = items > 0
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = causal[None, :, :] & valid[:, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool)[None, :, :]
        allowed = allowed[:, None, :, :]
        last = len(self.blocks) - 1
        for n, block in enumerate(self.blocks):
            x = block(x, allowed, last_only=last_only and n == last)
        out: torch.Tensor = self.norm(x)
        return out

    def item_table(self) -> torch.Tensor:
        """(n, d) the item embeddings, without the padding row."""
        return self.items.weight[1:]


def type_codes(types: Sequence[str]) -> list[int]:
    """Event types -> codes 1..4 (0 is padding).

    Raises:
        ValueError: An unknown type.
    """
    try:
        return [_TYPE_CODE[t] for t in types]
    except KeyError as exc:
        msg = f"event type must be one of {', '.join(EVENT_TYPES)}, got {exc.args[0]!r}"
        raise ValueError(msg) from None


def pad_left(rows: Sequence[Sequence[int]], length: int) -> npt.NDArray[np.int64]:
    """(b, length) int64, each row's last ``length`` values right-aligned, 0 before."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        tail = list(row)[-length:]
        if tail:
            out[r, length - len(tail) :] = tail
    return out


class SequenceEncoder:
    """A trained :class:`TransformerNet` with numpy in and out, for serving and evaluation.

    Attributes:
        params: The shape and training settings.
        n_items: Items known to the encoder (rows of the model's item table).
    """

    def __init__(self, net: TransformerNet, params: SequenceParams, n_items: int) -> None:
        self.net = net.eval()
        self.params = params
        self.n_items = n_items

    @classmethod
    def create(cls, n_items: int, params: SequenceParams, seed: int) -> SequenceEncoder:
        """An untrained encoder with weights drawn from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = TransformerNet(n_items, params)
        return cls(net, params, n_items)

    @property
    def dim(self) -> int:
        """Output dimension d."""
        return self.params.dim

    def item_vectors(self) -> npt.NDArray[np.float32]:
        """(n, d) float32 item embeddings: score = user vector · item vector."""
        with torch.no_grad():
            table: npt.NDArray[np.float32] = (
                self.net.item_table().detach().to(torch.float32).numpy().copy()
            )
        return table

    def encode(
        self, rows: Sequence[Sequence[int]], types: Sequence[Sequence[str]]
    ) -> npt.NDArray[np.float32]:
        """(b, d) user vectors from each user's known history rows, oldest first.

        Args:
            rows: Per user, the model rows (0-based, known items only) of their events.
            types: Per user, the matching event types.

        Returns:
            (b, d) float32; zero for a user with no rows.

        Raises:
            ValueError: Lengths differ, a row is out of range or a type is unknown.
        """
        if len(rows) != len(types):
            msg = f"rows and types must have the same length, got {len(rows)} and {len(types)}"
            raise ValueError(msg)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        active = [u for u, r in enumerate(rows) if len(r) > 0]
        if not active:
            return out
        codes: list[list[int]] = []
        kinds: list[list[int]] = []
        for u in active:
            if len(rows[u]) != len(types[u]):
                msg = f"user {u}: rows and types differ in length"
                raise ValueError(msg)
            r = np.asarray(rows[u], dtype=np.int64)
            if r.min() < 0 or r.max() >= self.n_items:
                msg = f"user {u}: rows must be in [0, {self.n_items}), got {r.min()}..{r.max()}"
                raise ValueError(msg)
            codes.append((r + 1).tolist())
            kinds.append(type_codes(types[u]))
        length = self.params.max_len
        with torch.inference_mode():
            hidden = self.net(
                torch.from_numpy(pad_left(codes, length)),
                torch.from_numpy(pad_left(kinds, length)),
                last_only=True,
            )
            out[active] = hidden[:, -1, :].to(torch.float32).numpy()
        return out

    def state_arrays(self) -> dict[str, npt.NDArray[np.float32]]:
        """The weights as named float32 arrays (for ``model.npz``)."""
        return {
            f"seq.{k}": v.detach().to(torch.float32).numpy().copy()
            for k, v in self.net.state_dict().items()
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, npt.NDArray[Any]], params: SequenceParams, n_items: int
    ) -> SequenceEncoder:
        """Rebuild an encoder from :meth:`state_arrays`.

        Raises:
            ValueError: Missing, extra or mis-shaped weights.
        """
        net = TransformerNet(n_items, params)
        state = {
            k.removeprefix("seq."): torch.from_numpy(np.asarray(v, dtype=np.float32))
            for k, v in arrays.items()
            if k.startswith("seq.")
        }
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            msg = f"sequence encoder weights do not match its parameters: {exc}"
            raise ValueError(msg) from exc
        return cls(net, params, n_items)

    def to_bytes(self) -> bytes:
        """The weights as bytes, in name order (for the model's content hash)."""
        buffer = io.BytesIO()
        for name, value in sorted(self.state_arrays().items()):
            buffer.write(name.encode("utf-8"))
            buffer.write(np.ascontiguousarray(value).tobytes())
        return buffer.getvalue()
