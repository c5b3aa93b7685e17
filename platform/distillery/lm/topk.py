"""The teacher's top-k next-token distribution per position, as tensors and as cache columns.

Per token the cache keeps k ids (int32: vocabularies outgrow int16) and k log-probs at the
distillation temperature T, log softmax(z / T) over the full vocabulary taken before
truncation. Log-probs, not logits: the tail mass 1 - sum_i p_i that the top-k loss needs comes
from the full-vocabulary normalizer, which k raw logits cannot recover. float16, not float32:
half the bytes for the larger column, and a log-prob <= 0 loses little to it (relative spacing
2^-11, so p = exp(l) is off by at most |l| * 2^-11 * p <= 1.8e-4 in absolute terms, since
|l| e^l <= 1/e); tests/test_lm_topk.py pins the effect on the loss. The price is that the cache
is tied to T and k: another temperature needs another cache.

Columns, one row per block of L positions (the rows of text_data.packed_blocks):
  topk_ids       fixed_size_list<fixed_size_list<int32, k>, L>
  topk_logprobs  fixed_size_list<fixed_size_list<float16, k>, L>
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

IDS_DTYPE = np.int32
LOGPROBS_DTYPE = np.float16


def teacher_topk(logits: torch.Tensor, k: int,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, logprobs), both (B, L, k), sorted by descending probability, from teacher logits
    (B, L, V): the k largest of log softmax(logits / T) over V, ids int32, log-probs float16."""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = log_p.topk(k, dim=-1)
    return ids.to(torch.int32), values.to(torch.float16)


def topk_table(ids: torch.Tensor, logprobs: torch.Tensor) -> pa.Table:
    """Cache columns `topk_ids`, `topk_logprobs` for (B, L, k) ids and log-probs, a row per
    block; L and k are in the column types."""
    return pa.table({
        "topk_ids": _nested_list(ids.numpy().astype(IDS_DTYPE)),
        "topk_logprobs": _nested_list(logprobs.numpy().astype(LOGPROBS_DTYPE)),
    })


def topk_tensors(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of topk_table, ready for the loss: ids int64 (for gather), log-probs
    float32 (the values stored, widened), both (N, L, k)."""
    return (torch.from_numpy(_nested_numpy(table["topk_ids"]).astype(np.int64)),
            torch.from_numpy(_nested_numpy(table["topk_logprobs"]).astype(np.float32)))


def topk_bytes_per_token(k: int) -> int:
    """Uncompressed bytes one token position takes in the cache's top-k columns:
    k * (4 + 2) with int32 ids and float16 log-probs (full float32 logits take 4 * V)."""
    return k * (np.dtype(IDS_DTYPE).itemsize + np.dtype(LOGPROBS_DTYPE).itemsize)


def _nested_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(B, L, k) array -> fixed_size_list<fixed_size_list<_, k>, L> with B rows."""
    _, length, k = values.shape
    inner = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)),
                                              k)
    return pa.FixedSizeListArray.from_arrays(inner, length)


def _nested_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N, L, k) array of a nested fixed-size list column; `flatten` honours slices."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    length, k = column.type.list_size, column.type.value_type.list_size
    return column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, length, k)
