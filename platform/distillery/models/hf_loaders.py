"""Hugging Face causal LMs, sequence classifiers and tokenizers from local directories, never
from a hub.

Token-level distillation compares the teacher's and the student's distributions id by id, so
both must share one vocabulary: check_same_vocabulary says what differs and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging


def load_causal_lm(path: str, where: str = "model") -> PreTrainedModel:
    """AutoModelForCausalLM from a directory written by save_pretrained; `where` names the
    spec field in errors."""
    _require_files(path, ("config.json",), where, "model")
    try:
        # fp32 whatever the saved dtype: training keeps fp32 weights (DeepSpeed casts for
        # bf16), and a bf16 copy would round every small update away
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                    dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: cannot load the model in {path}: {_one_line(e)}") from None


def load_tokenizer(path: str, where: str = "tokenizer") -> PreTrainedTokenizerBase:
    """AutoTokenizer from a directory written by save_pretrained."""
    _require_files(path, ("tokenizer.json", "tokenizer_config.json"), where, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: cannot load the tokenizer in {path}: {_one_line(e)}"
                         ) from None


def _require_files(path: str, names: tuple[str, ...], where: str, what: str) -> None:
    """At least one of `names` in the directory `path`. Checked here because transformers
    takes a path that is not a directory for a hub repo id and answers about repo names."""
    hint = f"give the local directory a Hugging Face {what} was saved to (nothing is downloaded)"
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{where}: no directory {path}; {hint}")
    if not any((Path(path) / name).is_file() for name in names):
        raise FileNotFoundError(f"{where}: no {' or '.join(names)} in {path}; {hint}")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_same_vocabulary(teacher: PreTrainedTokenizerBase,
                          student: PreTrainedTokenizerBase) -> None:
    """Raise ValueError naming every difference between the teacher's and the student's
    tokenizers: vocabulary size (added tokens included), special tokens and their ids, and
    the first id whose token differs."""
    differences = []
    if len(teacher) != len(student):
        differences.append(f"vocabulary size {len(teacher)} (teacher) vs {len(student)} "
                           "(student)")
    t_special, s_special = _special_tokens(teacher), _special_tokens(student)
    for role in sorted(t_special.keys() | s_special.keys()):
        if t_special.get(role) != s_special.get(role):
            differences.append(f"{role} {t_special.get(role)} (teacher) vs "
                               f"{s_special.get(role)} (student)")
    if teacher.get_vocab() != student.get_vocab():
        n = min(len(teacher), len(student))
        t_tokens = teacher.convert_ids_to_tokens(list(range(n)))
        s_tokens = student.convert_ids_to_tokens(list(range(n)))
        first = next((i for i in range(n) if t_tokens[i] != s_tokens[i]), None)
        if first is not None:
            differences.append(f"first differing token: id {first} is {t_tokens[first]!r} "
                               f"(teacher) vs {s_tokens[first]!r} (student)")
    if differences:
        raise ValueError(
            "teacher and student tokenizers differ: " + "; ".join(differences) + ". Token-level "
            "distillation compares them id by id: give the student the teacher's tokenizer "
            "(build student.hf from a config, or save the teacher's tokenizer into its "
            "directory and retrain it), or pick a teacher and student that share one")


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, tuple[str, int]]:
    """role -> (token, id), e.g. eos_token -> ('<|endoftext|>', 0), for the roles that shape
    the token stream. pad_token is left out: padded positions are masked, and a student given
    pad = eos for batching still shares the teacher's vocabulary."""
    return {role: (token, tokenizer.convert_tokens_to_ids(token))
            for role, token in tokenizer.special_tokens_map.items()
            if isinstance(token, str) and role != "pad_token"}


def load_sequence_classifier(path: str, num_labels: int, where: str = "model") -> PreTrainedModel:
    """AutoModelForSequenceClassification from a directory written by save_pretrained, with a
    head of `num_labels`: a saved classifier's own head when its size matches, else a new one
    (an encoder checkpoint has none; training fits it)."""
    _require_files(path, ("config.json",), where, "model")
    # quiet: "newly initialized" head weights are expected here, and a progress bar per load
    # would print in every inference actor
    with quiet_transformers():
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, local_files_only=True, dtype=torch.float32,
                ignore_mismatched_sizes=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: cannot load the model in {path}: {_one_line(e)}"
                             ) from None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off for the block, as they were after it."""
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
