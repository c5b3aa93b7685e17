"""The `distillery` CLI's refusals before any Ray work: in this process, but one as a user runs
it, in a fresh process that must print one line and no traceback. (A distill killed mid-run
and resumed with --resume, in subprocesses, is in tests/test_stage_faults.py.)"""

import pytest

from helpers import REFERENCE_SPEC, sets, tiny_overrides


def snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("override, field", [
    ("distill.temperature=-1", "distill.temperature"),
    ("distill.bogus=1", "distill.bogus"),
    ("teacher.model.arch=torchscript", "teacher.model.path"),
])
def test_bad_spec_exits_with_one_line_and_touches_nothing(cli_inprocess, store_copy, override,
                                                          field):
    before = snapshot(store_copy)
    result = cli_inprocess("distill", "--config", str(REFERENCE_SPEC),
                           *sets(tiny_overrides(store_copy, override)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(store_copy) == before


def test_missing_data_file_is_named(cli, store_copy):
    """In a fresh process, as a user runs it: the one line and nothing else on stderr."""
    result = cli("teacher-infer", "--config", str(REFERENCE_SPEC), *sets(tiny_overrides(
        store_copy, "data={source: parquet, path: /no/such.parquet, features: [a], label: y}",
        "evaluate={}")),
        timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: data.path: file not found: /no/such.parquet"


def test_resume_without_an_unfinished_run_says_so(cli_inprocess, store_copy):
    result = cli_inprocess("distill", "--resume", "--config", str(REFERENCE_SPEC),
                           *sets(tiny_overrides(store_copy)))
    assert result.returncode == 2
    assert "no unfinished distill run" in result.stderr
    result = cli_inprocess("distill", "--resume", "mnist1d-20990101-000000-abcd", "--config",
                           str(REFERENCE_SPEC), *sets(tiny_overrides(store_copy)))
    assert result.returncode == 2
    assert "no unfinished distill run mnist1d-20990101-000000-abcd" in result.stderr


def test_every_command_has_a_classifier_handler():
    """A command of the parser missing from the table would be refused as if for an LM spec."""
    from distillery.cli import HANDLERS, build_parser
    from distillery.config import PipelineSpec

    (commands,) = [a.choices for a in build_parser()._actions if a.dest == "command"]
    assert set(commands) == {name for kind, name in HANDLERS if kind is PipelineSpec}


@pytest.mark.parametrize("command", ["train-teacher", "quickstart"])
def test_a_store_that_cannot_be_written_is_one_line_before_any_ray_work(cli_inprocess, tmp_path,
                                                                         command):
    """A store under a regular file, or where no directory can be made (/proc): refused
    before Ray starts (cli_inprocess fails a call that reaches it), naming the path."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for store, reason in ((blocker / "store", "Not a directory"),
                          ("/proc/distillery-store", "No such file or directory")):
        result = cli_inprocess(command, "--config", str(REFERENCE_SPEC),
                               *sets(tiny_overrides(store)))
        assert result.returncode == 2
        assert result.stderr == f"error: store {store}: cannot be written ({reason})\n"


def test_a_writable_store_is_created_and_left_without_a_trace(tmp_path):
    from distillery.storage import check_reachable

    check_reachable(str(tmp_path / "new" / "store"))
    assert list((tmp_path / "new" / "store").iterdir()) == []
