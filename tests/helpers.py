"""What tests share that is not a fixture: the tiny spec, the reference paths, the CLI in a
subprocess, deploying the Serve app, students for the serving tests, the benches as modules,
the S3 client. Fixtures, and the rule that marks integration tests, are in conftest.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SPEC = ROOT / "jobs" / "configs" / "mnist1d.yaml"

# Small enough for 2 cores: ~1k labelled rows, 2k transfer rows, 2-3 epochs.
TINY = [
    "data.num_samples=1000",
    "data.transfer.num_samples=2000",
    "teacher.model.channels=[16,16]",
    "teacher.model.hidden=32",
    "teacher.train.epochs=2",
    "teacher.train.checkpoint_every=1",
    "teacher.inference.batch_size=512",
    "distill.epochs=2",
    "evaluate.latency.repetitions=20",
    "evaluate.latency.seconds=0.3",
]

BUCKET = "distillery-test"

# Alert webhooks read their URL from the environment in the router's process. Set here, before
# the session's Ray starts, so that its workers inherit it. The socket stays open from now on
# (a receiver serves on it), so that no process can take the port in between.
WEBHOOK_ENV, WEBHOOK_SOCKET = "DISTILLERY_TEST_WEBHOOK_URL", socket.create_server(("127.0.0.1", 0))
os.environ[WEBHOOK_ENV] = f"http://127.0.0.1:{WEBHOOK_SOCKET.getsockname()[1]}/hook"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sets(overrides: list[str]) -> list[str]:
    """`--set` arguments of the CLI for spec overrides."""
    return [arg for item in overrides for arg in ("--set", item)]


def tiny_overrides(store: Path, *extra: str) -> list[str]:
    return [*TINY, f"store={store}", *extra]


def tiny_spec(store: Path, *extra: str):
    from distillery.config import load_spec

    return load_spec(REFERENCE_SPEC, tiny_overrides(store, *extra))


def add_students(root) -> None:
    """`good`: the teacher's own weights (agreement 1); `bad`: random weights, the newest."""
    from distillery.config import parse_model_spec
    from distillery.models import build_model, model_card, save_model
    from distillery.storage import Store

    store = Store(str(root))
    teacher = ("teachers", "cnn-teacher",
               store.read_json("teachers", "cnn-teacher", "latest.json")["fingerprint"])
    card = store.read_json(*teacher, "card.json")
    for name in ("model.pt", "model.ts"):
        store.write_bytes(store.read_bytes(*teacher, name), "students", "good", name)
    # older than `bad` by construction (cards count whole seconds): `bad` is the newest
    store.write_json({**card, "role": "student", "run_id": "good",
                      "created": "2000-01-01T00:00:00Z"}, "students", "good", "card.json")
    spec = parse_model_spec({"arch": "cnn1d", "channels": [8, 16], "hidden": 16})
    model = build_model(spec, card["num_features"], card["num_classes"])
    save_model(store, ("students", "bad"), model, model_card(
        model, spec, num_features=card["num_features"], num_classes=card["num_classes"],
        role="student", run_id="bad", spec={"name": "mnist1d"}))


def deploy_app(spec, port: int, token: str) -> None:
    """The Serve app of `spec` on the session's local Ray, HTTP on 127.0.0.1:port."""
    from ray import serve

    from distillery.serving.admin import token_digest
    from distillery.serving.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(spec, token_digest(token)), name="distillery", route_prefix="/")


def run_cli(*args: str, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run the installed `distillery` CLI in a subprocess, as a user would (tests get it as the
    `cli` fixture, which marks them integration)."""
    return subprocess.run([sys.executable, "-m", "distillery.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


# A line Ray's log monitor forwards from another process: "(raylet) ..." or, colored or not,
# "(ServeController pid=22418) ...".
RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|\w+(:\w+)* pid=\d+)")


def replicas(deployment: str) -> dict[str, int]:
    """{Serve's replica id (the `replica` tag of its metrics): pid} of the live replicas of one
    deployment of the app."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:distillery:{deployment}"),
                                  ("state", "=", "ALIVE")])
    return {a.name.rsplit("#", 1)[1]: a.pid for a in actors}


def load_bench(name: str):
    """bench/<name>.py as a module. Registered in sys.modules: dataclasses look their module up
    while it executes, and Ray pickles what it defines (a Train callback) by value."""
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def smoke_bench(name: str, store: Path, tmp_path: Path, *argv: str) -> dict:
    """bench/<name>.py --smoke on `store`, with the students `add_students` makes (the newest is
    the one served), its results to tmp_path: the results it returns, once checked to be what
    it wrote, with BENCHMARKS.md left alone and nothing written into `store`'s serve/."""
    add_students(store)
    output = tmp_path / f"{name}.json"
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    result = load_bench(name).main(["--smoke", "--store", str(store), "--output", str(output),
                                    *argv])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks  # --smoke leaves it alone
    assert not (store / "serve").exists()  # nothing written into the user's store
    return result


def s3_client(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


TOPICS = {"animals": "cat dog horse bird fish cow sheep", "weather": "rain snow wind sun cloud "
          "storm fog", "food": "bread cheese apple soup rice cake tea"}
FILLER = "the a on in with and very today often some".split()


def text_task(folder: Path, rows: int = 600, transfer_rows: int = 1000, seed: int = 0) -> dict:
    """A small text classification task written under `folder`: a word-level tokenizer
    (tokenizer/), labelled rows (train.parquet: `text`, `topic`) whose topic is the most common
    of the topic words in them, and unlabeled rows (transfer.parquet). The spec's `data`
    section for them is returned."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [w for text in TOPICS.values() for w in text.split()] + FILLER
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                            cls_token="[CLS]", sep_token="[SEP]"
                            ).save_pretrained(folder / "tokenizer")
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)

    def sentences(n: int) -> tuple[list[str], list[str]]:
        texts, labels = [], []
        for _ in range(n):
            topic = names[rng.integers(len(names))]
            own = TOPICS[topic].split()
            other = TOPICS[names[(names.index(topic) + 1) % len(names)]].split()
            length = int(rng.integers(4, 20))
            picks = rng.choice(3, size=length, p=[0.45, 0.2, 0.35])  # own, other, filler
            text = [rng.choice(own if p == 0 else other if p == 1 else FILLER) for p in picks]
            texts.append(" ".join(text))
            labels.append(topic)
        return texts, labels

    texts, labels = sentences(rows)
    pq.write_table(pa.table({"text": texts, "topic": labels}), folder / "train.parquet")
    pq.write_table(pa.table({"text": sentences(transfer_rows)[0]}), folder / "transfer.parquet")
    return {"source": "parquet", "path": str(folder / "train.parquet"), "text": "text",
            "label": "topic", "tokenizer": str(folder / "tokenizer"), "max_length": 24,
            "transfer": {"path": str(folder / "transfer.parquet")}}


TINY_TEXT = ["teacher.name=text-teacher",
             "teacher.model={arch: hf, config: {model_type: bert, hidden_size: 32, "
             "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
             "max_position_embeddings: 32}}",
             "teacher.train.epochs=3", "teacher.train.lr=0.003", "teacher.train.num_workers=1",
             "teacher.train.batch_size=32", "teacher.inference.batch_size=256",
             "student.model={arch: hf, config: {model_type: bert, hidden_size: 16, "
             "num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, "
             "max_position_embeddings: 32}}",
             "distill.epochs=3", "distill.batch_size=32", "distill.num_workers=1",
             "evaluate.shifts=[]", "evaluate.latency.repetitions=20",
             "evaluate.latency.seconds=0.3"]
"""Overrides of the reference spec for text_task's data: two tiny BERTs, a few epochs."""
