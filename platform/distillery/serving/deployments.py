"""One Serve deployment per model (teacher, student): loaded from the store, batched by Serve.

Loading goes through `load_model` (state_dict with weights_only=True, or TorchScript): nothing
from the store is unpickled as code. Requests of up to `max_batch_size` callers are merged into
one forward pass; the batch limits come from the spec and are set in `__init__`.
"""

from __future__ import annotations

import numpy as np
import torch
from ray import serve

from distillery.models import load_model
from distillery.storage import Store


@serve.deployment
class ModelServer:
    def __init__(self, store_root: str, parts: tuple[str, ...], max_batch_size: int,
                 batch_wait_timeout_s: float):
        # a replica owns a fraction of a CPU; more threads would only contend
        torch.set_num_threads(1)
        self.model, self.card = load_model(Store(store_root), tuple(parts))
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Each caller's (B_i, D) float32 rows -> its (B_i, C) class probabilities."""
        sizes = np.cumsum([len(x) for x in inputs])[:-1]
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.concatenate(inputs)))  # (sum B_i, C)
        return np.split(torch.softmax(logits.float(), dim=1).numpy(), sizes)
