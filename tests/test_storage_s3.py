"""S3 stores the CLI cannot use, against a real S3-compatible server (moto's standalone server
on 127.0.0.1). The whole pipeline on an S3 store runs in test_multinode.py."""

import pytest

from helpers import BUCKET, REFERENCE_SPEC, free_port, s3_client


def closed_port_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there


@pytest.mark.parametrize("case", ["wrong endpoint", "missing bucket", "no credentials"])
def test_unusable_s3_store_is_one_line_naming_the_uri(cli, cli_inprocess, s3_env, tmp_path, case):
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
    args = ("teacher-infer", "--config", str(REFERENCE_SPEC), "--set", f"store={store}")
    # one case in a fresh process, as a user runs it (one line, no traceback); the others here
    result = (cli(*args, env=env, timeout=120) if case == "no credentials"
              else cli_inprocess(*args, env=env))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: store {store}: ") and expected in lines[0]
