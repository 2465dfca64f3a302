"""Every generated bad-input corpus through the commands a user runs (issue 11): the outcome of
each file is asserted. A folder with any mix of bad files gives output for every good file,
one line per bad file and exit status 1; a bad checkpoint stops the run at once with one
line naming it (exit 2); no traceback reaches the user. The runner also prints the table of
the issue's closing note (``tests/bad_corpus_run.py``)."""

from __future__ import annotations

import warnings
from pathlib import Path

from bad_corpus_run import run_checkpoints, run_datasets, run_predict, run_train, table
from bad_inputs import EXPECTED_WARNINGS


def test_image_corpus_through_predict(tmp_path: Path) -> None:
    run, expected = run_predict(tmp_path)
    assert run.rc == 1 and "Traceback" not in run.err
    for name, problem in expected.items():
        outcome = run.outcomes[name]
        if problem is None:
            assert outcome.startswith("ok: mask + overlay"), (name, outcome)
            assert ("warning" in outcome) == (name in EXPECTED_WARNINGS), (name, outcome)
        else:
            assert outcome.startswith("error: ") and problem in outcome, (name, outcome)
    n_bad = sum(p is not None for p in expected.values())
    assert len([ln for ln in run.err.splitlines() if ": error: " in ln]) == n_bad
    assert f"{n_bad} failed:\n" in run.out and "more (see the errors above)" in run.out


def test_checkpoint_corpus_through_predict_and_eval(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line for the user
        runs, expected = run_checkpoints(tmp_path)
    assert len(runs) == 2 * len(expected)
    for run in runs:
        ((name, outcome),) = run.outcomes.items()
        assert run.rc == 2, (run.command, name, run.err)
        assert expected[name] in outcome and name in outcome, (run.command, name, outcome)
        assert "weights_only=False" not in outcome.replace("weights_only=False);", "")
        assert "will likely succeed" not in run.err and "Traceback" not in run.err
        assert len([ln for ln in run.err.splitlines() if ln.strip()]) == 1


def test_dataset_corpus_through_data_check_and_eval(tmp_path: Path) -> None:
    runs, expected = run_datasets(tmp_path)
    by_command = {r.command: r for r in runs}
    for command in ("data check", "eval"):
        run = by_command[command]
        assert run.rc == 1 and "Traceback" not in run.err
        for name, outcome in run.outcomes.items():
            if name in expected:
                assert outcome.startswith("error: ") and expected[name] in outcome, (name, outcome)
            else:
                assert name.startswith("good_") and outcome.startswith("ok: "), (name, outcome)
        assert sum(o.startswith("ok: ") for o in run.outcomes.values()) == 7
    strict, lenient = (
        by_command["eval --palette-check error"],
        by_command["eval --palette-check off"],
    )
    assert strict.rc == 2  # every training mask refused: nothing could be scored
    assert all(o.startswith("error: ") for o in strict.outcomes.values())
    assert lenient.rc == 1
    assert lenient.outcomes == {
        "cvat_000001.png": "ok: scored",
        "cvat_000002.png": "ok: scored",
        "cvat_size.png": f"error: {lenient.outcomes['cvat_size.png'][7:]}",
    }
    assert expected["cvat_size.png"] in lenient.outcomes["cvat_size.png"]
    assert "| `good_bilevel.png` | `atrous data check` | 1 | ok: loaded |" in table(runs)


def test_dataset_corpus_through_train(tmp_path: Path) -> None:
    run, expected = run_train(tmp_path)
    assert run.rc == 1 and "Traceback" not in run.err + run.out
    bad = {k: v for k, v in expected.items() if k.startswith("bad_")}
    for name, outcome in run.outcomes.items():
        if name in bad:
            assert outcome.startswith("skipped (in summary.json): "), (name, outcome)
            assert bad[name] in outcome, (name, outcome)
        else:
            assert name.startswith("good_") and outcome == "ok: trained on", (name, outcome)
    assert set(bad) <= set(run.outcomes)
    assert f"{len(bad)} bad sample(s) skipped" in run.out
    assert "model.safetensors" in run.out.splitlines()[-1]
