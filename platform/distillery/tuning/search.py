"""`distillery tune`: a Ray Tune search in which every trial is one distill run.

The driver checks the space, builds (or reuses) the teacher's logit cache and loads the data
once, then runs a Tuner over a function trainable: each trial builds its spec from the sampled
values, runs `Pipeline.distill` with Ray Tune's `TuneReportCallback` in the trainer's RunConfig
(every epoch's metrics reach Tune, which is what ASHA stops on) and returns its exported
student's card metrics. Everything lands in the store under `tune/<run_id>/`: Tune's experiment
state (what a resume restores), spec.json, trials.json, trials.md, best.yaml, plot.png and,
written last, summary.json: a run without it is unfinished and the same spec resumes it.
Trial students are `tune/<run_id>/trials/<trial_id>/`, apart from the students that
`distillery evaluate` and serving pick from; a trial stopped by ASHA keeps no student there
(only Tune's own trial directory).
"""

from __future__ import annotations

import os
import time
from pathlib import PurePosixPath

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from distillery.config import PipelineSpec, TuneSpec
from distillery.data.sources import Source
from distillery.models import build_model, count_params
from distillery.runtime import new_run_id
from distillery.stages import Pipeline
from distillery.storage import Store, filesystem
from distillery.store_layout import TUNE, has_card, read_card, trials_dir, tune_dir
from distillery.tuning.results import (
    best_row,
    best_yaml,
    compare,
    markdown_table,
    pareto_front,
    plot_png,
)
from distillery.tuning.space import check_space, spec_values, trial_base, trial_spec

SPEC_FILE = "spec.json"
SUMMARY_FILE = "summary.json"
SIZE = "params"
"""The second objective of a pareto search: the student's parameter count, minimised."""


# ------------------------------------------------------------------ trials

def run_trial(config: dict, base: dict, source: Source, tune_run_id: str) -> dict:
    """One trial: the distill run of `base` with the sampled `config` ({path: value})."""
    # Two trials' progress bars of their cache reads would interleave into noise. Without Ray's
    # tqdm, a trial's actor (no terminal) logs Ray Data's progress at INFO instead, kept off the
    # console unless -v (runtime.quiet_env); disabling the bars would print a warning per trial.
    ray.data.DataContext.get_current().use_ray_tqdm = False
    spec = trial_spec(base, config)
    pipeline = Pipeline(spec, students=trials_dir(tune_run_id))
    # The driver opened the data once for all trials (generating MNIST-1D is CPU-heavy, and
    # each trial would repeat it); a cached_property takes an assigned value as its cache.
    pipeline.source = source
    splits = pipeline.splits
    run_id = tune.get_context().get_trial_id()
    if has_card(pipeline.store, (*pipeline.students, run_id)):
        # finished before the experiment state recorded it (a kill in between): not redone
        card = read_card(pipeline.store, (*pipeline.students, run_id))
    else:
        size = count_params(build_model(spec.student.model, splits.num_features,
                                        splits.num_classes))
        card = pipeline.distill(run_id, callbacks=[EpochReport(spec.distill.epochs, size)])
    metrics = card["metrics"]
    return {"val_accuracy": metrics["val_accuracy"], "epoch": spec.distill.epochs,
            SIZE: card["params"], "test_accuracy": metrics["test_accuracy"],
            "test_agreement": metrics.get("test_agreement"), "student": run_id}


class EpochReport(TuneReportCallback):
    """Sends each epoch's metrics to the trial, with the student's size (every result must
    carry each metric a pareto search ranks by), but not the last epoch's: ASHA stops a trial
    as soon as it reports its final (max_t) epoch, which would kill it before its student is
    exported. The final epoch reaches Tune as the trial's return value instead."""

    def __init__(self, epochs: int, size: int):
        super().__init__()
        self.epochs, self.size = epochs, size

    def after_report(self, run_context, metrics, checkpoint):
        if metrics[0]["epoch"] < self.epochs:
            super().after_report(run_context, [{**metrics[0], SIZE: self.size}], checkpoint)


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


class TrialLog(tune.Callback):
    """One line per trial start and end, instead of Tune's periodic status tables."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_trial_start(self, iteration, trials, trial, **info):
        values = " ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
        print(f"tune: trial {trial.trial_id} started: {values}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        r, n = trial.last_result, trial.trial_id
        if "student" in r:
            print(f"tune: trial {n} completed: {self.metric}={r[self.metric]:.4f} after "
                  f"{r['epoch']} epochs, {r[SIZE]} params, test accuracy "
                  f"{r['test_accuracy']:.4f}", flush=True)
        else:
            print(f"tune: trial {n} stopped by ASHA at epoch {r.get('epoch')}: "
                  f"{self.metric}={r.get(self.metric, float('nan')):.4f}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"tune: trial {trial.trial_id} failed: {trial.error_file}", flush=True)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ the search

def unfinished_runs(store: Store, spec: PipelineSpec) -> list[str]:
    """tune/<run_id> of this very spec (same hash) without a summary, oldest first."""
    return [r for r in store.listdir(*TUNE)
            if store.exists(*tune_dir(r), SPEC_FILE)
            and not store.exists(*tune_dir(r), SUMMARY_FILE)
            and store.read_json(*tune_dir(r), SPEC_FILE)["spec_hash"] == spec.spec_hash()]


def run_search(pipeline: Pipeline, run_id: str | None = None) -> dict:
    """Search `spec.tune` (resuming `run_id` when given) and write the results; the summary."""
    spec, store = pipeline.spec, pipeline.store
    t = spec.tune
    check_space(spec)
    started = time.perf_counter()
    run_id = run_id or new_run_id(f"{spec.name}-tune")
    if not store.exists(*tune_dir(run_id), SPEC_FILE):
        store.write_json({"spec_hash": spec.spec_hash(), "spec": spec.model_dump(mode="json")},
                         *tune_dir(run_id), SPEC_FILE)
    pipeline.teacher_infer()  # built or reused once, here: trials only read it
    base = trial_base(spec)
    # Trials get the store's absolute path, as Ray workers on other nodes need it (best.yaml
    # keeps the store as the spec wrote it), and keep the driver's working directory rather
    # than Tune's per-trial one, so other relative paths of the spec read as in `distill`.
    trial_raw = {**base, "store": store.root}
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # Tune passes it on to the trials
    # The trial's own process only waits on its Ray Train run, whose workers take the CPUs:
    # it holds no CPU, so max_concurrent one-worker trials fit on as many CPUs. (Tune rejects
    # an all-zero request; a token of memory is a request that costs nothing.)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=trial_raw, source=pipeline.source,
                             tune_run_id=run_id),
        {"cpu": 0, "memory": 1 << 20})
    fs, root = filesystem(store.uri(*TUNE))
    experiment = f"{root}/{run_id}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        print(f"tune: resuming {store.uri(*tune_dir(run_id))}; finished trials are kept",
              flush=True)
        # The space again: Tune keeps it out of its saved tuner, and a run killed before its
        # searcher's first saved state would otherwise resume with a searcher without one.
        tuner = tune.Tuner.restore(experiment, trainable, param_space=param_space(t),
                                   resume_unfinished=True, restart_errored=True,
                                   storage_filesystem=fs)
    else:
        print(f"tune: {t.num_samples} trials, {t.max_concurrent} at a time, "
              f"{base['distill']['epochs']} epochs each -> {store.uri(*tune_dir(run_id))}",
              flush=True)
        tuner = tune.Tuner(
            trainable, param_space=param_space(t),
            tune_config=tune.TuneConfig(
                # a pareto search ranks in the searcher; Tune's own metric is single
                metric=None if t.pareto else t.metric, mode=None if t.pareto else "max",
                search_alg=searcher(t, spec_values(base, t.space)),
                scheduler=scheduler(t, base["distill"]["epochs"]),
                num_samples=t.num_samples,
                # random search limits itself (Tune's limiter wraps model-based searchers only)
                max_concurrent_trials=t.max_concurrent if t.search_alg == "optuna" else None,
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(name=run_id, storage_path=root, storage_filesystem=fs,
                                      verbose=0, callbacks=[TrialLog(t.metric)]))
    # Tune's own Ctrl-C handler ends fit() normally, which would read as a finished search;
    # without it the interrupt propagates and the run stays unfinished, to be resumed.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    grid = tuner.fit()
    rows = sorted((trial_row(r, t.metric) for r in grid), key=lambda r: r["order"])
    for r in rows:
        if r["status"] != "completed":  # its checkpoints are of a run nobody will finish
            store.remove_dir(*trials_dir(run_id), r["trial"])
    return write_results(pipeline, run_id, rows, base, time.perf_counter() - started)


def param_space(t: TuneSpec) -> dict:
    domains = {"uniform": lambda d: tune.uniform(d.lower, d.upper),
               "loguniform": lambda d: tune.loguniform(d.lower, d.upper),
               "choice": lambda d: tune.choice(d.values)}
    return {path: domains[d.type](d) for path, d in t.space.items()}


def searcher(t: TuneSpec, own_values: dict):
    """The spec's own values are the first point, so the report can compare against them."""
    if t.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        if t.pareto:
            return OptunaSearch(metric=[t.metric, SIZE], mode=["max", "min"],
                                points_to_evaluate=[own_values], seed=t.seed)
        return OptunaSearch(points_to_evaluate=[own_values], seed=t.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=[own_values], random_state=t.seed,
                                 max_concurrent=t.max_concurrent)


def scheduler(t: TuneSpec, epochs: int):
    if t.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=t.scheduler.grace_period,
                         reduction_factor=t.scheduler.reduction_factor)


def trial_row(result, metric: str) -> dict:
    m = result.metrics or {}
    status = "error" if result.error else "completed" if "student" in m else "stopped"
    # Tune's tags start with a count of trials created (a trial that failed before reporting
    # has none, and goes last)
    order = int(m["experiment_tag"].split("_")[0]) if "experiment_tag" in m else 1 << 30
    row = {"trial": PurePosixPath(result.path).name.removeprefix("trial_"), "order": order,
           "status": status, "epochs": m.get("epoch"),
           "params": dict(result.config), metric: m.get(metric)}
    if SIZE in m:
        row["student_params"] = m[SIZE]
    if status == "completed":
        row.update(student=m["student"], test_accuracy=m["test_accuracy"],
                   test_agreement=m["test_agreement"])
    if status == "error":
        row["error"] = str(result.error).splitlines()[0][:300]
    return row


def write_results(pipeline: Pipeline, run_id: str, rows: list[dict], base: dict,
                  seconds: float) -> dict:
    spec, store = pipeline.spec, pipeline.store
    t = spec.tune
    paths = list(t.space)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped", "error")}
    best = best_row(rows, t.metric)
    own_values = spec_values(base, t.space)
    own = next((r for r in rows if r["params"] == own_values), None)
    summary = {"run_id": run_id, "metric": t.metric, "trials": counts,
               "wall_seconds": round(seconds, 1), "best": best, "spec_values": own,
               "location": store.uri(*tune_dir(run_id))}
    store.write_json(rows, *tune_dir(run_id), "trials.json")
    table = markdown_table(rows, t.metric, paths, own and own["trial"])
    store.write_bytes(table.encode(), *tune_dir(run_id), "trials.md")
    store.write_bytes(plot_png(rows, t.space, t.metric, f"{run_id}: {t.metric}",
                               own and own["trial"]),
                      *tune_dir(run_id), "plot.png")
    print(f"tune: {len(rows)} trials in {seconds:.0f}s: {counts['completed']} completed, "
          f"{counts['stopped']} stopped by ASHA, {counts['error']} failed")
    if best:
        best_spec = trial_spec(base, best["params"])
        header = [f"Best of tune run {run_id}: trial {best['trial']}, {t.metric} "
                  f"{best[t.metric]:.4f}, test accuracy {best['test_accuracy']:.4f}.",
                  f"distillery distill --config best.yaml reproduces it ({spec.name}, "
                  f"{best_spec.distill.epochs} epochs, {best_spec.distill.num_workers} worker(s))."]
        store.write_bytes(best_yaml(best_spec, header).encode(), *tune_dir(run_id), "best.yaml")
        values = " ".join(f"{k}={_short(v)}" for k, v in best["params"].items())
        print(f"tune: best trial {best['trial']}: {t.metric}={best[t.metric]:.4f} ({values})")
    if best and own and own[t.metric] is not None:
        noise = compare(best[t.metric], own[t.metric], len(pipeline.splits.y_val))
        summary["best_vs_spec_values"] = noise
        verdict = "within noise" if noise["within_noise"] else "beyond noise"
        print(f"tune: the spec's own values (trial {own['trial']}, {own['status']} after "
              f"{own['epochs']} epochs): {t.metric}={own[t.metric]:.4f}; best - own = "
              f"{noise['difference']:+.4f} = {noise['z']:.1f} standard errors on "
              f"{noise['val_rows']} validation rows: {verdict}")
    if t.pareto:
        done = [r for r in rows if r["status"] == "completed"]
        front = pareto_front([(r[t.metric], r["student_params"]) for r in done])
        summary["pareto"] = [done[i] for i in front]
        print("tune: Pareto set (" + t.metric + " up, student params down): " + ", ".join(
            f"trial {done[i]['trial']} ({done[i][t.metric]:.4f}, {done[i]['student_params']})"
            for i in front))
    store.write_json(summary, *tune_dir(run_id), SUMMARY_FILE)
    print(table)
    print(f"tune: results in {store.uri(*tune_dir(run_id))}/ (trials.md, trials.json, best.yaml, "
          f"plot.png, summary.json)", flush=True)
    return summary
