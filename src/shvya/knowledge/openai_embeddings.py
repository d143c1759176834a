"""OpenAI's embeddings endpoint (or a compatible server's), through the official SDK and the
client and error classes of the OpenAI text provider."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openai

from shvya.ai.providers import ProviderError, ProviderErrorKind
from shvya.ai.providers.openai_provider import OPENAI_ERRORS, make_client
from shvya.config import Settings
from shvya.knowledge.embeddings import Vectors, normalise


class OpenAIEmbeddings:
    """OpenAI's (or a compatible server's) embeddings endpoint."""

    remote = True  # each embedding is a network call: callers commit before it

    KNOWN_DIMENSIONS = {
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }

    provider = "openai"

    def __init__(self, client: openai.OpenAI, *, model: str) -> None:
        self._client = client
        self.model = model
        self.name = f"openai:{model}"
        self.dimensions = self.KNOWN_DIMENSIONS.get(model, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEmbeddings:
        return cls(make_client(settings), model=settings.openai_embedding_model)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """The vectors, and the input tokens OpenAI counted in its answers' `usage`."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        vectors: list[list[float]] = []
        tokens = 0
        with OPENAI_ERRORS.mapped():
            for start in range(0, len(texts), 256):
                response = self._client.embeddings.create(
                    model=self.model, input=list(texts[start : start + 256])
                )
                ordered = sorted(response.data, key=lambda item: item.index)
                vectors.extend(list(item.embedding) for item in ordered)
                if response.usage is not None:
                    tokens += response.usage.prompt_tokens
        if len(vectors) != len(texts):
            raise ProviderError(
                ProviderErrorKind.bad_response, "a vector per text did not come back"
            )
        matrix = normalise(np.asarray(vectors, dtype=np.float32))
        self.dimensions = int(matrix.shape[1])
        return matrix, tokens
