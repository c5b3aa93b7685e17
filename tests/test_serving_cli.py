"""`distillery serve` and `distillery rollout` fail with one line, before any Ray work: in this
process, but the first test, in a fresh process as a user runs it; and `distillery serve` as a
user runs it, answering on its default data plane."""

import os
import queue
import signal
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from helpers import REFERENCE_SPEC, ROOT, add_students, free_port, sets, tiny_overrides


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


def test_distillery_serve_answers_through_haproxy_and_stops_on_sigterm(store_copy,
                                                                        no_local_ray):
    """`distillery serve` as a user runs it, on its own embedded Ray: the fast data plane
    (HAProxy in front of the router replica), JSON and Triton's binary form alike, and a
    SIGTERM that stops it cleanly."""
    import psutil
    import tritonclient.http as triton

    add_students(store_copy)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ADDRESS" and not k.startswith("RAY_SERVE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", "serve", "--config", str(REFERENCE_SPEC),
         *sets(tiny_overrides(store_copy, "serve.student=good", "monitor.check_interval_s=null")),
         "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stdout])
    reader.start()
    output = []
    try:
        while not (output and output[-1].startswith("serving on")):  # once the app is up
            output.append(lines.get(timeout=180))
        assert output[-1].startswith(f"serving on http://127.0.0.1:{port} "), output
        haproxy = [p for p in psutil.Process(server.pid).children(recursive=True)
                   if p.name() == "haproxy"]
        assert haproxy  # the data plane the README says is the default
        rows = np.random.default_rng(0).normal(size=(2, 40)).astype(np.float32)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/student:predict",
                            json={"instances": rows.tolist()}, timeout=30).json()
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = triton.InferenceServerClient(f"127.0.0.1:{port}").infer("student", [tensor])
        assert result.as_numpy("predictions").tolist() == answer["predictions"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        reader.join(timeout=10)
    output += list(lines.queue)
    assert server.returncode == 0 and "stopped\n" in output, "".join(output)[-3000:]
