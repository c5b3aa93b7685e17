"""bench/soak.py: its acceptance quantities on hand-made numbers, and a --smoke run end to end on
the session's local Ray (real Ray Serve, real HTTP, a real rollout moving underneath)."""

from __future__ import annotations

import pytest

from helpers import load_bench, smoke_bench


def test_verdicts_are_failures_p99_ratio_and_largest_rss_change():
    bench = load_bench("soak")
    rss = {"student#a": {"start": 100, "end": 104}, "Router#b": {"start": 200, "end": 180}}
    assert bench.verdicts(4.0, {"errors": 0, "p99_ms": 6.0}, rss) == {
        "errors": 0, "p99_vs_unloaded": 1.5, "rss_growth": 0.1}
    # the per-bucket change keeps its sign; a replica that is gone is -100%
    assert bench.largest_change({"a": 100, "b": 200}, {"a": 104, "b": 180}) == -0.1
    assert bench.largest_change({"a": 100, "b": 200}, {"a": 104}) == -1.0


def test_a_varied_soak_needs_its_own_output_and_the_default_plane_its_own_ray(monkeypatch,
                                                                              capsys):
    bench = load_bench("soak")
    for argv in (["--load", "0.4"], ["--set", "serve.router_cpus=1"], ["--minutes", "2"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert "give --output" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(SystemExit):
        bench.main([])
    assert "unset RAY_ADDRESS" in capsys.readouterr().err


def test_smoke_soak_answers_every_request_and_samples_every_replica(store_copy, local_ray,
                                                                      tmp_path):
    # --set applies after the soak's own settings; the session's Ray runs Serve's proxy
    result = smoke_bench("soak", store_copy, tmp_path, "--proxy-dataplane", "--set",
                         "serve.router_cpus=0.5")
    assert [b["errors"] for b in result["runs"]] == [0, 0], [
        b["first_error"] for b in result["runs"]]
    assert result["summary"]["soak"]["answered"] == int(result["inputs"]["rate"] * 4)
    # the router holds both models; the coordinator holds the rollout
    assert {name.split("#")[0] for name in result["rss"]} == {"Router", "RolloutCoordinator"}
    assert len(result["rss"]) == 2 and all(m["end"] > 0 for m in result["rss"].values())
    assert result["inputs"]["overrides"] == ["serve.router_cpus=0.5"]
    assert result["inputs"]["sizing"] == ("one router replica of 0.5 CPU holding teacher and "
                                          "student")
    assert all(set(b["rss"]) == set(result["rss"]) and b["rss_change"] is not None
               for b in result["runs"])  # every bucket samples every replica
    assert set(result["ratios"]) == {"errors", "p99_vs_unloaded", "rss_growth"}
