"""Soak bench: the routed endpoint held at a fraction of its measured maximum throughput for
minutes while a canary rollout moves traffic to the student. Writes bench/results/soak.json and
the "soak" section of BENCHMARKS.md.

    .venv/bin/python bench/soak.py [--store ./runs] [--minutes 10] [--load 0.7]
        [--output bench/results/soak.json] [--proxy-dataplane] [--set KEY=VALUE ...]
        [--max-requests 5000] [--smoke]

Models: the quickstart's teacher and newest student in `--store` (what `make demo` writes),
served from a scratch store as bench/serve.py does (the default spec: one router replica holding
teacher and student, on `distillery serve`'s data plane). The canary walks steps 5 -> 25 -> 50
-> 100 % over the soak (each step lasts a quarter of it; agreement gate 0.5, 10% of requests
mirrored).

Phases, one row of the pipeline's test split per request (bench/load.py's client and Serve
launcher, as bench/serve.py uses them):
1. unloaded: one closed-loop client; its p99 is the reference.
2. max: 32 closed-loop clients; answered requests / second is the maximum throughput.
3. soak: an open loop at `--load` x max requests/s (request i is due at i / rate seconds; at
   most 64 in flight, so an overloaded server delays sends instead of piling them up) for
   `--minutes`; per bucket (a minute): requests/s, p50, p99, errors, and the rollout's weight.
Replica memory: the RSS of every replica process (found through Ray's state API) before the
soak, at each bucket's end and after it. Acceptance (issue 10): zero failed requests, soak p99
<= 2 x unloaded p99, every replica's RSS within 10% of its start. `--proxy-dataplane`: Serve's
Python proxy instead, as bench/serve.py's flag; writes soak-proxy.json and its own section.
`--minutes`, `--load`, `--set` or `--max-requests` other than the defaults make an experiment,
which must name its `--output` and leaves BENCHMARKS.md alone: the results of record are the
issue's soak. `--smoke`: seconds (a 4 s soak in 2 s buckets), for the test; BENCHMARKS.md
untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_md import (  # noqa: E402
    refuse_unnamed_experiment,
    results_path,
    serving_title,
    update_section,
)
from load import drive, request_bodies, serve_apps  # noqa: E402
from measure import save  # noqa: E402

from distillery.config import PipelineSpec, load_spec  # noqa: E402
from distillery.data.sources import open_source  # noqa: E402
from distillery.storage import Store  # noqa: E402
from serve import (  # noqa: E402
    ROUTED,
    SPEC,
    models_or_exit,
    scratch_store,
    use_dataplane,
)

IN_FLIGHT = 64
MAX_CLIENTS = 32
TARGETS = {"errors": 0, "p99_vs_unloaded": 2.0, "rss_growth": 0.10}


def soak_spec(store: str, student: str, seconds: float,
              overrides: list[str] = ()) -> PipelineSpec:
    """The quickstart spec served from `store`, its canary spread over `seconds`, then
    `overrides` (KEY=VALUE, as `distillery --set`)."""
    return load_spec(SPEC, [f"store={store}", f"serve.student={student}",
                            "serve.rollout.steps=[5,25,50,100]",
                            f"serve.rollout.min_seconds={seconds / 4}",
                            "serve.rollout.min_requests=100", "serve.rollout.interval_s=2",
                            "serve.rollout.gates.min_agreement=0.5",
                            "monitor.check_interval_s=null", *overrides])


@contextmanager
def probed_app(spec: PipelineSpec, parts: dict, canary_s: float, overrides: list[str],
               bodies: list[bytes], probe: tuple[int, int]):
    """The soak's app (`soak_spec`, canary steps over `canary_s`) on a scratch copy of the models,
    deployed on the local Ray and probed: yields its base URL, its spec, the unloaded run
    (one client, probe[0] requests) and the closed-loop maximum (probe[1] requests)."""
    from distillery.runtime import ensure_ray

    with tempfile.TemporaryDirectory() as scratch:
        store = scratch_store(spec, Path(scratch), parts)
        served = soak_spec(store, parts["student"][-1], canary_s, overrides)
        ensure_ray()
        with serve_apps() as (base, deploy):
            deploy({"/": served})
            url = base + ROUTED
            [unloaded] = asyncio.run(drive([url], bodies, 1, probe[0], warmup=20))
            [peak] = asyncio.run(drive([url], bodies, MAX_CLIENTS, probe[1], warmup=100))
            yield base, served, unloaded, peak


def sizing(spec: PipelineSpec) -> str:
    """The served app's replicas and CPUs, in words."""
    serve = spec.serve
    if serve.topology == "colocated":
        return f"one router replica of {serve.router_cpus:g} CPU holding teacher and student"
    arms = ", ".join(f"{d.replicas} {arm} replica{'s' if d.replicas > 1 else ''} of "
                     f"{d.cpus_per_replica:g} CPU"
                     for arm, d in (("teacher", serve.teacher_deployment),
                                    ("student", serve.student_deployment)))
    return f"a router of {serve.router_cpus:g} CPU, {arms}"


async def hold(url: str, health: str, bodies: list[bytes], rate: float, seconds: float,
               bucket_s: float, pids: dict[str, int]) -> tuple[list[dict], np.ndarray]:
    """An open loop of `rate` requests/s for `seconds`: one row per bucket of `bucket_s`
    (requests answered, errors, requests/s, p50/p99 ms from send to last byte, the rollout's
    student weight and the RSS of the replicas `pids` at the bucket's end, the most a send
    fell behind its schedule in s), and every answered request's latency in ms."""
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"content-type": "application/json"}
    buckets = [{"latencies": [], "errors": [], "lag_s": 0.0}
               for _ in range(int(np.ceil(seconds / bucket_s)))]
    slots = asyncio.Semaphore(IN_FLIGHT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT),
                                     timeout=timeout) as session:

        async def one(i: int, bucket: dict) -> None:
            start = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i % len(bodies)],
                                        headers=headers) as response:
                    body, status = await response.read(), response.status
            except Exception as err:  # any failure is a failed request, never an unseen one
                bucket["errors"].append(f"{type(err).__name__}: {err}")
                return
            finally:
                slots.release()
            if status == 200:
                bucket["latencies"].append(time.perf_counter() - start)
            else:
                bucket["errors"].append(f"HTTP {status}: {body[:300].decode(errors='replace')}")

        # Only requests in flight are held. Keeping every task of a soak (hundreds of thousands
        # at the fast data plane's rates) makes the client's full garbage collections long
        # enough to put its sends behind schedule, and a stalled client times every request in
        # flight as slow. Objects made before the loop are frozen out of collection for the same
        # reason.
        in_flight: set[asyncio.Task] = set()
        gc.collect()
        gc.freeze()
        try:
            t0 = time.perf_counter()
            for i in range(int(rate * seconds)):
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await slots.acquire()
                bucket = buckets[min(int((due - t0) / bucket_s), len(buckets) - 1)]
                bucket["lag_s"] = max(bucket["lag_s"], time.perf_counter() - due)
                task = asyncio.create_task(one(i, bucket))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if (i + 1) % max(1, int(rate * bucket_s)) == 0:  # a bucket's sends are out
                    async with session.get(health) as response:
                        bucket["weight"] = (await response.json())["student_weight"]
                    bucket["rss"] = resident(pids)
            await asyncio.gather(*in_flight)
        finally:
            gc.unfreeze()
    rows = []
    for minute, bucket in enumerate(buckets):
        ms = np.asarray(bucket["latencies"]) * 1000
        rows.append({"bucket": minute, "answered": len(ms), "errors": len(bucket["errors"]),
                     "first_error": bucket["errors"][0] if bucket["errors"] else None,
                     "rps": len(ms) / bucket_s,
                     "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
                     "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
                     "student_weight": bucket.get("weight"), "rss": bucket.get("rss"),
                     "max_lag_s": bucket["lag_s"]})
    return rows, np.concatenate([b["latencies"] for b in buckets]) * 1000


def replica_pids() -> dict[str, int]:
    """{deployment#replica: pid} of every live Serve replica of the app."""
    from ray.util.state import list_actors

    return {actor.name.split("#", 1)[1]: actor.pid  # SERVE_REPLICA::<app>#<deployment>#<id>
            for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if actor.class_name.startswith("ServeReplica:distillery:")}


def resident(pids: dict[str, int]) -> dict[str, int]:
    """{name: resident bytes} of the processes `pids`; 0 for one that is gone (a restarted
    replica has a new name)."""
    rss = {}
    for name, pid in pids.items():
        try:
            rss[name] = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            rss[name] = 0
    return rss


def largest_change(start: dict[str, int], now: dict[str, int]) -> float:
    """The relative RSS change (now - start) / start of the replica whose change is largest in
    size, with its sign; a replica missing from `now` counts as -100%."""
    return max(((now.get(name, 0) - rss) / rss for name, rss in start.items()), key=abs)


def verdicts(unloaded_p99: float, soak: dict, rss: dict[str, dict]) -> dict:
    """The acceptance quantities: failed requests, soak p99 / unloaded p99, and the largest
    relative RSS change of any replica, (end - start) / start."""
    growth = abs(largest_change({n: r["start"] for n, r in rss.items()},
                                {n: r["end"] for n, r in rss.items()}))
    return {"errors": soak["errors"], "p99_vs_unloaded": soak["p99_ms"] / unloaded_p99,
            "rss_growth": growth}


def format_markdown(result: dict) -> str:
    inputs, s, r = result["inputs"], result["summary"], result["ratios"]
    rows = ["| minute | req/s | p50 ms | p99 ms | errors | student % | max send lag s | "
            "largest replica RSS change |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in result["runs"]:
        change = "-" if b.get("rss_change") is None else f"{b['rss_change']:+.1%}"
        rows.append(f"| {b['bucket'] + 1} | {b['rps']:.0f} | {b['p50_ms'] or 0:.2f} | "
                    f"{b['p99_ms'] or 0:.2f} | {b['errors']} | {b['student_weight']} | "
                    f"{b['max_lag_s']:.3f} | {change} |")
    memory = ["| replica | RSS start MiB | RSS end MiB | change |", "|---|---:|---:|---:|"]
    for name, m in result["rss"].items():
        memory.append(f"| {name} | {m['start'] / 2**20:.1f} | {m['end'] / 2**20:.1f} | "
                      f"{(m['end'] - m['start']) / m['start']:+.1%} |")

    def met(key: str) -> str:
        return "met" if r[key] <= TARGETS[key] else "**missed**"

    return "\n".join([
        f"{result['machine']['cpus']} CPUs ({result['machine']['platform']}), Ray "
        f"{result['versions']['ray']}; data plane: {inputs['dataplane']}. Routed endpoint "
        f"`{ROUTED}` of the app bench/serve.py deploys ({inputs['sizing']}), one test row per "
        f"request, aiohttp on the same machine. "
        f"The canary walks {inputs['steps']} % during the soak."
        + (f" Spec overrides: {', '.join(f'`{o}`' for o in inputs['overrides'])}."
           if inputs.get("overrides") else ""),
        "",
        f"Unloaded (c=1): p99 {s['unloaded']['p99_ms']:.2f} ms. Maximum (c={MAX_CLIENTS}, "
        f"closed loop): {s['max']['rps']:.0f} req/s. Soak: open loop at {inputs['load']:.0%} "
        f"of it = {inputs['rate']:.0f} req/s for {inputs['minutes']:g} min: "
        f"{s['soak']['answered']} answered, {s['soak']['errors']} failed, p50 "
        f"{s['soak']['p50_ms']:.2f} ms, p99 {s['soak']['p99_ms']:.2f} ms.",
        "",
        *rows,
        "",
        *memory,
        "",
        f"Acceptance: failed requests {r['errors']} (target 0: "
        f"{'met' if r['errors'] == 0 else '**missed**'}); soak p99 / unloaded p99 "
        f"{r['p99_vs_unloaded']:.2f} (target <= 2: {met('p99_vs_unloaded')}); largest replica "
        f"RSS change {r['rss_growth']:.1%} (target <= 10%: {met('rss_growth')}).",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./runs")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of max throughput")
    parser.add_argument("--output", default=None, help="default: bench/results/soak.json, "
                        "soak-proxy.json with --proxy-dataplane (under smoke/ with "
                        "--smoke); required with --minutes, --load, --set or --max-requests "
                        "other than the defaults, and then BENCHMARKS.md is left alone")
    parser.add_argument("--proxy-dataplane", action="store_true",
                        help="Serve's Python proxy instead of `distillery serve`'s data plane")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a spec override after the soak's own (e.g. "
                        "serve.router_cpus=1); repeatable")
    parser.add_argument("--max-requests", type=int, default=5000,
                        help="timed requests of the closed-loop maximum (fewer time a short "
                        "burst, which reads above the rate the server holds)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    refuse_unnamed_experiment(parser, args, {"--minutes": "minutes", "--load": "load",
                                             "--set": "overrides",
                                             "--max-requests": "max_requests"})
    dataplane = use_dataplane(args.proxy_dataplane, parser)
    name = "soak-proxy" if args.proxy_dataplane else "soak"
    seconds, bucket_s, probe = args.minutes * 60, 60.0, (300, args.max_requests)
    if args.smoke:
        seconds, bucket_s, probe = 4.0, 2.0, (30, 100)

    spec = load_spec(SPEC, [f"store={args.store}"])
    parts, cards = models_or_exit(spec, "bench/soak.py", args.store)
    rows = open_source(spec.data, Store(spec.store), transfer=False).sample().x_test  # N x D
    bodies = request_bodies(rows)

    with probed_app(spec, parts, seconds, args.overrides, bodies, probe) as (
            base, served, unloaded, peak):
        url = base + ROUTED
        rate = args.load * peak["rows_per_s"]
        print(f"unloaded p99 {unloaded['p99_ms']:.2f} ms; max {peak['rows_per_s']:.0f} "
              f"req/s; holding {rate:.0f} req/s for {seconds:.0f} s", flush=True)
        pids = replica_pids()
        start_rss = resident(pids)
        if not start_rss or not all(start_rss.values()):
            raise SystemExit(f"bench/soak.py: cannot read the replicas' memory ({start_rss});"
                             " not starting the soak")
        buckets, latencies = asyncio.run(hold(url, f"{base}/healthz", bodies, rate, seconds,
                                              bucket_s, pids))
        end_rss = resident(pids)
    for bucket in buckets:
        bucket["rss_change"] = largest_change(start_rss, bucket["rss"]) if bucket["rss"] else None
    soak = {"answered": len(latencies), "errors": sum(b["errors"] for b in buckets),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}
    rss = {name: {"start": start_rss[name], "end": end_rss.get(name, 0)} for name in start_rss}
    summary = {"unloaded": {"p50_ms": unloaded["p50_ms"], "p99_ms": unloaded["p99_ms"],
                            "errors": unloaded["errors"]},
               "max": {"rps": peak["rows_per_s"], "p99_ms": peak["p99_ms"],
                       "errors": peak["errors"]},
               "soak": soak}
    inputs = {"store": args.store, "smoke": args.smoke, "minutes": seconds / 60,
              "load": args.load, "rate": rate, "overrides": args.overrides,
              "sizing": sizing(served),
              "dataplane": dataplane,
              "bucket_s": bucket_s, "steps": served.serve.rollout.steps,
              "requests": {"unloaded": probe[0], "max": probe[1]},
              "in_flight_limit": IN_FLIGHT, "client": f"aiohttp {aiohttp.__version__}",
              "models": {arm: {"version": parts[arm][-1], "params": cards[arm]["params"]}
                         for arm in parts}}
    output = results_path(name, args.output, args.smoke)
    result = save(name, inputs, buckets, summary, verdicts(unloaded["p99_ms"], soak, rss),
                  output, rss=rss, targets=TARGETS)
    markdown = format_markdown(result)
    if not args.smoke and args.output is None:
        update_section(name, serving_title("Soak", "soak", args.proxy_dataplane) + markdown)
    print(markdown)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
