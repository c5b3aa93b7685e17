"""`distillery <command> --config SPEC [--set a.b=value ...]`.

The spec is validated before any Ray work; a bad spec or a missing input exits with status 2
and one line on stderr naming what is wrong.

Each command is a handler `(spec, args) -> exit status` in HANDLERS, keyed by the kind of the
loaded spec and the command's name; language-model handlers are in lm/commands.py. A handler
makes every refusal it can before it calls `ensure_ray`, and `main` is the one place where a
user's error becomes that line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from distillery.config import PipelineSpec, SpecError, load_spec, section_override
from distillery.config.lm import LMPipelineSpec
from distillery.lm import commands as lm
from distillery.serving.client import AdminError
from distillery.storage import StoreError, check_reachable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", required=True, help="pipeline spec (YAML)")
        sub.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY.PATH=VALUE", help="override a spec field (repeatable)")
        sub.add_argument("--address", default=None,
                         help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
        sub.add_argument("-v", "--verbose", action="store_true",
                         help="show Ray's own logs on the console too (they always reach Ray's "
                              "log files): Train reports, Data progress, deprecation warnings")
        return sub

    validate = command("validate", "check a spec and print it resolved")
    command("train-teacher", "train the teacher and store it with its card")
    command("teacher-infer", "run the teacher over the data with Ray Data into the logit cache")
    distill = command("distill", "distill the student with Ray Train + DeepSpeed")
    distill.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_ID",
                         help="continue an interrupted run (default: the newest unfinished one)")
    command("baseline", "train the student architecture on labels only, same budget")
    evaluate = command("evaluate", "teacher vs students side by side: reports/<run_id>/ "
                                   "report.html, report.md, report.json; exit 1 if a gate fails")
    evaluate.add_argument("--models", default=None, metavar="teacher,student[,baseline,RUN_ID]",
                          help="models to compare, comma-separated: student and baseline are "
                               "the newest of their role, anything else a run id under "
                               "students/ (default: teacher, student and baseline where they "
                               "exist; the teacher is always included)")
    tune = command("tune", "search distill hyper-parameters with Ray Tune (the tune section)")
    for sub in (validate, tune):
        sub.add_argument("--space", default=None, metavar="FILE",
                         help="the tune section from a file, e.g. tune/mnist1d_response.yaml")
    tune.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_ID",
                      help="continue an interrupted search (rerunning the same spec does too)")
    compare = command("compare-strategies", "distill each variant of a variants file (and the "
                                            "label-only baseline) on the same teacher, student "
                                            "and budget; write the table")
    compare.add_argument("--variants", default="bench/strategies.yaml", metavar="FILE",
                         help="variant name -> list of key.path=value overrides "
                              "(default: bench/strategies.yaml)")
    compare.add_argument("--seeds", type=int, default=1, help="runs per variant (distill.seed "
                                                               "0..N-1; default 1)")
    compare.add_argument("--output", default="bench/results/strategies.json", metavar="FILE")
    serve = command("serve", "serve teacher and student over HTTP with Ray Serve and run the "
                             "rollout of the spec's serve section")
    serve.add_argument("--port", type=int, default=None,
                       help="HTTP port (default: serve.port, 8000)")
    rollout = command("rollout", "show or steer the rollout of a running `distillery serve` "
                                 "(token from DISTILLERY_ADMIN_TOKEN)")
    rollout.add_argument("action", choices=("status", "advance", "pause", "resume", "rollback"))
    rollout.add_argument("--url", default=None,
                         help="server address (default: http://serve.host:serve.port)")
    for sub in (serve, rollout):
        sub.add_argument("--serving", default=None, metavar="FILE",
                         help="the serve section from a file, e.g. serve/rollout-canary.yaml")
    drift = command("drift", "compare a window of logged requests with the reference: Evidently "
                             "drift report, control charts and alerts (monitor/reports/)")
    monitor = command("monitor", "monitoring views of the request log")
    monitor.add_argument("view", choices=("charts",),
                         help="charts: control charts of the window, no drift report, no alerts "
                              "sent")
    for sub in (drift, monitor):
        sub.add_argument("--window", default=None, metavar="DURATION",
                         help="the last 90s, 30m, 1h, 2d (default: monitor.window_s)")
        sub.add_argument("--from", dest="start", default=None, metavar="ISO-TIME",
                         help="window start, e.g. 2026-11-29T20:00 (UTC unless an offset is given)")
        sub.add_argument("--to", dest="end", default=None, metavar="ISO-TIME",
                         help="window end (default: now)")
    quick = command("quickstart", "all stages end to end, with a side-by-side summary")
    quick.add_argument("--output-dir", default="quickstart-out",
                       help="where summary.json goes (default: quickstart-out)")
    return parser


# ---------------------------------------------------------------- commands
# The stage commands (train-teacher, teacher-infer, distill, baseline) serve both kinds of spec;
# lm/commands.py holds the language-model commands that differ.

def validate(spec: PipelineSpec, args: argparse.Namespace) -> int:
    if spec.tune is not None:
        from distillery.tuning.space import check_space
        check_space(spec)
    print(spec.model_dump_json(indent=2))
    return 0


def train_teacher(spec: PipelineSpec | LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray

    pipeline = _pipeline(spec)
    ensure_ray(args.address)
    pipeline.train_teacher()
    return 0


def teacher_infer(spec: PipelineSpec | LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray

    pipeline = _pipeline(spec)
    ensure_ray(args.address)
    pipeline.teacher_infer()
    return 0


def distill(spec: PipelineSpec | LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray, resume_run

    pipeline = _pipeline(spec)
    run_id = resume_run(pipeline, args.resume) if args.resume else None
    ensure_ray(args.address)
    pipeline.distill(run_id)
    return 0


def baseline(spec: PipelineSpec | LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray

    pipeline = _pipeline(spec)
    ensure_ray(args.address)
    pipeline.baseline()
    return 0


def evaluate(spec: PipelineSpec, args: argparse.Namespace) -> int:
    """Exit status 1 when a gate of the report fails."""
    from distillery.evaluation.report import evaluate as write_report
    from distillery.evaluation.selection import select_models
    from distillery.evaluation.verdict import failure_message
    from distillery.runtime import ensure_ray

    pipeline = _pipeline(spec)
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    models = select_models(pipeline, names)  # a wrong --models fails before Ray starts
    ensure_ray(args.address)
    report = write_report(pipeline, models)
    if not report["gates"]["passed"]:
        print(f"error: {failure_message(report['gates'])}; report: "
              f"{report['location']}/report.html", file=sys.stderr)
        return 1
    return 0


def tune(spec: PipelineSpec, args: argparse.Namespace) -> int:
    if spec.tune is None:
        raise SpecError("tune: the spec has no tune section; add one or pass --space FILE "
                        "(reference spaces are in tune/)")
    from distillery.tuning.space import check_space
    check_space(spec)
    from distillery.runtime import ensure_ray
    from distillery.tuning.search import run_search, unfinished_runs

    pipeline = _pipeline(spec)
    unfinished = unfinished_runs(pipeline.store, spec)
    wanted = None if args.resume in (None, "latest") else args.resume
    run_id = wanted or (unfinished[-1] if unfinished else None)
    if args.resume and run_id not in unfinished:
        raise ValueError(f"--resume: no unfinished tune run {wanted or ''} of this spec in "
                         f"{pipeline.store.root}; unfinished: {unfinished or 'none'}")
    if run_id:
        print(f"tune: resuming run {run_id} (unfinished, same spec)", flush=True)
    ensure_ray(args.address)
    run_search(pipeline, run_id)
    return 0


def compare_strategies(spec: PipelineSpec, args: argparse.Namespace) -> int:
    from distillery.compare import compare_strategies as compare
    from distillery.compare import format_markdown, load_variants, write_result
    from distillery.runtime import ensure_ray

    check_reachable(spec.store)
    variants = load_variants(args.variants)
    ensure_ray(args.address)
    result = compare(args.config, args.overrides, variants, list(range(args.seeds)))
    write_result(result, args.output)
    print("\n" + format_markdown(result) + f"\n\nresults: {args.output}")
    return 0


def serve(spec: PipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray
    from distillery.serving.admin import token_digest
    from distillery.serving.app import build_app, serve_pipeline

    check_reachable(spec.store)
    app = build_app(spec, token_digest())  # a missing model fails here, before Ray starts
    ensure_ray(args.address, serving=True)
    embedded = not (args.address or os.environ.get("RAY_ADDRESS"))
    serve_pipeline(spec, app, args.port, embedded)
    return 0


def rollout(spec: PipelineSpec, args: argparse.Namespace) -> int:
    from distillery.serving.client import admin_call

    print(json.dumps(admin_call(spec, args.action, args.url), indent=2))
    return 0


def drift(spec: PipelineSpec, args: argparse.Namespace) -> int:
    return _check_window(spec, args, drift=True)


def monitor(spec: PipelineSpec, args: argparse.Namespace) -> int:
    return _check_window(spec, args, drift=False)


def quickstart(spec: PipelineSpec, args: argparse.Namespace) -> int:
    from distillery.quickstart import quickstart as run_all
    from distillery.runtime import ensure_ray

    pipeline = _pipeline(spec)
    ensure_ray(args.address)
    run_all(pipeline, args.output_dir)
    return 0


def _pipeline(spec: PipelineSpec | LMPipelineSpec):
    """The pipeline of `spec`, classifier or language model, once its store is known to be
    reachable: the stage commands are the same for both."""
    if isinstance(spec, LMPipelineSpec):
        return lm.lm_pipeline(spec)
    from distillery.stages import Pipeline

    check_reachable(spec.store)
    return Pipeline(spec)


def _check_window(spec: PipelineSpec, args: argparse.Namespace, drift: bool) -> int:
    """Monitoring reads the store, no Ray: with `drift`, the drift report and alerts too."""
    from datetime import datetime, timezone

    from distillery.monitoring.windows import parse_window
    from distillery.store_layout import served_models

    window = args.window if args.window or args.start else f"{spec.monitor.window_s:g}s"
    start, end = parse_window(window, args.start, args.end, datetime.now(timezone.utc))
    check_reachable(spec.store)
    served_models(spec)  # a missing model fails before the heavy imports
    from distillery.monitoring.check import run_check

    try:
        status = run_check(spec, start, end, drift=drift, send_alerts=drift).status()
    except OSError as err:  # reading the store's request log, writing its reports
        raise StoreError(f"{spec.store}: {err}") from err
    print(json.dumps({k: status[k] for k in ("window", "rows", "drift", "alerts", "files")},
                     indent=2))
    return 0


# ---------------------------------------------------------------- dispatch

Handler = Callable[[PipelineSpec | LMPipelineSpec, argparse.Namespace], int]

HANDLERS: dict[tuple[type, str], Handler] = {
    (PipelineSpec, "validate"): validate,
    (PipelineSpec, "train-teacher"): train_teacher,
    (PipelineSpec, "teacher-infer"): teacher_infer,
    (PipelineSpec, "distill"): distill,
    (PipelineSpec, "baseline"): baseline,
    (PipelineSpec, "evaluate"): evaluate,
    (PipelineSpec, "tune"): tune,
    (PipelineSpec, "compare-strategies"): compare_strategies,
    (PipelineSpec, "serve"): serve,
    (PipelineSpec, "rollout"): rollout,
    (PipelineSpec, "drift"): drift,
    (PipelineSpec, "monitor"): monitor,
    (PipelineSpec, "quickstart"): quickstart,
    (LMPipelineSpec, "validate"): lm.validate,
    (LMPipelineSpec, "train-teacher"): train_teacher,
    (LMPipelineSpec, "teacher-infer"): teacher_infer,
    (LMPipelineSpec, "distill"): distill,
    (LMPipelineSpec, "baseline"): baseline,
    (LMPipelineSpec, "evaluate"): lm.evaluate,
    (LMPipelineSpec, "quickstart"): lm.quickstart,
    (LMPipelineSpec, "serve"): lm.serve,
}
"""(kind of spec, command) -> handler; every command has a classifier handler."""

USER_ERRORS = (ValueError, FileNotFoundError, StoreError, AdminError)
"""Errors a user can fix (SpecError is a ValueError): one line on stderr and exit status 2,
never a traceback. Another OSError (a full disk, a lost connection mid-run) is not the user's
input, so its traceback shows; monitoring, which only reads the store, maps its own."""


def handler(spec: PipelineSpec | LMPipelineSpec, command: str) -> Handler:
    try:
        return HANDLERS[type(spec), command]
    except KeyError:
        # validate checks any spec; the list names what else a language-model spec runs
        runs = [name for kind, name in HANDLERS if kind is type(spec) and name != "validate"]
        raise SpecError(f"{command}: not available for a language-model spec; "
                        f"commands: {', '.join(runs)}") from None


def spec_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` items, after the section files of `--space` and `--serving` as overrides."""
    overrides = args.overrides
    if args.command in ("validate", "tune") and args.space:
        overrides = [section_override("tune", args.space, "--space"), *overrides]
    if args.command in ("serve", "rollout") and args.serving:
        overrides = [section_override("serve", args.serving, "--serving"), *overrides]
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from distillery.runtime import VERBOSE_ENV
        os.environ[VERBOSE_ENV] = "1"  # read by ensure_ray, here and in a Tune trial's actor
    try:
        spec = load_spec(args.config, spec_overrides(args))
        return handler(spec, args.command)(spec, args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
