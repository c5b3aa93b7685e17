"""The CLI's commands for a language-model spec (data.source text or python_stdlib)."""

from __future__ import annotations

import argparse
import os
import sys

from distillery.config.lm import LMPipelineSpec, LMServeSpec

COMMANDS = ("train-teacher", "teacher-infer", "distill", "baseline", "evaluate", "quickstart",
            "serve")


def run_lm_command(spec: LMPipelineSpec, args: argparse.Namespace) -> int:
    """Exit status: 0, or 2 with one line on stderr for a command or input that is wrong."""
    if args.command not in COMMANDS:
        print(f"error: {args.command}: not available for a language-model spec; "
              f"commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if args.command == "evaluate" and args.models:
        print("error: --models: a language-model report always compares the teacher, the "
              "newest student and the newest baseline", file=sys.stderr)
        return 2
    from distillery.cli import resume_run
    from distillery.lm.pipeline import LMPipeline
    from distillery.runtime import ensure_ray
    from distillery.storage import StoreError, check_reachable

    pipeline = LMPipeline(spec)
    try:
        check_reachable(spec.store)
        if args.command == "serve":  # a missing model fails before Ray starts
            serving = spec.serve or LMServeSpec()
            models = {"teacher": pipeline.teacher_parts(),
                      "student": ("students", pipeline.newest("student")
                                  if serving.student == "student" else serving.student)}
            missing = [p for p in models.values() if not pipeline.store.exists(*p, "card.json")]
            if missing:
                raise FileNotFoundError(f"serve.student: no model {'/'.join(missing[0])} in "
                                        f"{pipeline.store.root}")
        run_id = (resume_run(pipeline, args.resume)
                  if args.command == "distill" and args.resume else None)
        ensure_ray(args.address)
        if args.command == "train-teacher":
            pipeline.train_teacher()
        elif args.command == "teacher-infer":
            pipeline.teacher_infer()
        elif args.command == "distill":
            pipeline.distill(run_id)
        elif args.command == "baseline":
            pipeline.baseline()
        elif args.command == "evaluate":
            pipeline.evaluate()
        elif args.command == "quickstart":
            from distillery.lm.quickstart import lm_quickstart
            lm_quickstart(pipeline, args.output_dir)
        else:
            from distillery.serving.app import serve_forever
            from distillery.serving.lm_app import LM_APP_NAME, build_lm_app
            app = build_lm_app(pipeline.store.root, models,
                               max_new_tokens=serving.max_new_tokens,
                               max_prompt_tokens=serving.max_prompt_tokens,
                               num_replicas=serving.num_replicas)
            serve_forever(app, app_name=LM_APP_NAME, host=serving.host,
                          port=args.port or serving.port,
                          banner="(POST /v1/models/{teacher,student}:generate)",
                          embedded=not (args.address or os.environ.get("RAY_ADDRESS")))
    except (FileNotFoundError, ValueError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
