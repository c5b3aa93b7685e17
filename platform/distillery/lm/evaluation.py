"""Language models side by side: validation perplexity, next-token agreement with the teacher,
tokens/s scoring and generating, and greedy samples; rendered as report.json, report.md and a
bar chart.

Every number comes from the packed validation blocks (N, L + 1) of lm.text_data: inputs are
blocks[:, :-1] and labels blocks[:, 1:], so each model is scored at the same N * L positions.
Models are called as Hugging Face causal LMs, `model(input_ids).logits` (B, L, V), on CPU.
"""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import torch
from matplotlib.figure import Figure
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from distillery.evaluation.plots import PALETTE, TEACHER_COLOR, _png
from distillery.evaluation.render import _md_row, fmt
from distillery.lm.text_data import shift_block
from distillery.lm.token_losses import next_token_loss
from distillery.storage import Store

CHART = "comparison.png"


def score(model: PreTrainedModel, blocks: np.ndarray, batch_size: int
          ) -> tuple[float, np.ndarray]:
    """(mean next-token cross-entropy in nats over all N * L positions, the model's argmax
    next token at each of them (N, L)), from (N, L + 1) blocks in batches of batch_size."""
    inputs, labels = (torch.from_numpy(a.astype(np.int64)) for a in shift_block(blocks))
    nll_sum, argmax = 0.0, []
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            x, y = inputs[start:start + batch_size], labels[start:start + batch_size]
            logits = model(x).logits  # (B, L, V)
            # next_token_loss is a mean over the batch's tokens: weigh it by their number
            nll_sum += next_token_loss(logits, y, torch.ones_like(y)).item() * y.numel()
            argmax.append(logits.argmax(-1).numpy())
    return nll_sum / labels.numel(), np.concatenate(argmax)


def perplexity(model: PreTrainedModel, blocks: np.ndarray, batch_size: int) -> float:
    """exp(mean over all N * L positions of -log softmax(model(inputs))[label])."""
    return math.exp(score(model, blocks, batch_size)[0])


def next_token_agreement(student: PreTrainedModel, teacher: PreTrainedModel, blocks: np.ndarray,
                         batch_size: int) -> float:
    """Share of the N * L positions where the student's argmax next token is the teacher's."""
    return agreement(score(student, blocks, batch_size)[1], score(teacher, blocks, batch_size)[1])


def agreement(predictions: np.ndarray, reference: np.ndarray) -> float:
    return float((predictions == reference).mean())


def tokens_per_second(model: PreTrainedModel, blocks: np.ndarray, batch_size: int,
                      seconds: float) -> float:
    """Positions scored per second by the forward pass over the first batch_size blocks: one
    warm-up pass, then passes until `seconds` have passed (at least one)."""
    x = torch.from_numpy(blocks[:batch_size, :-1].astype(np.int64))
    with torch.inference_mode():
        model(x)  # warm-up: first-call allocations and kernel selection are not timed
        passes, started = 0, time.perf_counter()
        while passes == 0 or time.perf_counter() - started < seconds:
            model(x)
            passes += 1
    return passes * x.numel() / (time.perf_counter() - started)


def generate_tokens_per_second(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                               prompts: list[str], max_new_tokens: int, seconds: float) -> float:
    """New tokens per second of greedy `generate`, one prompt at a time (batch 1), cycling
    through `prompts`: one warm-up call, then calls until `seconds` have passed (at least one).
    Every call makes exactly max_new_tokens (EOS is suppressed until then), so each model does
    the same work."""
    with torch.inference_mode():
        greedy(model, tokenizer, prompts[0], max_new_tokens, exact=True)  # warm-up
        calls, started = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - started < seconds:
            greedy(model, tokenizer, prompts[calls % len(prompts)], max_new_tokens, exact=True)
            calls += 1
    return calls * max_new_tokens / (time.perf_counter() - started)


def greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
           max_new_tokens: int, exact: bool = False) -> list[int]:
    """The new token ids of a greedy continuation of `prompt`, up to max_new_tokens (exactly
    that many when `exact`; otherwise it stops at EOS). The prompt follows an EOS, as every
    document after the first does in the packed training stream, so "def " is the start of a
    document and an empty prompt is allowed."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tokenizer.eos_token_id, *prompt_ids]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens,
                         min_new_tokens=max_new_tokens if exact else 0,
                         pad_token_id=tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def compare_lms(models: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]],
                teacher: str, val_blocks: np.ndarray, *, prompts: list[str],
                max_new_tokens: int, batch_size: int, seconds: float) -> dict:
    """Each model (name -> (model, tokenizer, card)) on the same val blocks (N, L + 1) and
    prompts; the teacher first. Per model: params and weight bytes (from the card), val
    perplexity, agreement with the teacher's argmax next token, tokens/s of the forward pass
    and of greedy generation; and each model's greedy continuation of each prompt."""
    names = [teacher, *(name for name in models if name != teacher)]
    teacher_argmax = None
    results = {}
    for name in names:
        model, tokenizer, card = models[name]
        nll, argmax = score(model, val_blocks, batch_size)
        if teacher_argmax is None:
            teacher_argmax = argmax
        results[name] = {
            "params": card["params"],
            "size_bytes": weight_bytes(card),
            "val_perplexity": math.exp(nll),
            "agreement_with_teacher": agreement(argmax, teacher_argmax),
            "tokens_per_s_forward": tokens_per_second(model, val_blocks, batch_size, seconds),
            "tokens_per_s_generate": generate_tokens_per_second(model, tokenizer, prompts,
                                                                max_new_tokens, seconds),
        }
        r = results[name]
        print(f"evaluate: {name}: val perplexity {r['val_perplexity']:.3f}, agreement "
              f"{r['agreement_with_teacher']:.4f}, {r['tokens_per_s_forward']:,.0f} tokens/s "
              f"forward, {r['tokens_per_s_generate']:,.1f} tokens/s generating", flush=True)
    samples = [{"prompt": prompt, "continuations": {
        name: models[name][1].decode(greedy(models[name][0], models[name][1], prompt,
                                            max_new_tokens), skip_special_tokens=True)
        for name in names}} for prompt in prompts]
    return {
        "teacher": teacher,
        "val": {"blocks": len(val_blocks), "block_size": val_blocks.shape[1] - 1,
                "tokens": val_blocks[:, 1:].size},
        "settings": {"batch_size": batch_size, "seconds": seconds,
                     "max_new_tokens": max_new_tokens, "threads": torch.get_num_threads()},
        "models": results,
        "samples": samples,
    }


def weight_bytes(card: dict) -> int:
    """Bytes of the weight files (safetensors) among the files save_lm recorded in the card;
    tokenizer and config files are left out, as every model has the same ones."""
    return sum(size for name, size in card["size_bytes"].items()
               if name.endswith(".safetensors"))


def render_lm_report(result: dict, out_dir: str) -> list[str]:
    """Write CHART, report.md and then report.json (last: a directory without it is an
    interrupted write) into out_dir, a local directory or a store URI; returns their URIs."""
    out = Store(str(out_dir))
    out.write_bytes(chart(result), CHART)
    out.write_bytes(markdown(result).encode(), "report.md")
    out.write_bytes(json.dumps(result, indent=2, allow_nan=False).encode(), "report.json")
    return [out.uri(name) for name in (CHART, "report.md", "report.json")]


PANELS = (("val perplexity (lower is better)", "val_perplexity"),
          ("forward, tokens/s", "tokens_per_s_forward"),
          ("greedy generation, tokens/s", "tokens_per_s_generate"))


def chart(result: dict) -> bytes:
    """One bar per model in each panel of PANELS, the teacher in TEACHER_COLOR; PNG bytes."""
    names = list(result["models"])
    colors = [TEACHER_COLOR, *(PALETTE[i % len(PALETTE)] for i in range(len(names) - 1))]
    fig = Figure(figsize=(3.0 * len(PANELS), 2.6), layout="constrained")
    for ax, (title, key) in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        values = [result["models"][name][key] for name in names]
        ax.bar(range(len(names)), values, color=colors)
        for i, value in enumerate(values):
            ax.annotate(f"{value:,.0f}" if value >= 100 else f"{value:.3g}", (i, value),
                        ha="center", va="bottom", fontsize=7)
        ax.set(xticks=range(len(names)), title=title)
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=7)
        ax.title.set_fontsize(9)
    return _png(fig)


def markdown(result: dict) -> str:
    val, settings = result["val"], result["settings"]
    header = ["model", "params", "weights (MiB)", "val perplexity", "agreement with teacher",
              "forward tokens/s", "generate tokens/s"]
    rows = [[name, fmt(m["params"]), f"{m['size_bytes'] / 2**20:.2f}",
             fmt(m["val_perplexity"], 3), fmt(m["agreement_with_teacher"]),
             fmt(round(m["tokens_per_s_forward"])), f"{m['tokens_per_s_generate']:,.1f}"]
            for name, m in result["models"].items()]
    lines = [
        f"# Language models compared (teacher `{result['teacher']}`)", "",
        f"Scored on {fmt(val['blocks'])} validation blocks of {val['block_size']} positions "
        f"({fmt(val['tokens'])} tokens). Perplexity is exp of the mean next-token "
        "cross-entropy; agreement is the share of positions where the model's most likely next "
        "token is the teacher's. Speed on CPU with "
        f"{settings['threads']} threads, after a warm-up, for {settings['seconds']:g} s per "
        f"measurement: the forward pass on batches of {settings['batch_size']} blocks, and "
        f"greedy generation of {settings['max_new_tokens']} tokens per prompt at batch 1.", "",
        _md_row(header), _md_row(["---"] * len(header)), *map(_md_row, rows), "",
        f"![Perplexity and tokens/s per model]({CHART})", "",
        "## Greedy samples", "",
    ]
    for sample in result["samples"]:
        lines += [f"Prompt: `{sample['prompt']}`", ""]
        for name, text in sample["continuations"].items():
            fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
            lines += [f"**{name}**", "", fence, sample["prompt"] + text, fence, ""]
    return "\n".join(lines)
