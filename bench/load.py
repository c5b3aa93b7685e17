"""The load client and the servers it drives, shared by bench/serve.py and bench/soak.py.

Load: `c` clients on one asyncio loop (aiohttp), each sending its next request when the last one
is answered (a closed loop). Bodies are rows of the pipeline's test split, ROWS_PER_REQUEST per
request. A phase opens its connections with untimed warm-up requests, then times a fixed number:
rows/s = answered rows / wall seconds; p50 and p99 of per-request latency (send to last byte
read; linear interpolation between order statistics), with the p50's 95% confidence interval.
CPU: the machine's busy CPU seconds over the timed phase (/proc/stat, every process: servers, Ray
and the client), per answered request, and the client's own share (this process), so that a
reader can tell what the servers cost.

Servers: the Serve app(s) of a spec on the local Ray (`serve_apps`) and the bare FastAPI +
uvicorn student of bench/fastapi_student.py in a subprocess (`fastapi_server`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import aiohttp
import numpy as np
from benchmarks_md import ROOT

from distillery.config import PipelineSpec

ROWS_PER_REQUEST = 1


def request_bodies(rows: np.ndarray) -> list[bytes]:
    """V1 predict bodies of ROWS_PER_REQUEST consecutive rows each, from rows (N, D)."""
    return [json.dumps({"instances": rows[i:i + ROWS_PER_REQUEST].tolist()}).encode()
            for i in range(0, len(rows), ROWS_PER_REQUEST)]


def median_ci(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median of n values: the order statistics
    x_(j) and x_(k) (1-based) with j = floor(n/2 - z sqrt(n)/2) and k = ceil(1 + n/2 + z sqrt(n)/2)
    (the normal approximation of Binomial(n, 1/2); z = 1.96: 95%), clipped to 1..n. For n = 300
    that is the 133rd and 168th of 300: the 44th to 56th percentile of the sample."""
    ordered = np.sort(np.asarray(values))
    n, half = len(ordered), z * math.sqrt(len(ordered)) / 2
    j = max(1, math.floor(n / 2 - half))
    k = min(n, math.ceil(1 + n / 2 + half))
    return float(ordered[j - 1]), float(ordered[k - 1])


async def drive(urls: list[str], bodies: list[bytes], concurrency: int, requests: int,
                warmup: int, seed: int = 0) -> list[dict]:
    """`requests` POSTs per URL from `concurrency` closed-loop clients after `warmup` untimed
    ones; request i sends bodies[i % len(bodies)] to a URL drawn by a seeded shuffle (each URL
    gets exactly `requests`, interleaved: with two URLs both are timed in the same moments).
    One result per URL; rows/s counts each URL's rows over the whole phase's seconds."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(indices: Iterator[tuple[int, int]], latencies: list[list[float]],
                         errors: list[list[str]]):
            for i, u in indices:  # one iterator shared by all clients: each index is sent once
                start = time.perf_counter()
                try:
                    async with session.post(urls[u], data=bodies[i % len(bodies)],
                                            headers=headers) as response:
                        body, status = await response.read(), response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                    errors[u].append(f"{type(err).__name__}: {err}")
                    continue
                if status == 200:
                    latencies[u].append(time.perf_counter() - start)
                else:
                    errors[u].append(f"HTTP {status}: {body[:300].decode(errors='replace')}")

        async def phase(n: int, rng: np.random.Generator):
            order = rng.permutation(np.repeat(np.arange(len(urls)), n))
            indices = iter(enumerate(order.tolist()))
            latencies, errors = [[] for _ in urls], [[] for _ in urls]
            start, busy, own = time.perf_counter(), busy_cpu_s(), time.process_time()
            await asyncio.gather(*(client(indices, latencies, errors)
                                   for _ in range(concurrency)))
            cpu = (busy_cpu_s() - busy, time.process_time() - own)
            return latencies, errors, time.perf_counter() - start, cpu

        rng = np.random.default_rng(seed)
        await phase(warmup, rng)
        latencies, errors, seconds, (busy, own) = await phase(requests, rng)
    answered = sum(len(lat) for lat in latencies)
    results = []
    for lat, err in zip(latencies, errors, strict=True):
        ms = np.asarray(lat) * 1000
        results.append({
            "cpu_ms_per_request": busy * 1000 / answered if answered else None,
            "client_cpu_ms_per_request": own * 1000 / answered if answered else None,
            "requests": requests, "errors": len(err), "first_error": err[0] if err else None,
            "seconds": seconds, "rows_per_s": len(lat) * ROWS_PER_REQUEST / seconds,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p50_ci_ms": list(median_ci(ms)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None})
    return results


def busy_cpu_s() -> float:
    """CPU seconds the machine has spent busy since boot, all CPUs and processes (/proc/stat:
    every field but idle and iowait; guest time is already inside user)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float, process: subprocess.Popen | None = None,
                  stderr: IO[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process is not None and process.poll() is not None:
                stderr.seek(0)
                raise RuntimeError(f"{url}: the server exited with {process.returncode}; "
                                   f"stderr: {stderr.read().decode()[-2000:]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}: no answer after {seconds:.0f} s") from None
            time.sleep(0.2)


@contextmanager
def serve_apps() -> Iterator[tuple[str, Callable[[dict[str, PipelineSpec]], None]]]:
    """Serve on the local Ray; yields the base URL and `deploy(apps)`, which (re)deploys the
    app of each {route prefix: spec} (Serve restarts every replica of an app run again),
    deletes any other app, and returns once only the new replicas run."""
    # imported here: Serve reads the data-plane variables at import, after main() set them
    from ray import serve

    from distillery.serving.app import build_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    def deploy(apps: dict[str, PipelineSpec]) -> None:
        start = time.monotonic()
        names = {prefix: prefix.strip("/") or "distillery" for prefix in apps}
        for name in set(serve.status().applications) - set(names.values()):
            serve.delete(name)
        # all at once: their replicas start side by side
        serve.run_many([serve.RunTarget(build_app(spec, None), name=names[prefix],
                                        route_prefix=prefix) for prefix, spec in apps.items()])
        for prefix in apps:
            wait_until_up(f"{base}{prefix.rstrip('/')}/healthz", 60)
        # serve.run returns once the new replicas run; the old ones may still be stopping
        deadline = time.monotonic() + 60
        while any(n and state != "RUNNING" for app in serve.status().applications.values()
                  for d in app.deployments.values() for state, n in d.replica_states.items()):
            if time.monotonic() > deadline:
                raise RuntimeError("Serve: old replicas still not stopped after 60 s")
            time.sleep(0.5)
        print(f"deployed {', '.join(apps)} ({time.monotonic() - start:.0f} s)", flush=True)

    try:
        yield base, deploy
    finally:
        serve.shutdown()


@contextmanager
def fastapi_server(store: str, student: tuple[str, ...]) -> Iterator[tuple[str, Callable]]:
    """Starts the bare server and yields its base URL and a `ready()` to call before the first
    request: it loads while Ray starts and Serve deploys."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # a file, not a pipe: a pipe nobody reads would block the server once full
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([sys.executable, str(ROOT / "bench/fastapi_student.py"),
                                    "--store", store, "--model", "/".join(student),
                                    "--port", str(port)], stderr=stderr)
        try:
            yield base, lambda: wait_until_up(f"{base}/healthz", 60, process, stderr)
        finally:
            process.terminate()
            process.wait(timeout=30)
