"""Progressive distillation: a teacher-assistant chain (Mirzadeh et al. 2020) and a curriculum
(curriculum.py) around response KD.

teacher -> assistant 0 -> ... -> student: each stage a response-KD run on the cache of the
stage before it, with the curriculum's per-epoch thresholds if one is given. Finished stages
are kept, so a resumed chain restarts at its first unfinished stage.
"""

from __future__ import annotations

import numpy as np
import torch

from distillery.config import CurriculumSpec
from distillery.data.splits import fixed_list_to_numpy
from distillery.store_layout import has_card, read_card
from distillery.strategies.curriculum import difficulty, pacing_fraction, thresholds
from distillery.strategies.response import ResponseStrategy


class ProgressiveStrategy(ResponseStrategy):
    """Response KD in the workers; the chain and the curriculum are the driver's."""

    @classmethod
    def distill(cls, pipeline, run_id: str, callbacks: list | None) -> dict:
        spec = pipeline.spec
        d = spec.distill
        params = cls.Params.from_spec(spec, pipeline)
        teacher = pipeline.teacher_parts()
        run = (*pipeline.students, run_id)
        stages = [((*run, "assistants", str(i)), model, f"assistant {i}")
                  for i, model in enumerate(d.progressive.assistants)]
        stages.append((run, spec.student.model, "student"))
        for parts, model_spec, label in stages:
            if not has_card(pipeline.store, parts):
                rows = pipeline.cached_rows(teacher, spec.teacher.inference)
                curriculum = (curriculum_thresholds(rows, d.progressive.curriculum, d.epochs)
                              if d.progressive.curriculum else None)
                # a Tune trial ranks the chain by its student, not by an assistant's epochs
                state = pipeline.train(model_spec, params, label, rows, parts,
                                       callbacks if label == "student" else None,
                                       curriculum)[0]
                role = "student" if label == "student" else "assistant"
                pipeline.export_student(run_id, state, role, model_spec, teacher, parts)
            teacher = parts
        return read_card(pipeline.store, run)


def curriculum_thresholds(rows, c: CurriculumSpec, epochs: int) -> dict:
    """Per-epoch difficulty thresholds from the teacher's outputs on every cached row (a Ray
    Dataset with `logits` and `label`), as the trainer takes them."""
    scores = []
    for batch in rows.select_columns(["logits", "label"]).iter_batches(
            batch_size=65_536, batch_format="pyarrow"):
        # copies: Arrow's buffers are read-only, which torch.from_numpy warns about
        logits = torch.tensor(fixed_list_to_numpy(batch["logits"]))
        labels = torch.tensor(batch["label"].fill_null(-1).to_numpy(zero_copy_only=False))
        scores.append(difficulty(logits, labels, c.score).numpy())
    fractions = [pacing_fraction(e, epochs, c.pacing, c.start, c.full_at) for e in range(epochs)]
    print("curriculum: share of rows per epoch " + " ".join(f"{f:.2f}" for f in fractions),
          flush=True)
    return {"score": c.score, "thresholds": thresholds(np.concatenate(scores), fractions)}
