"""lm/train.py: real Ray Train + DeepSpeed runs (2 workers, CPU) of a tiny GPT-2 on the json
package's source, next-token and token-KD from a teacher's top-k cache."""

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distillery.lm.bpe import train_byte_level_bpe
from distillery.lm.text_data import pack_blocks, shift_block
from distillery.lm.token_losses import next_token_loss
from distillery.lm.topk import teacher_topk, topk_table
from distillery.lm.train import LMTrainJob, build_lm, fit_lm, load_lm_weights

BLOCK = 32
VAL_BLOCKS = 96
TRAIN = {"batch_size": 32, "lr": 3e-3, "schedule": "constant", "num_workers": 2,
         "checkpoint_every": 1, "max_failures": 0}


class ReportLog(ray.train.UserCallback):
    """Appends every report's metrics to a JSON-lines file. Callbacks run in the Train
    controller, another process, which cannot import this module: it travels by value."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics[0]) + "\n")


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def reports(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def gpt2_config(vocab_size: int, n_embd: int = 32) -> dict:
    # no dropout: the exported weights then score val exactly as the last epoch did
    return GPT2Config(n_layer=1, n_embd=n_embd, n_head=2, n_positions=BLOCK,
                      vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0).to_dict()


def blocks_table(blocks: np.ndarray) -> pa.Table:
    flat = pa.array(blocks.reshape(-1), pa.int32())
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(flat, BLOCK + 1)})


def val_loss_of(model: GPT2LMHeadModel, blocks: np.ndarray) -> float:
    inputs, labels = (torch.as_tensor(a).long() for a in shift_block(blocks))
    with torch.no_grad():
        logits = model.eval()(input_ids=inputs, use_cache=False).logits
    return next_token_loss(logits, labels, torch.ones_like(labels)).item()


def worker_output(capfd, until: str, timeout: float = 10.0) -> str:
    """What the workers printed, as the driver relays it (a moment after the run ends)."""
    output, deadline = "", time.monotonic() + timeout
    while until not in output and time.monotonic() < deadline:
        time.sleep(0.2)
        output += "".join(capfd.readouterr())
    return output


@pytest.fixture(scope="module")
def corpus():
    """~1k blocks of 32 tokens (a 300-token BPE on the json package's source): the last
    VAL_BLOCKS for val, the rest for train."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    texts = [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    tokenizer = train_byte_level_bpe(texts, 300)
    blocks = pack_blocks(tokenizer(texts, add_special_tokens=False)["input_ids"],
                         tokenizer.eos_token_id, BLOCK)
    return {"vocab_size": len(tokenizer), "train": blocks[:-VAL_BLOCKS],
            "val": blocks[-VAL_BLOCKS:]}


def datasets(corpus, train: pa.Table | None = None) -> dict:
    return {"train": ray.data.from_arrow(blocks_table(corpus["train"]) if train is None else train),
            "val": ray.data.from_arrow(blocks_table(corpus["val"]))}


@pytest.fixture(scope="module")
def teacher_run(local_ray, corpus, tmp_path_factory):
    """A next-token run stopped after epoch 1, then rerun in the same directory to 3 epochs
    (constant LR: the two runs make one 3-epoch run). Returns (first, second result, the
    second run's reports)."""
    root = tmp_path_factory.mktemp("teacher-run")
    job = LMTrainJob(model={"config": gpt2_config(corpus["vocab_size"])},
                     train={**TRAIN, "epochs": 1}, rows=len(corpus["train"]), label="teacher")
    first = fit_lm(job, datasets(corpus), str(root / "run"))
    job.train["epochs"] = 3
    log = root / "reports.jsonl"
    second = fit_lm(job, datasets(corpus), str(root / "run"), callbacks=[ReportLog(str(log))])
    return first, second, reports(log)


def test_a_rerun_resumes_after_the_checkpoint_and_val_loss_keeps_falling(teacher_run):
    first, second, later = teacher_run
    assert first.metrics["epoch"] == 1
    assert [r["epoch"] for r in later] == [2, 3]  # epoch 1 is not trained again
    val = [first.metrics["val_loss"], *(r["val_loss"] for r in later)]
    assert val[0] < np.log(300)  # below a uniform guess after one epoch
    assert val[2] < val[1] < val[0], val
    assert later[-1]["val_perplexity"] == pytest.approx(np.exp(val[2]))
    assert later[-1]["tokens_per_second"] > 0 and later[-1]["lr"] == pytest.approx(3e-3)
    assert second.metrics == later[-1]


def test_exported_weights_load_into_the_model_class_and_reproduce_val_loss(teacher_run, corpus):
    _, second, later = teacher_run
    model = GPT2LMHeadModel(GPT2Config.from_dict(gpt2_config(corpus["vocab_size"])))
    model.load_state_dict(load_lm_weights(second))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert val_loss_of(model, corpus["val"]) == pytest.approx(later[-1]["val_loss"], rel=1e-4)


def test_token_kd_from_a_teacher_topk_cache_lowers_its_kd_term(teacher_run, corpus, tmp_path,
                                                                capfd):
    _, second, _ = teacher_run
    teacher = GPT2LMHeadModel(GPT2Config.from_dict(gpt2_config(corpus["vocab_size"])))
    teacher.load_state_dict(load_lm_weights(second))
    inputs, _ = shift_block(corpus["train"])
    with torch.no_grad():
        logits = teacher.eval()(input_ids=torch.as_tensor(inputs).long(), use_cache=False).logits
    topk = topk_table(*teacher_topk(logits, k=8, temperature=2.0))
    cache = blocks_table(corpus["train"])
    for name in topk.column_names:
        cache = cache.append_column(name, topk[name])

    alpha = 0.7
    job = LMTrainJob(model={"config": gpt2_config(corpus["vocab_size"], n_embd=16)},
                     # one worker: the teacher run above is the two-worker one
                     train={**TRAIN, "epochs": 2, "num_workers": 1}, rows=len(cache),
                     strategy="token_kd",
                     params={"temperature": 2.0, "alpha": alpha, "kl": "forward"},
                     label="student")
    result = fit_lm(job, datasets(corpus, cache), str(tmp_path / "run"))
    output = worker_output(capfd, "[student] epoch 2/2 ")
    # 900 blocks, 32 a step: 29 steps, a progress line every 2, then the epoch line
    assert "[student] epoch 1/2 step 2/29 loss=" in output
    assert "[student] epoch 1/2 loss=" in output and " kd=" in output
    epochs = result.metrics_dataframe.sort_values("epoch")
    assert list(epochs["epoch"]) == [1, 2]
    assert epochs["train_kd"].iloc[1] < epochs["train_kd"].iloc[0]
    assert epochs["val_loss"].iloc[1] < epochs["val_loss"].iloc[0]
    # the loss is the weighted sum of its terms, batch by batch, so in the means too
    assert epochs["train_loss"].to_numpy() == pytest.approx(
        alpha * epochs["train_kd"].to_numpy() + (1 - alpha) * epochs["train_task"].to_numpy())


def test_token_kd_without_the_cache_columns_is_explained(local_ray, corpus, tmp_path):
    job = LMTrainJob(model={"config": gpt2_config(corpus["vocab_size"])},
                     train={**TRAIN, "epochs": 1}, rows=len(corpus["train"]),
                     strategy="token_kd",
                     params={"temperature": 2.0, "alpha": 0.5, "kl": "forward"})
    with pytest.raises(ValueError, match=r"no \['topk_ids', 'topk_logprobs'\]"):
        fit_lm(job, datasets(corpus), str(tmp_path / "run"))


def test_build_lm_makes_fresh_weights_from_a_config_or_loads_a_stored_model(tmp_path, corpus):
    from distillery.lm.artifacts import lm_card, save_lm
    from distillery.storage import Store

    config = gpt2_config(corpus["vocab_size"])
    fresh = build_lm({"config": config})
    assert isinstance(fresh, GPT2LMHeadModel) and fresh.config.n_embd == 32
    save_lm(Store(str(tmp_path)), ("teachers", "t", "fp"), fresh,
            train_byte_level_bpe(["def f(): pass"], 260), lm_card(fresh))
    stored = build_lm({"store": str(tmp_path), "parts": ["teachers", "t", "fp"]})
    assert stored.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in stored.state_dict().items())


@pytest.mark.parametrize("change, message", [
    ({"strategy": "token-kd"}, "LM strategy 'token-kd' is unknown; valid:"),
    ({"strategy": "token_kd", "params": {"temperature": 2.0}},
     r"strategy 'token_kd' takes params \['alpha', 'kl', 'temperature'\], got \['temperature'\]"),
    ({"params": {"alpha": 0.5}}, r"strategy 'next_token' takes params \[\], got \['alpha'\]"),
    ({"model": {"hf": "dir"}}, r"got keys \['hf'\]"),
])
def test_a_job_names_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        LMTrainJob(**{"model": {"config": {}}, "train": {}, "rows": 1, **change})
