"""`distillery serve` and `distillery rollout` fail with one line, before any Ray work: in this
process, but the first test, in a fresh process as a user runs it."""

import os

import pytest

from helpers import REFERENCE_SPEC, free_port


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_serve_without_models_says_what_to_run(cli, tmp_path):
    line = one_line_error(cli("serve", "--config", str(REFERENCE_SPEC), "--set",
                              f"store={tmp_path}", timeout=60))
    assert line == (f"error: no teacher 'cnn-teacher' in {tmp_path}; run `distillery "
                    "train-teacher` first")


def test_serving_file_is_validated(cli_inprocess, tmp_path):
    bad = tmp_path / "serving.yaml"
    bad.write_text("rollout: {steps: [50, 25, 100]}\n")
    line = one_line_error(cli_inprocess("serve", "--config", str(REFERENCE_SPEC), "--serving",
                                        str(bad)))
    assert line.startswith("error: serve.rollout.steps: must be strictly increasing")


@pytest.mark.parametrize("token,expected", [
    (None, "error: DISTILLERY_ADMIN_TOKEN is not set"),
    ("t", "cannot connect"),
])
def test_rollout_command_errors(loopback, cli_inprocess, token, expected):
    env = {k: v for k, v in os.environ.items() if k != "DISTILLERY_ADMIN_TOKEN"}
    if token:
        env["DISTILLERY_ADMIN_TOKEN"] = token
    line = one_line_error(cli_inprocess("rollout", "status", "--config", str(REFERENCE_SPEC),
                                        "--url", f"http://127.0.0.1:{free_port()}", env=env))
    assert expected in line
