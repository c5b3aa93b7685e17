import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distillery.lm.bpe import END_OF_TEXT, train_byte_level_bpe
from distillery.models.hf_loaders import check_same_vocabulary, load_causal_lm, load_tokenizer

STDLIB_JSON = sorted(Path(json.__file__).parent.glob("*.py"))


def save_tiny_gpt2(directory: Path, vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64,
                                       vocab_size=vocab_size, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 and a 300-token byte-level BPE trained on the json package's source."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    directory = tmp_path_factory.mktemp("teacher")
    tokenizer = train_byte_level_bpe([p.read_text() for p in STDLIB_JSON], 300)
    tokenizer.save_pretrained(directory)
    save_tiny_gpt2(directory, len(tokenizer))
    return directory


def test_byte_level_bpe_encodes_any_text_and_ends_text_with_id_0():
    tokenizer = train_byte_level_bpe([p.read_text() for p in STDLIB_JSON], 300)
    assert len(tokenizer) == 300
    assert tokenizer.eos_token == tokenizer.bos_token == END_OF_TEXT
    assert tokenizer.eos_token_id == 0
    text = "def héllo(x):\n    return x  # ✓ unseen bytes too\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # the merges learned from the corpus apply


def test_loads_model_and_tokenizer_from_local_directories(teacher_dir):
    model = load_causal_lm(str(teacher_dir), "teacher.hf")
    tokenizer = load_tokenizer(str(teacher_dir), "teacher.hf")
    ids = tokenizer("import json", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 300)
    saved = save_tiny_gpt2(teacher_dir.parent / "same", 300)  # same seed: same weights
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 saved.state_dict().values(), strict=True))


@pytest.mark.parametrize("load", [load_causal_lm, load_tokenizer])
def test_a_missing_directory_is_a_one_line_error_naming_field_and_path(load):
    with pytest.raises(FileNotFoundError) as e:
        load("/nonexistent/gpt2", "teacher.hf")
    message = str(e.value)
    assert message.startswith("teacher.hf: no directory /nonexistent/gpt2;")
    assert "\n" not in message


@pytest.mark.parametrize(("load", "missing"), [
    (load_causal_lm, "config.json"), (load_tokenizer, "tokenizer.json or tokenizer_config.json")])
def test_a_directory_without_the_files_names_them(tmp_path, load, missing):
    with pytest.raises(FileNotFoundError) as e:
        load(str(tmp_path), "student.hf")
    assert str(e.value).startswith(f"student.hf: no {missing} in {tmp_path};")


def test_unloadable_files_are_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError) as e:
        load_causal_lm(str(tmp_path), "student.hf")
    message = str(e.value)
    assert message.startswith(f"student.hf: cannot load the model in {tmp_path}:")
    assert "\n" not in message


def test_the_same_tokenizer_saved_twice_matches(teacher_dir, tmp_path):
    load_tokenizer(str(teacher_dir)).save_pretrained(tmp_path)
    check_same_vocabulary(load_tokenizer(str(teacher_dir)), load_tokenizer(str(tmp_path)))


def test_a_different_vocabulary_is_explained(teacher_dir):
    teacher = load_tokenizer(str(teacher_dir))
    # trained on other files: other merges, and 20 fewer of them
    student = train_byte_level_bpe([Path(logging.__file__).read_text()], 280)
    t_tokens = teacher.convert_ids_to_tokens(list(range(280)))
    s_tokens = student.convert_ids_to_tokens(list(range(280)))
    first = next(i for i in range(280) if t_tokens[i] != s_tokens[i])
    with pytest.raises(ValueError) as e:
        check_same_vocabulary(teacher, student)
    message = str(e.value)
    assert "vocabulary size 300 (teacher) vs 280 (student)" in message
    assert (f"first differing token: id {first} is {t_tokens[first]!r} (teacher) vs "
            f"{s_tokens[first]!r} (student)") in message
    assert "give the student the teacher's tokenizer" in message
    assert first >= 257  # the byte alphabet and <|endoftext|> agree; the merges do not


def test_a_different_end_of_text_token_is_explained(teacher_dir):
    teacher = load_tokenizer(str(teacher_dir))
    student = load_tokenizer(str(teacher_dir))
    student.eos_token = "Ġ"  # a token both vocabularies hold, in another role
    with pytest.raises(ValueError, match=r"eos_token \('<\|endoftext\|>', 0\) \(teacher\) vs "
                                         r"\('Ġ', \d+\) \(student\)"):
        check_same_vocabulary(teacher, student)


def test_padding_roles_do_not_count(teacher_dir):
    # GPT-2 students often set pad = eos for batching; padded positions are masked anyway
    teacher = load_tokenizer(str(teacher_dir))
    student = load_tokenizer(str(teacher_dir))
    student.pad_token = student.eos_token
    check_same_vocabulary(teacher, student)
