import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.lm.bpe import train_byte_level_bpe
from distillery.lm.text_data import (
    document_split,
    pack_blocks,
    packed_blocks,
    read_documents,
    shift_block,
)


def test_pack_blocks_cuts_overlapping_windows_of_the_eos_joined_stream():
    # stream 1 2 3 E 4 5 E 6 E (E = 0), block_size 3: windows at 0 and 3 share the token at 3;
    # the 2 tokens left over (6 E) do not fill a window and are dropped
    blocks = pack_blocks([[1, 2, 3], [4, 5], [6]], eos_id=0, block_size=3)
    assert blocks.dtype == np.int32
    assert blocks.tolist() == [[1, 2, 3, 0], [0, 4, 5, 0]]
    inputs, labels = shift_block(blocks)
    assert inputs.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert labels.tolist() == [[2, 3, 0], [4, 5, 0]]


def test_every_token_but_the_first_is_a_label_exactly_once():
    docs = [list(range(10, 10 + n)) for n in (5, 1, 7, 3)]  # stream of 20 tokens with EOS
    stream = [t for d in docs for t in (*d, 99)]
    blocks = pack_blocks(docs, eos_id=99, block_size=4)
    assert blocks.shape == (4, 5)  # (20 - 1) // 4
    assert shift_block(blocks)[1].reshape(-1).tolist() == stream[1:17]


def test_pack_blocks_of_too_little_text_is_empty():
    assert pack_blocks([[1, 2]], eos_id=0, block_size=3).shape == (0, 4)
    assert pack_blocks([], eos_id=0, block_size=3).shape == (0, 4)


def test_document_split_is_a_fixed_fraction_of_the_text_hash():
    # sha256("hello") starts 2cf24dba5fb0a30e: 0x2cf24dba5fb0a30e / 2^64 = 0.1756
    assert document_split("hello", 0.18) == "val"
    assert document_split("hello", 0.17) == "train"
    texts = [f"document {i}" for i in range(4000)]
    assert all(document_split(t, 0.0) == "train" for t in texts)
    assert all(document_split(t, 1.0) == "val" for t in texts)
    val = sum(document_split(t, 0.1) == "val" for t in texts)
    assert 340 <= val <= 460  # 400 expected; binomial sd 19


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five text files from the stdlib's json package, the same texts as JSONL and as Parquet,
    and a 300-token BPE tokenizer trained on them."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("corpus")
    texts = [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    paths = []
    for i, text in enumerate(texts):
        paths.append(str(root / f"doc{i}.txt"))
        Path(paths[-1]).write_text(text)
    (root / "docs.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n"
                                             for i, t in enumerate(texts)))
    pq.write_table(pa.table({"body": texts}), root / "docs.parquet")
    train_byte_level_bpe(texts, 300).save_pretrained(root / "tokenizer")
    return {"root": root, "texts": texts, "paths": paths}


def test_ray_reader_packs_each_split_as_the_pure_functions_do(local_ray, corpus):
    from distillery.models.hf_loaders import load_tokenizer

    root, texts = corpus["root"], corpus["texts"]
    for fmt, paths, field in (("text", corpus["paths"], None),
                              ("jsonl", str(root / "docs.jsonl"), "body"),
                              ("parquet", str(root / "docs.parquet"), "body")):
        assert read_documents(paths, fmt, field).to_pandas()["text"].tolist() == texts, fmt

    tokenizer = load_tokenizer(str(root / "tokenizer"))
    splits = [document_split(t, 0.5) for t in texts]
    assert sorted(set(splits)) == ["train", "val"]  # both sides hold documents
    documents = read_documents(corpus["paths"], "text")
    for split in ("train", "val"):
        ids = tokenizer([t for t, s in zip(texts, splits, strict=True) if s == split],
                        add_special_tokens=False)["input_ids"]
        expected = pack_blocks(ids, tokenizer.eos_token_id, 64)
        ds = packed_blocks(documents, str(root / "tokenizer"), 64, split, 0.5)
        got = np.stack(ds.to_pandas()["input_ids"].tolist())
        assert got.shape == expected.shape and len(got) > 10
        assert np.array_equal(got, expected), split


def test_reading_an_unknown_format_or_without_a_field_is_an_error(corpus):
    with pytest.raises(ValueError, match=r"unknown text format 'csv'; valid: \['text', "):
        read_documents(corpus["paths"], "csv")
    with pytest.raises(ValueError, match="format 'jsonl' needs the name of the field"):
        read_documents(str(corpus["root"] / "docs.jsonl"), "jsonl")
