"""What a render's text encoder reads: the token ids of each planned prompt, once its
embeddings' names are replaced by their vectors' placeholder ids (``EmbeddingTokens.plan``).
An id at or past ``EMBEDDING_IDS_FROM`` (the end of CLIP's vocabulary) is an embedding's
vector: "not read" is shown by what the encoder is given, not by the infotext's wording."""

from __future__ import annotations

from collections import defaultdict

import pytest

from inference.networks import EmbeddingTokens
from inference.prompts import PromptPlan, default_tokenizer

EMBEDDING_IDS_FROM = len(default_tokenizer().vocab)


def recorded_encoder_ids(monkeypatch: pytest.MonkeyPatch) -> defaultdict[str, set[int]]:
    """The token ids each prompt (its plan's text) gives the encoder, from now on."""
    read_ids: defaultdict[str, set[int]] = defaultdict(set)
    planned = EmbeddingTokens.plan

    def recorded(tokens: EmbeddingTokens, plan: PromptPlan) -> PromptPlan:
        read = planned(tokens, plan)
        for sub in (*read.subprompts, read.negative):
            for entry in sub.schedule:
                read_ids[plan.prompt].update(i for chunk in entry.chunks for i in chunk.token_ids)
        return read

    monkeypatch.setattr(EmbeddingTokens, "plan", recorded)
    return read_ids
