"""The language-model pipeline: spec validation at the edge, and the quickstart end to end on
the session's local Ray, small (tiny GPT-2s on a few stdlib modules)."""

from __future__ import annotations

import json

import pytest

from helpers import ROOT

LM_SPEC = ROOT / "jobs" / "configs" / "tiny_lm.yaml"

LM_TINY = [
    "data.max_documents=10",
    "data.block_size=32",
    "data.val_fraction=0.3",
    "data.tokenizer.vocab_size=320",
    "teacher.hf={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2}",
    "teacher.train.epochs=1",
    "teacher.train.num_workers=1",  # 2 workers: tests/test_lm_train.py
    "teacher.inference.batch_size=32",
    "student.hf={model_type: gpt2, n_layer: 1, n_embd: 16, n_head: 2}",
    "distill.epochs=1",
    "distill.num_workers=1",
    "distill.topk=8",
    "evaluate.prompts=[def ]",
    "evaluate.max_new_tokens=4",
    "evaluate.max_val_blocks=16",
    "evaluate.seconds=0.2",
]


@pytest.mark.parametrize(("override", "message"), [
    ("teacher.hf.n_head=3", "teacher.hf: cannot build a gpt2 causal LM from this config: "
                            "`embed_dim` must be divisible by num_heads"),
    ("teacher.hf.n_layers=3", "teacher.hf: n_layers: not a gpt2 config key"),
    # refused before a million layers are built on the meta device (it would take many minutes)
    ("teacher.hf.n_layer=1000000", "teacher.hf: cannot build a gpt2 causal LM from this config: "
                                   "1000000 layers; at most 256"),
    ("student.hf.model_type=nope", "student.hf: model_type: 'nope' is not a model type"),
    ("student.hf=/no/such/dir", "student.hf: no directory /no/such/dir"),
    ("distill.topk=0", "distill.topk: must be >= 1, got 0"),
    ("teacher.train=null", "teacher: train is required when hf is a config"),
    ("data.source=text", "data: paths: required for source text"),
    ("data.paths=[/no/such/*.txt]", "data: paths: source python_stdlib reads the standard "
                                    "library"),
])
def test_bad_lm_spec_is_one_line_naming_the_field(override, message):
    from distillery.config import SpecError, load_spec

    with pytest.raises(SpecError) as err:
        load_spec(LM_SPEC, [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_text_paths_that_match_nothing_are_named(tmp_path):
    from distillery.config import SpecError, load_spec

    (tmp_path / "a.txt").write_text("x")
    overrides = ["data.source=text", f"data.paths=[{tmp_path}/*.txt, {tmp_path}/*.md]"]
    with pytest.raises(SpecError, match=r"^data.paths.1: nothing matches '.*\*\.md'$"):
        load_spec(LM_SPEC, overrides)


def test_cli_refuses_tabular_commands_for_an_lm_spec(cli_inprocess):
    result = cli_inprocess("tune", "--config", str(LM_SPEC))
    assert result.returncode == 2
    assert result.stderr.startswith("error: tune: not available for a language-model spec")


def test_lm_distill_resume_names_the_unfinished_runs(cli, tmp_path):
    """In a fresh process, as a user runs it: the one line and nothing else on stderr."""
    (tmp_path / "students" / "tiny-lm-20990101-000000-abcd").mkdir(parents=True)
    result = cli("distill", "--config", str(LM_SPEC), "--set", f"store={tmp_path}",
                 "--resume", "tiny-lm-20990101-000001-abcd", timeout=120)
    assert result.returncode == 2
    assert result.stderr == (
        "error: --resume: no unfinished distill run tiny-lm-20990101-000001-abcd of 'tiny-lm' in "
        f"{tmp_path}; unfinished: ['tiny-lm-20990101-000000-abcd']\n")


def test_lm_quickstart_end_to_end(local_ray, tmp_path, capsys):
    """Every stage, then a rerun that reuses the packed data, the teacher and the cache."""
    from distillery.config import load_spec
    from distillery.lm.pipeline import LMPipeline
    from distillery.lm.quickstart import lm_quickstart

    spec = load_spec(LM_SPEC, [*LM_TINY, f"store={tmp_path / 'store'}"])
    summary = lm_quickstart(LMPipeline(spec), str(tmp_path / "out"))

    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert summary["teacher"]["params"] > summary["student"]["params"] \
        == summary["baseline"]["params"]
    assert summary["teacher"]["agreement_with_teacher"] == 1.0
    for role in ("teacher", "student", "baseline"):
        assert 1.0 < summary[role]["val_perplexity"] < 320  # better than uniform, after 1 epoch
        assert summary[role]["tokens_per_s_forward"] > 0
    cache = summary["cache"]
    assert cache["k"] == 8 and cache["bytes_per_token_uncompressed"] == 8 * 6 + 4
    report = tmp_path / "store" / summary["report"].rsplit("/store/", 1)[1]
    assert {"report.md", "report.json"} <= {p.name for p in report.iterdir()}
    out = capsys.readouterr().out
    assert "x smaller" in out and "top-k cache: k=8" in out

    pipeline = LMPipeline(spec)
    pipeline.ensure_teacher()
    assert pipeline.teacher_infer()["key"] == cache["key"]
    out = capsys.readouterr().out
    assert "teacher-infer: reusing" in out
    assert "training a 320-token" not in out and "data: packed" not in out

    # another teacher section: the stored teacher is not silently reused
    changed = LMPipeline(load_spec(LM_SPEC, [*LM_TINY, f"store={tmp_path / 'store'}",
                                             "teacher.train.epochs=2"]))
    with pytest.raises(FileNotFoundError, match="^teacher: the stored 'gpt2-teacher' was made "
                                                "from another teacher section or other data"):
        changed.teacher_parts()
