"""A model of the store, batched: in-process in the router (topology `colocated`), or a Serve
deployment of its own (`separate`).

Loading goes through `load_model` (state_dict with weights_only=True, or TorchScript): nothing
from the store is unpickled as code. Requests of up to `max_batch_size` callers are merged into
one forward pass (`predict`), with the spec's batch limits. A text model
tokenizes its requests with the tokenizer stored beside the model (data/text.py), so the router
passes strings and never needs the tokenizer.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
import torch
from ray import serve

from distillery.data.text import stored_encoding, tokenize
from distillery.models import load_model
from distillery.storage import Store


class BatchedModel:
    def __init__(self, store_root: str, parts: tuple[str, ...], max_batch_size: int,
                 batch_wait_timeout_s: float):
        # a replica owns a fraction of a CPU; more threads would only contend
        torch.set_num_threads(1)
        store = Store(store_root)
        self.model, self.card = load_model(store, tuple(parts))
        self.text = stored_encoding(store, tuple(parts), self.card)
        # Serve keeps a batch queue per decorated function: decorating the method would give
        # the teacher and student of one process one queue, and one model both's batches
        self.predict = serve.batch(max_batch_size=max_batch_size,
                                   batch_wait_timeout_s=batch_wait_timeout_s)(self._forward)

    async def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Each caller's (B_i, D) float32 rows, or (B_i,) texts of a text model -> its (B_i, C)
        class probabilities. A text longer than the model's max_length is truncated to it."""
        sizes = np.cumsum([len(x) for x in inputs])[:-1]
        x = np.concatenate(inputs)
        if self.text is not None:
            x, _ = tokenize(x.tolist(), self.text)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(x))  # (sum B_i, C)
        return np.split(torch.softmax(logits.float(), dim=1).numpy(), sizes)


ModelServer = serve.deployment(BatchedModel)


@dataclass(frozen=True)
class ModelSource:
    """What a `BatchedModel` is built from: the router loads it in-process (`colocated`), or
    binds it as a `ModelServer` deployment (`separate`)."""

    store_root: str
    parts: tuple[str, ...]
    max_batch_size: int
    batch_wait_timeout_s: float

    def load(self) -> BatchedModel:
        return BatchedModel(*astuple(self))
