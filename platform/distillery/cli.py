"""`distillery <command> --config SPEC [--set a.b=value ...]`.

The spec is validated before any Ray work; a bad spec or a missing input exits with status 2
and one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys

from distillery.config import SpecError, load_spec, section_override
from distillery.config.lm import LMPipelineSpec


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from distillery.runtime import VERBOSE_ENV
        os.environ[VERBOSE_ENV] = "1"  # read by ensure_ray, here and in a Tune trial's actor
    try:
        overrides = args.overrides
        if args.command in ("validate", "tune") and args.space:
            overrides = [section_override("tune", args.space, "--space"), *overrides]
        if args.command in ("serve", "rollout") and args.serving:
            overrides = [section_override("serve", args.serving, "--serving"), *overrides]
        spec = load_spec(args.config, overrides)
        if isinstance(spec, LMPipelineSpec) and args.command != "validate":
            from distillery.lm.commands import run_lm_command
            return run_lm_command(spec, args)
        if args.command == "tune" and spec.tune is None:
            raise SpecError("tune: the spec has no tune section; add one or pass --space FILE "
                            "(reference spaces are in tune/)")
        if (not isinstance(spec, LMPipelineSpec) and spec.tune is not None
                and args.command in ("validate", "tune")):
            from distillery.tuning.space import check_space
            check_space(spec)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(spec.model_dump_json(indent=2))
        return 0
    if args.command == "rollout":
        import json

        from distillery.serving.client import AdminError, admin_call
        try:
            print(json.dumps(admin_call(spec, args.action, args.url), indent=2))
        except AdminError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    if args.command in ("drift", "monitor"):  # reads the store; no Ray needed
        return _monitor(spec, args)

    from distillery.runtime import ensure_ray
    from distillery.stages import Pipeline
    from distillery.storage import StoreError, check_reachable

    try:
        check_reachable(spec.store)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    pipeline = Pipeline(spec)
    run_id = None
    if args.command == "distill" and args.resume:
        try:
            run_id = resume_run(pipeline, args.resume)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "tune":
        from distillery.tuning.search import unfinished_runs
        unfinished = unfinished_runs(pipeline.store, spec)
        wanted = None if args.resume in (None, "latest") else args.resume
        run_id = wanted or (unfinished[-1] if unfinished else None)
        if args.resume and run_id not in unfinished:
            print(f"error: --resume: no unfinished tune run {wanted or ''} of this spec in "
                  f"{pipeline.store.root}; unfinished: {unfinished or 'none'}", file=sys.stderr)
            return 2
        if run_id:
            print(f"tune: resuming run {run_id} (unfinished, same spec)", flush=True)
    if args.command == "evaluate":  # a wrong --models fails before Ray starts
        from distillery.evaluation.selection import select_models

        names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
        try:
            models = select_models(pipeline, names)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "serve":  # a missing model fails before Ray starts
        from distillery.serving.admin import token_digest
        from distillery.serving.app import build_app, serve_pipeline

        try:
            app = build_app(spec, token_digest())
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        ensure_ray(args.address)
        if args.command == "train-teacher":
            pipeline.train_teacher()
        elif args.command == "teacher-infer":
            pipeline.teacher_infer()
        elif args.command == "distill":
            pipeline.distill(run_id)
        elif args.command == "tune":
            from distillery.tuning.search import run_search
            run_search(pipeline, run_id)
        elif args.command == "baseline":
            pipeline.baseline()
        elif args.command == "evaluate":
            from distillery.evaluation.report import evaluate
            from distillery.evaluation.verdict import failure_message

            report = evaluate(pipeline, models)
            if not report["gates"]["passed"]:
                print(f"error: {failure_message(report['gates'])}; report: "
                      f"{report['location']}/report.html", file=sys.stderr)
                return 1
        elif args.command == "compare-strategies":
            from distillery.compare import (
                compare_strategies,
                format_markdown,
                load_variants,
                write_result,
            )
            result = compare_strategies(args.config, args.overrides,
                                        load_variants(args.variants), list(range(args.seeds)))
            write_result(result, args.output)
            print("\n" + format_markdown(result) + f"\n\nresults: {args.output}")
        elif args.command == "serve":
            embedded = not (args.address or os.environ.get("RAY_ADDRESS"))
            serve_pipeline(spec, app, args.port, embedded)
        elif args.command == "quickstart":
            from distillery.quickstart import quickstart
            quickstart(pipeline, args.output_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def resume_run(pipeline, wanted: str) -> str:
    """The distill run `--resume [RUN_ID]` names: the newest unfinished one for `latest`."""
    unfinished = pipeline.unfinished_runs()
    run_id = unfinished[-1] if unfinished and wanted == "latest" else wanted
    if run_id not in unfinished:
        named = "" if wanted == "latest" else f" {wanted}"
        raise ValueError(f"--resume: no unfinished distill run{named} of {pipeline.spec.name!r} in "
                         f"{pipeline.store.root}; unfinished: {unfinished or 'none'}")
    print(f"distill: resuming run {run_id}", flush=True)
    return run_id


def _monitor(spec, args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from distillery.monitoring.windows import parse_window
    from distillery.storage import StoreError, check_reachable
    from distillery.store_layout import served_models

    try:
        window = (args.window if args.window or args.start
                  else f"{spec.monitor.window_s:g}s")
        start, end = parse_window(window, args.start, args.end, datetime.now(timezone.utc))
        check_reachable(spec.store)
        served_models(spec)  # a missing model fails before the heavy imports
        from distillery.monitoring.check import run_check

        result = run_check(spec, start, end, drift=args.command == "drift",
                           send_alerts=args.command == "drift")
    except (FileNotFoundError, ValueError, OSError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = result.status()
    print(json.dumps({k: status[k] for k in ("window", "rows", "drift", "alerts", "files")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
