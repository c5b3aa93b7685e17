"""The quickstart on a user's table: Parquet files on S3 (the local S3 server), a label column
of names and a transfer set in other files, through every stage with Ray Data reading them.
The driver only ever holds the table's statistics and a bounded sample (data.sample_rows)."""

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillery.data.mnist1d import generate

from helpers import BUCKET, REFERENCE_SPEC, s3_client, sets

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FEATURES = [f"f{i}" for i in range(40)]


def upload(s3, x: np.ndarray, y: np.ndarray | None, prefix: str, files: int) -> None:
    """The rows as `files` Parquet files under s3://BUCKET/prefix/, features f0..f39 and
    (labelled) the class name in `label`."""
    for i, part in enumerate(np.array_split(np.arange(len(x)), files)):
        columns = {name: x[part, j] for j, name in enumerate(FEATURES)}
        if y is not None:
            columns["label"] = [NAMES[k] for k in y[part]]
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/part-{i}.parquet", Body=buffer.getvalue())


def test_a_parquet_table_on_s3_runs_every_stage(cli, s3_env, no_local_ray, tmp_path):
    s3 = s3_client(s3_env)
    s3.create_bucket(Bucket=BUCKET)
    data = generate(1000, 42, 0.8)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]])
    upload(s3, x, y, "table", files=3)
    upload(s3, generate(1000, 7, 1.0)["x"].astype(np.float32), None, "transfer", files=2)
    spec = {"source": "parquet", "path": f"s3://{BUCKET}/table", "features": FEATURES,
            "label": "label", "classes": NAMES, "sample_rows": 150,
            "transfer": {"path": f"s3://{BUCKET}/transfer"}}
    store, out = tmp_path / "store", tmp_path / "out"
    overrides = [f"data={json.dumps(spec)}", f"store={store}",
                 "teacher.model.channels=[16,16]", "teacher.model.hidden=32",
                 "teacher.train.epochs=2", "teacher.train.num_workers=1",
                 "teacher.inference.batch_size=256", "distill.epochs=2",
                 "distill.num_workers=1",
                 "evaluate.shifts=[{kind: gaussian_noise, severities: [0.5]}]",
                 "evaluate.latency.repetitions=20", "evaluate.latency.seconds=0.3"]
    result = cli("quickstart", "--config", str(REFERENCE_SPEC), *sets(overrides),
                 "--output-dir", str(out), env=s3_env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # one streaming pass counted the rows; each split holds at most sample_rows in memory
    line = next(s for s in output.splitlines() if s.startswith("data: s3://"))
    counts = [int(n) for n in re.search(r"(\d+) train, (\d+) val, (\d+) test rows", line).groups()]
    assert sum(counts) == 1000 and "10 classes; 1000 transfer rows" in line

    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["params"] < summary["teacher"]["params"]
    student = json.loads((store / "students" / summary["student"]["run_id"] /
                          "card.json").read_text())
    assert student["class_names"] == NAMES
    cache = json.loads(next((store / "cache").glob("*/manifest.json")).read_text())
    assert cache["rows"] == counts[0] + 1000 and cache["labelled_rows"] == counts[0]
    report = json.loads((store / "reports" / summary["report"]["run_id"] /
                         "report.json").read_text())
    assert report["data"]["test_rows"] <= 150 < counts[2]  # evaluated on the sample
    assert report["data"]["fingerprint"] == student["data_fingerprint"]
