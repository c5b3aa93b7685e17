"""Cost of each model: parameters, size on disk, latency, throughput, peak inference memory.

Each model is measured alone, one after another, in a fresh Ray worker process (`max_calls=1`)
on the same node, single-threaded (`torch.set_num_threads(1)`): no model inherits another's
warm caches or freed-but-resident heap, none competes with another for cores, and the numbers
do not depend on how many cores the node happens to have.
"""

from __future__ import annotations

import gc
import platform as _platform
import time

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from distillery.config import LatencySpec
from distillery.evaluation.metrics import latency_percentiles
from distillery.models import count_params, load_model
from distillery.storage import Store

MIN_TIMED_RUNS = 5
MEMORY_METHOD = ("growth of the worker's peak resident set size (Linux VmHWM, reset through "
                 "/proc/self/clear_refs) during the first forward pass at the largest batch, "
                 "over the resident size just before it; weights and input not included")


def measure_all(store: Store, models: dict[str, tuple[str, ...]], sample: np.ndarray,
                latency: LatencySpec) -> dict:
    """model key -> efficiency numbers, plus where they were measured."""
    batch_sizes = sorted(set(latency.batch_sizes))
    settings = {**latency.model_dump(), "batch_sizes": batch_sizes}
    results, node = {}, None
    for key, parts in models.items():
        # every model on the node the first ran on: timings from different hardware don't mix
        placement = {} if node is None else {"scheduling_strategy": NodeAffinitySchedulingStrategy(
            node, soft=False)}
        raw = ray.get(_measure.options(**placement).remote(store.root, parts, sample,
                                                           settings))
        node = raw["node"]
        results[key] = summarize(raw, size_on_disk(store, parts))
        print(f"evaluate: efficiency of {key}: {results[key]['params']:,} params, "
              + ", ".join(f"batch {b} p50 {t['p50'] * 1e3:.3f} ms"
                          for b, t in results[key]["latency_s"].items()), flush=True)
    teacher = next(iter(results.values()))
    for numbers in results.values():
        numbers["vs_teacher"] = versus(teacher, numbers)
    return {"models": results, "host": {"node": node, "cpu": raw["cpu"]}, "threads": 1,
            "batch_sizes": [str(b) for b in batch_sizes], "largest_batch": str(batch_sizes[-1]),
            "memory_method": MEMORY_METHOD}


def versus(teacher: dict, model: dict) -> dict:
    """How many times cheaper than the teacher the model is (> 1 = cheaper or faster):
    teacher / model for params, bytes, latency and memory; model / teacher for throughput."""
    def ratio(a, b):
        return None if a is None or not b else a / b

    return {
        "params": ratio(teacher["params"], model["params"]),
        "size_bytes": ratio(sum(teacher["size_bytes"].values()), sum(model["size_bytes"].values())),
        **{f"latency_{p}": {b: ratio(teacher["latency_s"][b][p], t[p])
                            for b, t in model["latency_s"].items()} for p in ("p50", "p95", "p99")},
        "throughput": {b: ratio(r, teacher["throughput_rows_per_s"][b])
                       for b, r in model["throughput_rows_per_s"].items()},
        "peak_memory": ratio(teacher["peak_memory_bytes"], model["peak_memory_bytes"]),
    }


def summarize(raw: dict, size_bytes: dict[str, int]) -> dict:
    latency, throughput = {}, {}
    for batch, samples in raw["timings"].items():
        samples = np.asarray(samples)
        latency[batch] = {**latency_percentiles(samples), "mean": float(samples.mean()),
                          "repetitions": len(samples), "cpu_share": raw["cpu_share"][batch]}
        throughput[batch] = float(int(batch) * len(samples) / samples.sum())
    return {"params": raw["params"], "size_bytes": size_bytes, "latency_s": latency,
            "throughput_rows_per_s": throughput, "peak_memory_bytes": raw["peak_memory_bytes"]}


def size_on_disk(store: Store, parts: tuple[str, ...]) -> dict[str, int]:
    """Bytes of each stored model file (weights and TorchScript), as the store holds them."""
    names = [n for n in store.listdir(*parts) if n in ("model.pt", "model.ts")]
    return {n: store.fs.get_file_info(store.fs_path(*parts, n)).size for n in names}


@ray.remote(num_cpus=1, max_calls=1)
def _measure(store_root: str, parts: tuple[str, ...], sample: np.ndarray, latency: dict) -> dict:
    torch.set_num_threads(1)
    model, _ = load_model(Store(store_root), parts)
    largest = max(latency["batch_sizes"])
    x_all = torch.from_numpy(np.resize(sample, (largest, sample.shape[1])))  # rows repeated
    with torch.inference_mode():
        peak = peak_rss_growth(lambda: model(x_all))
        timings, cpu_share = {}, {}
        for batch in latency["batch_sizes"]:
            x = x_all[:batch]
            for _ in range(latency["warmup"]):
                model(x)
            samples, started, cpu = [], time.perf_counter(), time.process_time()
            while len(samples) < latency["repetitions"] and (
                    len(samples) < MIN_TIMED_RUNS
                    or time.perf_counter() - started < latency["seconds"]):
                t0 = time.perf_counter_ns()
                model(x)
                samples.append((time.perf_counter_ns() - t0) / 1e9)
            timings[str(batch)] = samples
            # CPU time this process got / wall time: ~1 when it had a core to itself
            cpu_share[str(batch)] = (time.process_time() - cpu) / (time.perf_counter() - started)
    return {"params": count_params(model), "timings": timings, "cpu_share": cpu_share,
            "peak_memory_bytes": peak,
            "node": ray.get_runtime_context().get_node_id(), "cpu": cpu_name()}


def peak_rss_growth(fn) -> int | None:
    """Bytes the resident set peaked above its size before `fn()`; None off Linux."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return None
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024  # reported in kB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return _platform.machine()
