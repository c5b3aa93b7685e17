"""The quickstart against a real S3-compatible server (moto's standalone server on 127.0.0.1)."""

import json

import pytest

from conftest import BUCKET, REFERENCE_SPEC, ROOT, cli, free_port, s3_client, tiny_overrides

pytestmark = pytest.mark.integration

def test_quickstart_with_an_s3_store(s3_env, tmp_path, no_local_ray):
    s3 = s3_client(s3_env)
    s3.create_bucket(Bucket=BUCKET)
    store = f"s3://{BUCKET}/runs"
    overrides = [a for item in tiny_overrides(tmp_path / "unused") for a in ("--set", item)]
    result = cli("quickstart", "--config", str(REFERENCE_SPEC), "--output-dir",
                 str(tmp_path / "out"), *overrides, "--set", f"store={store}", env=s3_env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["store"] == store

    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="runs/") for o in page.get("Contents", [])]
    cards = [k for k in keys if k.endswith("card.json")]
    student_run, baseline_run = summary["student"]["run_id"], summary["baseline"]["run_id"]
    # DESIGN.md's layout: teachers/<name>/<fp>/, cache/<teacher_fp>-<data_fp>/, students/<run>/
    teacher_cards = [k for k in cards if k.startswith("runs/teachers/cnn-teacher/")]
    assert len(teacher_cards) == 1
    teacher_fp = teacher_cards[0].split("/")[3]
    assert f"runs/students/{student_run}/card.json" in cards
    assert f"runs/students/{baseline_run}/card.json" in cards
    for run in (student_run, baseline_run):
        assert f"runs/students/{run}/model.ts" in keys
        assert any(k.startswith(f"runs/students/{run}/checkpoints/epoch-0002/") for k in keys)
    manifests = [k for k in keys if k.startswith("runs/cache/") and k.endswith("manifest.json")]
    assert len(manifests) == 1 and manifests[0].split("/")[2].startswith(f"{teacher_fp}-")
    assert any(k.startswith("runs/cache/") and k.endswith(".parquet") for k in keys)

    # nothing we wrote points at a local path another node could not see
    for key in cards + manifests:
        text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert str(tmp_path) not in text and str(ROOT) not in text, key
    assert not (tmp_path / "unused").exists()


def closed_port_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there


@pytest.mark.parametrize("case", ["wrong endpoint", "missing bucket", "no credentials"])
def test_unusable_s3_store_is_one_line_naming_the_uri(s3_env, tmp_path, case):
    store = f"s3://{BUCKET}/runs"
    env = dict(s3_env)
    if case == "wrong endpoint":
        env["AWS_ENDPOINT_URL"] = closed_port_endpoint()
        expected = "Could not connect to the endpoint URL"
    elif case == "missing bucket":
        store = "s3://no-such-bucket/runs"
        expected = "bucket 'no-such-bucket' does not exist"
    else:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_PROFILE"):
            env.pop(var, None)
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                   AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
        expected = "no AWS credentials"
    s3_client(s3_env).create_bucket(Bucket=BUCKET)
    result = cli("teacher-infer", "--config", str(REFERENCE_SPEC), "--set", f"store={store}",
                 env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: store {store}: ") and expected in lines[0]
