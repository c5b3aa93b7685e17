"""The CLI's handlers for a language-model spec (data.source text or python_stdlib) where they
differ from a classifier spec's; the stage commands are cli.py's for both.

Each takes the loaded spec and the parsed arguments and returns the exit status; cli.py's table
dispatches to them, and its error boundary turns a user's error into one line.
"""

from __future__ import annotations

import argparse
import os

from distillery.config.lm import LMPipelineSpec, LMServeSpec


def validate(spec: LMPipelineSpec, args: argparse.Namespace) -> int:
    print(spec.model_dump_json(indent=2))
    return 0


def evaluate(spec: LMPipelineSpec, args: argparse.Namespace) -> int:
    if args.models:
        raise ValueError("--models: a language-model report always compares the teacher, the "
                         "newest student and the newest baseline")
    from distillery.runtime import ensure_ray

    pipeline = lm_pipeline(spec)
    ensure_ray(args.address)
    pipeline.evaluate()
    return 0


def quickstart(spec: LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.lm.quickstart import lm_quickstart
    from distillery.runtime import ensure_ray

    pipeline = lm_pipeline(spec)
    ensure_ray(args.address)
    lm_quickstart(pipeline, args.output_dir)
    return 0


def serve(spec: LMPipelineSpec, args: argparse.Namespace) -> int:
    from distillery.runtime import ensure_ray
    from distillery.serving.app import serve_forever
    from distillery.serving.lm_app import LM_APP_NAME, build_lm_app
    from distillery.store_layout import has_card, student_dir

    pipeline = lm_pipeline(spec)
    serving = spec.serve or LMServeSpec()
    models = {"teacher": pipeline.teacher_parts(),
              "student": student_dir(pipeline.newest("student")
                                     if serving.student == "student" else serving.student)}
    missing = [p for p in models.values() if not has_card(pipeline.store, p)]
    if missing:  # before Ray starts
        raise FileNotFoundError(f"serve.student: no model {'/'.join(missing[0])} in "
                                f"{pipeline.store.root}")
    ensure_ray(args.address)
    app = build_lm_app(pipeline.store.root, models, max_new_tokens=serving.max_new_tokens,
                       max_prompt_tokens=serving.max_prompt_tokens,
                       num_replicas=serving.num_replicas)
    serve_forever(app, app_name=LM_APP_NAME, host=serving.host, port=args.port or serving.port,
                  banner="(POST /v1/models/{teacher,student}:generate)",
                  embedded=not (args.address or os.environ.get("RAY_ADDRESS")))
    return 0


def lm_pipeline(spec: LMPipelineSpec):
    """The pipeline of `spec`, once its store is known to be reachable."""
    from distillery.lm.pipeline import LMPipeline
    from distillery.storage import check_reachable

    check_reachable(spec.store)
    return LMPipeline(spec)
