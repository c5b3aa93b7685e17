"""What the stage benches run on: MNIST-1D rows, token-id rows of texts, and teachers with
random weights in a store.

Throughput does not depend on the weights, so a bench installs an untrained teacher where the
pipeline would train one, in the same store layout (`teachers/<name>/<fp>/` + `latest.json`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from distillery.config import ModelSpec
from distillery.data.mnist1d import generate
from distillery.data.splits import to_table
from distillery.models import build_model, fingerprint, model_card, save_model
from distillery.storage import Store
from distillery.store_layout import record_teacher, teacher_dir

NUM_FEATURES, NUM_CLASSES = 40, 10


def mnist1d_rows(num_rows: int, generated: int = 25_000, seed: int = 7) -> pa.Table:
    """`num_rows` rows as the pipeline's cache input (`id`, `x`, `label`): `generated` MNIST-1D
    rows (the quickstart's transfer seed) repeated, with ids 0..num_rows-1. The generator is
    slow next to the inference the bench times: fresh rows for a whole run would take longer
    than the runs they feed."""
    data = generate(min(generated, num_rows), seed, 1.0)
    reps = -(-num_rows // len(data["x"]))
    x = np.tile(data["x"].astype(np.float32), (reps, 1))[:num_rows]
    y = np.tile(data["y"].astype(np.int64), reps)[:num_rows]
    return to_table(x, y)


def text_rows(num_rows: int, length: int, vocab_size: int, num_classes: int,
               seed: int = 7) -> pa.Table:
    """`num_rows` rows of token ids (`id`, `x` int32 of `length`, `label`), as the pipeline's
    text rows: each a random text of 8 to `length` ids, padded with 0. A model reads every
    position, padding included, so the ids' values do not change its cost."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1000, vocab_size, size=(num_rows, length), dtype=np.int32)
    lengths = rng.integers(8, length + 1, size=num_rows)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return to_table(x, rng.integers(0, num_classes, size=num_rows))


def install_teacher(store: Store, name: str, model_spec: ModelSpec, seed: int = 0,
                    num_features: int = NUM_FEATURES, num_classes: int = NUM_CLASSES) -> tuple:
    """A randomly initialised teacher saved where train-teacher would put it; returns its parts
    (`teachers`, name, fingerprint)."""
    torch.manual_seed(seed)
    model = build_model(model_spec, num_features, num_classes).eval()
    fp = fingerprint(model_spec, model)
    card = model_card(model, model_spec, num_features=num_features, num_classes=num_classes,
                      role="teacher", fingerprint=fp)
    save_model(store, teacher_dir(name, fp), model, card)
    record_teacher(store, name, fp)
    return teacher_dir(name, fp)


def flops_per_row(model: torch.nn.Module, train: bool = False,
                  num_features: int = NUM_FEATURES) -> int:
    """FLOPs of one row through `model` (forward; forward + backward with `train`), counted by
    torch's FlopCounterMode (2 per multiply-add, convolutions and matmuls only)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, num_features)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()
