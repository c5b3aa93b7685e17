"""Logits of every evaluated model on every evaluation slice, in one Ray Data pass.

The slices (validation, test, each shifted test set) are stacked into one table with global
row ids; an actor pool of `ModelsPredictor`s runs all models on each block, so Ray Data starts
once and every row is read once, however many models and shifts there are.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray
import torch

from distillery.config import InferenceSpec
from distillery.data.splits import fixed_list_to_numpy, to_table
from distillery.models import load_model
from distillery.runtime import actor_pool, inference_device
from distillery.storage import Store


class ModelsPredictor:
    """Ray Data callable class: loads every model once per actor, returns their logits."""

    def __init__(self, store_root: str, models: dict[str, tuple[str, ...]]):
        self.device = inference_device()
        store = Store(store_root)
        self.models = {key: load_model(store, parts)[0].to(self.device)
                       for key, parts in models.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = torch.tensor(fixed_list_to_numpy(batch["x"]), device=self.device)
        columns = {"id": batch["id"]}
        with torch.inference_mode():
            for key, model in self.models.items():
                logits = model(x).float().cpu().numpy()  # (B, C)
                columns[f"logits.{key}"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(logits.reshape(-1)), logits.shape[1])
        return pa.table(columns)


def all_logits(store: Store, models: dict[str, tuple[str, ...]], inputs: list[np.ndarray],
               inference: InferenceSpec) -> dict[str, list[np.ndarray]]:
    """model key -> [(N_i, C) logits of inputs[i] for each i]."""
    x = np.concatenate(inputs)
    rows = to_table(x, None)
    # One block per inference batch, as in the logit cache: parallel work, no re-slicing.
    blocks = [rows.slice(i, inference.batch_size)
              for i in range(0, rows.num_rows, inference.batch_size)]
    ds = ray.data.from_arrow(blocks).map_batches(
        ModelsPredictor,
        fn_constructor_kwargs={"store_root": store.root, "models": models},
        batch_size=inference.batch_size,
        batch_format="pyarrow",
        **actor_pool(inference),
    )
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    table = table.take(np.argsort(table["id"].to_numpy()))  # blocks come back in any order
    bounds = np.cumsum([0, *(len(part) for part in inputs)])
    out = {}
    for key in models:
        logits = fixed_list_to_numpy(table[f"logits.{key}"])
        out[key] = [logits[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out
