"""`distillery <command> --config SPEC [--set a.b=value ...]`.

The spec is validated before any Ray work; a bad spec or a missing input exits with status 2
and one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import sys

from distillery.config import SpecError, load_spec


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
        return sub

    command("validate", "check a spec and print it resolved")
    command("train-teacher", "train the teacher and store it with its card")
    command("teacher-infer", "run the teacher over the data with Ray Data into the logit cache")
    distill = command("distill", "distill the student with Ray Train + DeepSpeed")
    distill.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_ID",
                         help="continue an interrupted run (default: the newest unfinished one)")
    command("baseline", "train the student architecture on labels only, same budget")
    quick = command("quickstart", "all stages end to end, with a side-by-side summary")
    quick.add_argument("--output-dir", default="quickstart-out",
                       help="where summary.json goes (default: quickstart-out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.config, args.overrides)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(spec.model_dump_json(indent=2))
        return 0

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
        unfinished = pipeline.unfinished_runs()
        run_id = unfinished[-1] if unfinished and args.resume == "latest" else args.resume
        if run_id not in unfinished:
            print(f"error: --resume: no unfinished distill run {run_id or ''} of {spec.name!r} "
                  f"in {pipeline.store.root}; unfinished: {unfinished or 'none'}",
                  file=sys.stderr)
            return 2
        print(f"distill: resuming run {run_id}", flush=True)
    try:
        ensure_ray(args.address)
        if args.command == "train-teacher":
            pipeline.train_teacher()
        elif args.command == "teacher-infer":
            pipeline.teacher_infer()
        elif args.command == "distill":
            pipeline.distill(run_id)
        elif args.command == "baseline":
            pipeline.baseline()
        elif args.command == "quickstart":
            from distillery.quickstart import quickstart
            quickstart(pipeline, args.output_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
