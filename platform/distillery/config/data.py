"""Data specs: the generated MNIST-1D benchmark or a table, with transfer data."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from distillery.config.base import Strict


class Mnist1dTransfer(Strict):
    num_samples: int = Field(default=50_000, ge=10)
    """Rounded down to a multiple of 10: the generator makes equally many of each class."""
    seed: int = 7
    """Generator seed; any seed other than the labelled set's gives unseen, unlabeled rows."""


class Mnist1dData(Strict):
    source: Literal["mnist1d"]
    num_samples: int = Field(default=5000, ge=100)
    """Rows generated (rounded down to a multiple of 10); the canonical benchmark is 5000
    (4000 train / 1000 test)."""
    seed: int = 42
    """42 is the canonical MNIST-1D dataset."""
    train_split: float = Field(default=0.8, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Share of the train split held out for per-epoch validation."""
    transfer: Mnist1dTransfer | None = None
    """Unlabeled transfer set the teacher labels for distillation."""


class TableTransfer(Strict):
    path: str
    """File or directory (local or s3://) of the same format as `path`, with the feature
    columns; no labels needed."""


class TableData(Strict):
    source: Literal["parquet", "csv", "json"]
    """The files' format; json is JSON Lines (one object per line)."""
    path: str
    """File or directory, local or s3://."""
    features: list[str] | None = Field(default=None, min_length=1)
    """Numeric columns, one model input each; or, for text, `text`."""
    text: str | None = None
    """A column of text (one string per row), tokenized by `tokenizer` into `max_length` token
    ids per row; the models are then Hugging Face sequence classifiers (`arch: hf`)."""
    tokenizer: str | None = None
    """Directory of a saved Hugging Face (fast) tokenizer; omitted, the teacher's own
    (`teacher.model.path`). Teacher and student share it."""
    max_length: int = Field(default=128, ge=4, le=8192)
    """Token ids per text row, special tokens included: longer texts are truncated (and
    counted), shorter ones padded."""
    label: str
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0
    """Seed of the deterministic train/val/test split."""
    classes: list[str] | None = Field(default=None, min_length=2)
    """The label values, in class-index order (numbers as text: "0", "1"); a label not among
    them is an error naming it. Without it, the classes are the distinct labels, sorted."""
    key: str | None = None
    """Column that identifies a row. A row's split is a function of its key and `seed` alone,
    so adding files or rows, or reordering them, moves no row from one split to another.
    Without one, a row is keyed by its content (features and label): identical rows share a
    split, so a duplicate is never in train and test at once."""
    on_invalid: Literal["error", "drop"] = "error"
    """A row with a NaN or infinite feature, or a null or blank text: `error` names the column
    and the row; `drop` leaves it out (labelled and transfer rows alike) and says how many
    were dropped."""
    sample_rows: int = Field(default=100_000, ge=10)
    """At most this many rows of each split are held in one process: validation during
    training, the export metrics, evaluation and the drift reference use them. A larger split
    is sampled by a fixed hash of each row's key, the same rows on every run. Training and
    teacher inference always stream every row."""
    transfer: TableTransfer | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TableData:
        if (self.features is None) == (self.text is None):
            raise ValueError("give either features (numeric columns) or text (a text column)")
        if self.tokenizer is not None and self.text is None:
            raise ValueError("tokenizer: only for text data (data.text)")
        return self

    @property
    def input_columns(self) -> list[str]:
        """The columns the models read: the features, or the text column."""
        return self.features if self.text is None else [self.text]


DataSpec = Annotated[Mnist1dData | TableData, Field(discriminator="source")]
