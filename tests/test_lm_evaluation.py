import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutput

from distillery.lm.artifacts import lm_card
from distillery.lm.bpe import train_byte_level_bpe
from distillery.lm.evaluation import (
    compare_lms,
    greedy,
    next_token_agreement,
    perplexity,
    render_lm_report,
    tokens_per_second,
)

# N = 3 blocks of L = 3 positions over a 3-token vocabulary; inputs are [:, :-1]
BLOCKS = np.array([[0, 0, 1, 2], [1, 2, 0, 0], [2, 2, 2, 2]], dtype=np.int32)


class Bigram(torch.nn.Module):
    """A causal LM whose logits at a position depend only on the token there: table[token]."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, input_ids):
        return CausalLMOutput(logits=self.table[input_ids])


def test_perplexity_is_exp_of_the_mean_cross_entropy_over_all_tokens():
    # next-token probabilities: after 0 -> (1/2, 1/4, 1/4), after 1 -> (1/4, 1/4, 1/2),
    # after 2 -> uniform
    model = Bigram(np.log([[2, 1, 1], [1, 1, 2], [1, 1, 1]]))
    # pairs (0,0) (0,1) (1,2) | (1,2) (2,0) (0,0) | (2,2) x3: NLL ln2 ln4 ln2 | ln2 ln3 ln2 |
    # 3 ln3 = 6 ln2 + 4 ln3 over 9 tokens
    expected = 2 ** (6 / 9) * 3 ** (4 / 9)
    for batch_size in (1, 2, 3):  # a short last batch weighs by its tokens, not as a batch
        assert perplexity(model, BLOCKS, batch_size) == pytest.approx(expected, rel=1e-6)


def test_agreement_is_the_share_of_positions_with_the_same_argmax():
    cycle = Bigram(np.eye(3)[[1, 2, 0]])  # argmax next token: 0 -> 1, 1 -> 2, 2 -> 0
    other = Bigram(np.eye(3)[[1, 0, 0]])  # 0 -> 1, 1 -> 0, 2 -> 0: differs after token 1
    assert next_token_agreement(cycle, cycle, BLOCKS, 2) == 1.0
    # inputs 0 0 1 | 1 2 0 | 2 2 2: 2 of 9 positions hold token 1
    assert next_token_agreement(other, cycle, BLOCKS, 2) == pytest.approx(7 / 9)


def test_tokens_per_second_times_at_least_one_pass():
    model = Bigram(np.eye(3))
    assert tokens_per_second(model, BLOCKS, 2, seconds=0.0) > 0


@pytest.fixture(scope="module")
def lms():
    """A 300-token BPE and three tiny GPT-2s that share it (different seeds)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    texts = [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    tokenizer = train_byte_level_bpe(texts, 300)
    out = {}
    for seed, name in enumerate(("teacher", "kd", "next-token")):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64,
                                           vocab_size=300, bos_token_id=0, eos_token_id=0,
                                           initializer_range=0.5)).eval()
        card = lm_card(model, size_bytes={"model.safetensors": 1000 * (seed + 1),
                                          "tokenizer.json": 77})
        out[name] = (model, tokenizer, card)
    blocks = np.random.default_rng(0).integers(0, 300, (6, 17), dtype=np.int32)
    return out, blocks


def test_generation_timing_makes_exactly_max_new_tokens_even_past_eos(lms):
    models, _ = lms
    _, tokenizer, _ = models["teacher"]
    # every weight 0 but the embedding of EOS: after EOS its logit is the only positive one,
    # after any other token all logits tie and argmax picks id 0; so greedy always says EOS
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64,
                                       vocab_size=300, bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight[0] = torch.tensor([-1.0] * 8 + [1.0] * 8)
        for ln in (model.transformer.ln_f, model.transformer.h[0].ln_1,
                   model.transformer.h[0].ln_2):
            ln.weight.fill_(1.0)
    assert greedy(model, tokenizer, "def ", 5) == [0]
    assert len(greedy(model, tokenizer, "def ", 5, exact=True)) == 5


def test_compare_lms_puts_the_teacher_first_and_scores_every_model(lms, tmp_path):
    models, blocks = lms
    result = compare_lms({k: models[k] for k in ("kd", "teacher", "next-token")}, "teacher",
                         blocks, prompts=["def ", ""], max_new_tokens=4, batch_size=4,
                         seconds=0.01)
    assert list(result["models"]) == ["teacher", "kd", "next-token"]
    assert result["val"] == {"blocks": 6, "block_size": 16, "tokens": 96}
    teacher = result["models"]["teacher"]
    assert teacher["agreement_with_teacher"] == 1.0
    for name, (model, _, card) in models.items():
        m = result["models"][name]
        assert m["params"] == card["params"]
        assert m["size_bytes"] == card["size_bytes"]["model.safetensors"]  # weights only
        assert m["val_perplexity"] == pytest.approx(perplexity(model, blocks, 6), rel=1e-6)
        if name != "teacher":
            assert m["agreement_with_teacher"] == pytest.approx(
                next_token_agreement(model, models["teacher"][0], blocks, 5))
        assert m["tokens_per_s_forward"] > 0 and m["tokens_per_s_generate"] > 0
    assert [s["prompt"] for s in result["samples"]] == ["def ", ""]
    for sample in result["samples"]:
        for name, text in sample["continuations"].items():
            _, tokenizer, _ = models[name]
            assert text == tokenizer.decode(greedy(models[name][0], tokenizer, sample["prompt"],
                                                   4), skip_special_tokens=True)

    paths = render_lm_report(result, str(tmp_path / "report"))
    assert [Path(p).name for p in paths] == ["comparison.png", "report.md", "report.json"]
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == result
    assert (tmp_path / "report" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| model | params | weights (MiB) | val perplexity |" in md
    for name in models:
        ppl = result["models"][name]["val_perplexity"]
        assert f"| {name} | {result['models'][name]['params']:,} |" in md
        assert f" {ppl:.3f} |" in md
    assert "![Perplexity and tokens/s per model](comparison.png)" in md
