"""The language-model pipeline's stages: tokenizer and packed data, train-teacher,
teacher-infer (top-k cache), distill (token KD), baseline (next-token only) and evaluate.

As in distillery.stages, each stage reads the spec and the store and commits what it writes,
so the stages run one by one or chained (`lm.quickstart`) with the same result, and a stage
whose output is in the store is not redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from transformers import CONFIG_MAPPING, PreTrainedModel

from distillery.config import TrainSpec
from distillery.config.lm import LMPipelineSpec, TokenizerTrainSpec, text_files
from distillery.data.splits import fixed_list_to_numpy
from distillery.lm.artifacts import HF_DIR, lm_card, load_lm, local_hf_dir, save_lm
from distillery.lm.bpe import train_byte_level_bpe
from distillery.lm.cache import build_topk_cache, read_topk_cache
from distillery.lm.evaluation import compare_lms, render_lm_report
from distillery.lm.text_data import document_split, packed_blocks, read_documents
from distillery.lm.train import LMTrainJob, build_lm, fit_lm, load_lm_weights
from distillery.models.hf_loaders import check_same_vocabulary, load_causal_lm, load_tokenizer
from distillery.runtime import new_run_id, unfinished_runs
from distillery.storage import Store
from distillery.store_layout import (
    MANIFEST,
    STUDENTS,
    exported_students,
    has_card,
    latest_teacher,
    lm_data_dir,
    newest_run,
    read_card,
    record_teacher,
    report_dir,
    student_dir,
    student_init_dir,
    teacher_dir,
    teacher_run_dir,
    tokenizer_dir,
)
from distillery.train import ingest_rows

SPLITS = ("train", "val")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model")


@dataclass
class LMPipeline:
    spec: LMPipelineSpec

    @cached_property
    def store(self) -> Store:
        return Store(self.spec.store)

    # ------------------------------------------------------------ data

    def documents(self) -> ray.data.Dataset:
        d = self.spec.data
        files = text_files(d)
        if d.format == "text" and d.max_documents:
            files = files[: d.max_documents]
        ds = read_documents(files, d.format, d.field)
        return ds.limit(d.max_documents) if d.max_documents and d.format != "text" else ds

    @cached_property
    def corpus_fingerprint(self) -> str:
        """The corpus as read: the data spec without the tokenizer, and each file's path, size
        and modification time (hashing contents would read a large corpus twice)."""
        d = self.spec.data
        h = hashlib.sha256(d.model_dump_json(exclude={"tokenizer", "block_size"}).encode())
        for path in text_files(d):
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    @cached_property
    def tokenizer_location(self) -> str:
        """Where the tokenizer every model of the pipeline shares is: a local directory, or
        the store's copy of one trained here (which every node can read)."""
        tok = self.spec.data.tokenizer
        if isinstance(tok, TokenizerTrainSpec):
            return self._trained_tokenizer(tok)
        # a directory (data.tokenizer, else a pretrained teacher's: the spec checks) is copied
        # into the store, which every node reads
        where = "data.tokenizer" if tok else "teacher.hf"
        local = tok or self.spec.teacher.hf
        load_tokenizer(local, where)  # a one-line error here, not in a Ray Data actor
        files = sorted(p for p in Path(local).iterdir() if p.is_file()
                       and p.name in TOKENIZER_FILES)
        h = hashlib.sha256()
        for path in files:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        parts = tokenizer_dir(h.hexdigest()[:16])
        if not self.store.exists(*parts, MANIFEST):
            for path in files:
                self.store.write_bytes(path.read_bytes(), *parts, HF_DIR, path.name)
            self.store.write_json({"source": str(local)}, *parts, MANIFEST)
        return self.store.uri(*parts, HF_DIR)

    def _trained_tokenizer(self, tok: TokenizerTrainSpec) -> str:
        fp = hashlib.sha256(f"{self.corpus_fingerprint}-{tok.vocab_size}".encode()
                            ).hexdigest()[:16]
        parts = tokenizer_dir(fp)
        if not self.store.exists(*parts, MANIFEST):
            val_fraction = self.spec.data.val_fraction
            texts = (text for batch in self.documents().iter_batches(batch_format="pyarrow")
                     for text in batch["text"].to_pylist()
                     if document_split(text, val_fraction) == "train")
            print(f"data: training a {tok.vocab_size}-token byte-level BPE on the train "
                  "documents", flush=True)
            tokenizer = train_byte_level_bpe(texts, tok.vocab_size)
            with tempfile.TemporaryDirectory() as tmp:
                tokenizer.save_pretrained(tmp)
                for path in sorted(Path(tmp).iterdir()):
                    self.store.write_bytes(path.read_bytes(), *parts, HF_DIR, path.name)
            self.store.write_json({"vocab_size": len(tokenizer)}, *parts, MANIFEST)
        return self.store.uri(*parts, HF_DIR)

    @cached_property
    def tokenizer(self):
        return load_tokenizer(local_hf_dir(self.tokenizer_location), "data.tokenizer")

    @cached_property
    def data_fingerprint(self) -> str:
        """Packed blocks: the corpus, the tokenizer's vocabulary and the block size."""
        vocab = json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()
        h = hashlib.sha256(self.corpus_fingerprint.encode())
        h.update(hashlib.sha256(vocab).digest())
        h.update(f"block_size={self.spec.data.block_size}".encode())
        return h.hexdigest()[:16]

    def blocks(self, split: str) -> ray.data.Dataset:
        """The packed `split` blocks (`input_ids`, block_size + 1 tokens), written to the store
        once and read from there on."""
        parts = lm_data_dir(self.data_fingerprint)
        if not self.store.exists(*parts, MANIFEST):
            self.store.remove_dir(*parts)
            d = self.spec.data
            counts = {}
            for name in SPLITS:
                ds = packed_blocks(self.documents(), self.tokenizer_location, d.block_size, name,
                                   d.val_fraction)
                ds.write_parquet(self.store.fs_path(*parts, name), filesystem=self.store.fs)
                # Ray Data writes no directory at all for a split without a block
                counts[name] = (self._read(parts, name).count()
                                if self.store.exists(*parts, name) else 0)
            if not counts["train"] or not counts["val"]:
                raise ValueError(f"data: {counts['train']} train and {counts['val']} val blocks "
                                 f"of {d.block_size} tokens; give more text, a smaller "
                                 "block_size or another val_fraction")
            self.store.write_json({"blocks": counts, "block_size": d.block_size,
                                   "tokens": {k: v * d.block_size for k, v in counts.items()}},
                                  *parts, MANIFEST)
            print(f"data: packed {counts['train']} train and {counts['val']} val blocks of "
                  f"{d.block_size} tokens -> {self.store.uri(*parts)}", flush=True)
        return self._read(parts, split)

    def _read(self, parts: tuple[str, ...], split: str) -> ray.data.Dataset:
        return ray.data.read_parquet(self.store.fs_path(*parts, split),
                                     filesystem=self.store.fs, file_extensions=["parquet"])

    def val_blocks(self, limit: int | None = None) -> np.ndarray:
        """(N, block_size + 1) int64: the first `limit` val blocks."""
        ds = self.blocks("val")
        if limit:
            ds = ds.limit(limit)
        column = pa.concat_tables(ds.iter_batches(batch_format="pyarrow"))["input_ids"]
        return fixed_list_to_numpy(column).astype(np.int64)

    # ------------------------------------------------------------ models

    def hf_config(self, hf: dict, where: str) -> dict:
        """A config mapping of the spec, completed from the tokenizer and the block size."""
        config = dict(hf)
        model_type = config.pop("model_type")
        eos = self.tokenizer.eos_token_id
        defaults = {"vocab_size": len(self.tokenizer), "bos_token_id": eos,
                    "eos_token_id": eos}
        if model_type == "gpt2":
            defaults["n_positions"] = self.spec.data.block_size
        config = CONFIG_MAPPING[model_type](**{**defaults, **config})
        self.check_fits(config, where)
        return config.to_dict()

    def check_fits(self, config, where: str) -> None:
        """Every token id of the tokenizer has an embedding, and a block fits the context."""
        if config.vocab_size < len(self.tokenizer):
            raise ValueError(f"{where}.vocab_size: {config.vocab_size} is smaller than the "
                             f"tokenizer's {len(self.tokenizer)} tokens")
        context = context_length(config)
        if context is not None and context < self.spec.data.block_size:
            raise ValueError(f"{where}: a context of {context} positions is shorter than "
                             f"data.block_size {self.spec.data.block_size}")

    @cached_property
    def teacher_spec_hash(self) -> str:
        """What makes the teacher: its model, training and the data it learns from."""
        t = self.spec.teacher
        h = hashlib.sha256(t.model_dump_json(include={"hf", "train"}).encode())
        h.update(self.data_fingerprint.encode())
        return h.hexdigest()[:16]

    def teacher_parts(self) -> tuple[str, ...]:
        """The stored teacher of this spec; an error when there is none, or when it was made
        from another teacher section or other data (a stale teacher would be reused silently)."""
        name = self.spec.teacher.name
        latest = latest_teacher(self.store, name)
        if latest is None:
            raise FileNotFoundError(f"no teacher {name!r} in {self.store.root}; run "
                                    "`distillery train-teacher` first")
        if latest.get("teacher_spec_hash") != self.teacher_spec_hash:
            raise FileNotFoundError(f"teacher: the stored {name!r} was made from another "
                                    "teacher section or other data; run `distillery "
                                    "train-teacher` again")
        return teacher_dir(name, latest["fingerprint"])

    def train_teacher(self) -> dict:
        """Train the teacher here on next-token loss, or import a pretrained one."""
        t = self.spec.teacher
        if t.pretrained:
            model = load_causal_lm(t.hf, "teacher.hf")
            self.check_fits(model.config, "teacher.hf")
            check_same_vocabulary(load_tokenizer(t.hf, "teacher.hf"), self.tokenizer)
            metrics: dict = {}
        else:
            config = self.hf_config(t.hf, "teacher.hf")
            run_id = new_run_id(t.name)
            result = self._fit(LMTrainJob(model={"config": config},
                                          train=t.train.model_dump(), rows=0,
                                          strategy="next_token", label=f"teacher {t.name}"),
                               t.train, self.blocks("train"),
                               self.store.uri(*teacher_run_dir(t.name, run_id)))
            model = build_lm({"config": config})
            model.load_state_dict(load_lm_weights(result))
            metrics = {"val_perplexity": result.metrics["val_perplexity"], "run_id": run_id}
        fp = weights_fingerprint(model)
        parts = teacher_dir(t.name, fp)
        card = save_lm(self.store, parts, model, self.tokenizer,
                       lm_card(model, role="teacher", fingerprint=fp,
                               data_fingerprint=self.data_fingerprint, metrics=metrics,
                               spec=self.spec.model_dump()))
        record_teacher(self.store, t.name, fp, teacher_spec_hash=self.teacher_spec_hash)
        print(f"train-teacher: {t.name}: {card['params']:,} params -> {self.store.uri(*parts)}",
              flush=True)
        return card

    def ensure_teacher(self) -> None:
        """Train the teacher unless the store holds this spec's."""
        try:
            self.teacher_parts()
        except FileNotFoundError:
            self.train_teacher()

    # ------------------------------------------------------------ cache

    def teacher_infer(self) -> dict:
        """The teacher's top-k log-probs on every train token (built once per teacher, data,
        k and temperature)."""
        d = self.spec.distill
        parts = self.teacher_parts()
        return build_topk_cache(
            self.store, self.blocks("train"), teacher_parts=parts,
            teacher_fp=parts[-1], data_fp=self.data_fingerprint, k=d.topk,
            temperature=d.temperature, inference=self.spec.teacher.inference,
            spec_hash=self.spec.spec_hash())

    # ------------------------------------------------------------ students

    def student_start(self) -> dict:
        """LMTrainJob.model of the student: a config (fresh weights) or its directory's
        weights, imported into the store so that every worker can read them."""
        hf = self.spec.student.hf
        teacher_vocab = read_card(self.store, self.teacher_parts())["vocab_size"]
        if isinstance(hf, dict):
            start = {"config": self.hf_config(hf, "student.hf")}
            vocab = start["config"]["vocab_size"]
        else:
            model = load_causal_lm(hf, "student.hf")
            self.check_fits(model.config, "student.hf")
            check_same_vocabulary(self.tokenizer, load_tokenizer(hf, "student.hf"))
            vocab = model.config.vocab_size
        # every id the teacher's top-k can name must index the student's logits
        if vocab < teacher_vocab:
            raise ValueError(f"student.hf.vocab_size: {vocab} is smaller than the teacher's "
                             f"{teacher_vocab}")
        if isinstance(hf, dict):
            return start
        fp = weights_fingerprint(model)
        parts = student_init_dir(fp)
        if not has_card(self.store, parts):
            save_lm(self.store, parts, model, self.tokenizer, lm_card(model, role="init"))
        return {"store": self.store.root, "parts": list(parts)}

    def distill(self, run_id: str | None = None) -> dict:
        """Token-level KD from the top-k cache plus next-token loss."""
        d = self.spec.distill
        manifest = self.teacher_infer()
        run_id = run_id or new_run_id(self.spec.name)
        job = LMTrainJob(model=self.student_start(), train=d.model_dump(
            include=set(TrainSpec.model_fields)), rows=0, strategy="token_kd",
            params={"temperature": d.temperature, "alpha": d.alpha, "kl": d.kl},
            label="student")
        result = self._fit(job, d, read_topk_cache(self.store, manifest["key"]),
                           self.store.uri(*student_dir(run_id)))
        return self._export(run_id, "student", job.model, result,
                            {"cache": manifest["key"], "strategy": "token_kd"})

    def baseline(self, run_id: str | None = None) -> dict:
        """The student on next-token loss alone: same data, epochs, batch size and steps."""
        d = self.spec.distill
        run_id = run_id or f"{new_run_id(self.spec.name)}-baseline"
        job = LMTrainJob(model=self.student_start(), train=d.model_dump(
            include=set(TrainSpec.model_fields)), rows=0, strategy="next_token",
            label="baseline")
        result = self._fit(job, d, self.blocks("train"), self.store.uri(*student_dir(run_id)))
        return self._export(run_id, "baseline", job.model, result, {"strategy": "next_token"})

    def _export(self, run_id: str, role: str, start: dict, result, extra: dict) -> dict:
        model = build_lm(start)
        model.load_state_dict(load_lm_weights(result))
        parts = student_dir(run_id)
        card = save_lm(self.store, parts, model, self.tokenizer, lm_card(
            model, role=role, run_id=run_id, teacher_fingerprint=self.teacher_parts()[-1],
            data_fingerprint=self.data_fingerprint,
            metrics={"val_perplexity": result.metrics["val_perplexity"]},
            spec=self.spec.model_dump(), **extra))
        print(f"{role}: {card['params']:,} params, val perplexity "
              f"{card['metrics']['val_perplexity']:.2f} -> {self.store.uri(*parts)}", flush=True)
        return card

    def _fit(self, job: LMTrainJob, train: TrainSpec, train_ds: ray.data.Dataset,
             run_dir: str):
        job.rows = train_ds.count()
        train_ds, train = ingest_rows(train_ds, train, job.rows)
        job.train = {**job.train, "ingest": train.ingest}  # `auto` resolved, for the workers
        val_ds = self.blocks("val").materialize()
        print(f"{job.label}: training on {job.rows} blocks of {self.spec.data.block_size} "
              f"tokens with {train.num_workers} workers ({train.ingest}) -> {run_dir}",
              flush=True)
        return fit_lm(job, {"train": train_ds, "val": val_ds}, run_dir)

    def unfinished_runs(self) -> list[str]:
        """Run ids of this spec's distill runs without an exported card, oldest first."""
        return unfinished_runs(self.store, self.spec.name, STUDENTS)

    # ------------------------------------------------------------ evaluate

    def newest(self, role: str) -> str:
        run = newest_run(exported_students(self.store, self.spec.name), role)
        if run is None:
            raise FileNotFoundError(f"no {role} of {self.spec.name!r} in {self.store.root}; "
                                    f"run `distillery {'distill' if role == 'student' else role}`"
                                    " first")
        return run

    def evaluate(self, run_id: str | None = None) -> dict:
        """Teacher, distilled student and next-token-only student side by side on the val
        blocks; the report goes to reports/<run_id>/."""
        e = self.spec.evaluate
        parts = {"teacher": self.teacher_parts(),
                 "student": student_dir(self.newest("student")),
                 "baseline": student_dir(self.newest("baseline"))}
        models = {name: load_lm(self.store, p) for name, p in parts.items()}
        context = min(context_length(m.config) or 2**31 for m, _, _ in models.values())
        for i, prompt in enumerate(e.prompts):
            # evaluation.greedy starts each prompt with EOS, as documents start in the blocks
            n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1
            if n + e.max_new_tokens > context:
                raise ValueError(f"evaluate.prompts.{i}: {n} tokens plus max_new_tokens "
                                 f"{e.max_new_tokens} exceed the models' context of {context}")
        result = compare_lms(models, "teacher", self.val_blocks(e.max_val_blocks),
                             prompts=e.prompts, max_new_tokens=e.max_new_tokens,
                             batch_size=e.batch_size, seconds=e.seconds)
        result["models"] = {name: {**result["models"][name], "location": self.store.uri(*p)}
                            for name, p in parts.items()}
        run_id = run_id or new_run_id(f"{self.spec.name}-eval")
        result["location"] = self.store.uri(*report_dir(run_id))
        render_lm_report(result, result["location"])
        print(f"evaluate: report -> {result['location']}/report.md", flush=True)
        return result


def weights_fingerprint(model: PreTrainedModel) -> str:
    """Config + weights: equal iff the same architecture holds the same tensors."""
    h = hashlib.sha256(json.dumps(model.config.to_diff_dict(), sort_keys=True,
                                  default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def context_length(config) -> int | None:
    """Positions the model can attend over, by the name its config uses (None: unbounded)."""
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(config, name, None):
            return getattr(config, name)
    return None
