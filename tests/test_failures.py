"""The one failure policy: report each bad item once, skip it, summarize, exit 0/1/2."""

from __future__ import annotations

import pytest

from atrous.cli import main
from atrous.failures import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    BadSamples,
    FailFast,
    FailureLog,
    TrainingError,
)


def test_failure_log_reports_once_and_summarizes():
    lines: list[str] = []
    log = FailureLog("predict", report=lines.append)
    assert log.exit_status == EXIT_OK and "0 failed" in log.summary(3, "image")
    log.add("a.png", "not an image file")
    log.add("a.png", "not an image file")
    log.add("b.png", "truncated")
    assert lines == [
        "atrous predict: error: a.png: not an image file",
        "atrous predict: error: b.png: truncated",
    ]
    assert log.exit_status == EXIT_ITEMS_FAILED and len(log) == 2
    assert log.summary(3, "image") == (
        "atrous predict: 5 image(s): 3 done, 2 failed:\n"
        "  a.png: not an image file\n"
        "  b.png: truncated"
    )
    assert log.to_list()[1] == {"item": "b.png", "problem": "truncated"}
    with pytest.raises(FailFast, match=r"c\.png: bad"):
        FailureLog("eval", fail_fast=True, report=lines.append).add("c.png", "bad")


def test_a_long_failure_summary_lists_a_few_one_per_line():
    log = FailureLog("predict", report=lambda line: None)
    for i in range(12):
        log.add(f"photos/img_{i:02d}.png", "not an image file (its first bytes are text)")
    lines = log.summary(3, "input", done_as="segmented into out").splitlines()
    assert lines[0] == "atrous predict: 15 input(s): 3 segmented into out, 12 failed:"
    assert lines[1:4] == [
        f"  photos/img_{i:02d}.png: not an image file (its first bytes are text)" for i in range(3)
    ]
    assert lines[4] == "  ... and 9 more (see the errors above)"
    assert len(lines) == 5
    more = log.summary(3, "input", listed_in="out/metrics.json").splitlines()[-1]
    assert more == "  ... and 9 more (see out/metrics.json)"
    skips = log.summary(3, "input", done_as="done", skipped=5, skipped_as="already there")
    assert skips.splitlines()[0] == (
        "atrous predict: 20 input(s): 3 done, 5 already there, 12 failed:"
    )
    assert FailureLog("predict").summary(2, skipped=0) == (
        "atrous predict: 2 item(s): 2 done, 0 skipped, 0 failed"
    )


def test_bad_training_samples_are_reported_once_or_stop_the_run():
    from atrous.data import SkipReport

    lines: list[str] = []
    bad = BadSamples("skip", SkipReport(), report=lines.append)
    bad.met([("a.png", "truncated"), ("a.png", "truncated"), ("b.png", "bad mask")])
    assert lines == [
        "atrous train: skipped a.png: truncated",
        "atrous train: skipped b.png: bad mask",
    ]
    assert bad.summary("run/summary.json") == (
        "atrous train: 2 bad sample(s) skipped (all in run/summary.json): "
        "a.png: truncated; b.png: bad mask"
    )
    assert BadSamples("skip", SkipReport()).summary() == ""
    with pytest.raises(TrainingError, match=r"c\.png: unreadable; training stopped \(on_error"):
        BadSamples("raise", SkipReport(), report=lines.append).met([("c.png", "unreadable")])
    assert len(lines) == 2  # a stopping sample is not reported as skipped


def test_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
    import atrous.cli.models_cmd as models_cmd

    def boom(args):
        raise RuntimeError("deep inside torch")

    monkeypatch.setattr(models_cmd, "run", boom)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: deep inside torch" in err and "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError):
        main(["models", "--debug"])
