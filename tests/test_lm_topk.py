import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from distillery.lm.token_losses import token_kd_loss
from distillery.lm.topk import teacher_topk, topk_bytes_per_token, topk_table, topk_tensors


def teacher_logits(seed: int, b: int = 3, length: int = 4, v: int = 20, scale: float = 2.0):
    return scale * torch.randn(b, length, v, generator=torch.Generator().manual_seed(seed))


def test_teacher_topk_keeps_the_k_most_likely_tokens_at_temperature():
    logits = teacher_logits(0)
    ids, logprobs = teacher_topk(logits, 5, 2.0)
    assert ids.dtype == torch.int32 and logprobs.dtype == torch.float16
    assert ids.shape == logprobs.shape == (3, 4, 5)
    full = F.log_softmax(logits / 2.0, dim=-1)
    # the ids are the 5 largest, in descending order, and the values are the full-vocabulary
    # log-probs there (not renormalized over the 5), to float16 precision
    assert torch.equal(ids.long(), full.argsort(dim=-1, descending=True)[..., :5])
    torch.testing.assert_close(logprobs.float(), full.gather(-1, ids.long()), rtol=1e-3,
                               atol=0)
    assert (logprobs.float().exp().sum(-1) < 1).all()


def test_table_round_trips_through_parquet(tmp_path):
    ids, logprobs = teacher_topk(teacher_logits(1), 6, 1.0)
    table = topk_table(ids, logprobs)
    assert table.schema.field("topk_ids").type == pa.list_(pa.list_(pa.int32(), 6), 4)
    assert table.schema.field("topk_logprobs").type == pa.list_(pa.list_(pa.float16(), 6), 4)
    pq.write_table(table, tmp_path / "cache.parquet")
    back_ids, back_logprobs = topk_tensors(pq.read_table(tmp_path / "cache.parquet"))
    assert back_ids.dtype == torch.int64 and back_logprobs.dtype == torch.float32
    assert torch.equal(back_ids, ids.long())
    assert torch.equal(back_logprobs, logprobs.float())


def test_tensors_of_a_sliced_table_are_the_slices_rows():
    ids, logprobs = teacher_topk(teacher_logits(2), 3, 1.0)
    back_ids, back_logprobs = topk_tensors(topk_table(ids, logprobs).slice(1, 2))
    assert torch.equal(back_ids, ids[1:3].long())
    assert torch.equal(back_logprobs, logprobs[1:3].float())


@pytest.mark.parametrize(("k", "expected"), [(16, 96), (32, 192), (64, 384)])
def test_bytes_per_token_is_what_the_columns_hold(k, expected):
    assert topk_bytes_per_token(k) == expected
    ids, logprobs = teacher_topk(teacher_logits(3, b=2, length=8, v=100), k, 1.0)
    table = topk_table(ids, logprobs)
    assert table.nbytes == 2 * 8 * topk_bytes_per_token(k)


def test_float16_storage_moves_the_loss_by_under_a_thousandth():
    # a peaked teacher over a 2k vocabulary, k = 32: the loss against the stored (float16)
    # log-probs against the same log-probs kept in float32
    g = torch.Generator().manual_seed(4)
    teacher = 4 * torch.randn(2, 16, 2000, generator=g)
    student = 4 * torch.randn(2, 16, 2000, generator=g)
    mask = torch.ones(2, 16, dtype=torch.bool)
    for temperature in (1.0, 2.0):
        ids, stored = teacher_topk(teacher, 32, temperature)
        exact = F.log_softmax(teacher / temperature, dim=-1).gather(-1, ids.long())
        for kind in ("forward", "reverse", "jsd"):
            a = token_kd_loss(student, ids, stored, mask, temperature, kind).item()
            b = token_kd_loss(student, ids, exact, mask, temperature, kind).item()
            assert abs(a - b) <= 1e-3 * b, (temperature, kind, a, b)

