"""``oncodiff demo``: the whole pipeline on a built-in synthetic cohort, in one folder.

    OUT/cohort/       `oncodiff synth` (reused when it is already there)
    OUT/run/          `oncodiff train` with the demo preset (reused when it finished before)
    OUT/predictions/  `oncodiff predict` for a few test patients: outcome unknown (class marginalised),
                      and "what if" they respond / do not respond (counterfactuals)
    OUT/evaluation/   `oncodiff evaluate` (summary.json, tables.md) and `oncodiff report` (report.html)

Each step line gives the wall time and the CPU time so far (all threads), so a timing taken on a shared machine
can still be read. It ends with the report's path and the `oncodiff view` command that opens the predictions.
"""

from __future__ import annotations

import resource
import shlex
import time
from pathlib import Path

from oncodiff.cohort.schema import COHORT_YAML
from oncodiff.config import Config
from oncodiff.errors import CohortError
from oncodiff.runs import RunFolder

PREDICTED_PATIENTS = 2


def run_demo(out: str | Path, site: str, n_patients: int, config: Config, seed: int = 0) -> Path:
    """Run synth, validate, train, predict, evaluate and report under ``out``; returns report.html."""
    from oncodiff.cohort import validate_cohort
    from oncodiff.evaluation import evaluate, write_report
    from oncodiff.evaluation.baselines import ensure_baseline
    from oncodiff.pipeline import predict
    from oncodiff.pipeline.export import read_export_meta
    from oncodiff.training import train

    out = Path(out).resolve()
    start = time.monotonic()
    cohort = _cohort(out / "cohort", site, n_patients, config.data.dims, seed)
    _step(start, f"validating {cohort}")
    problems = validate_cohort(cohort)
    if problems:
        raise CohortError(problems, str(cohort))
    run = out / "run"
    if RunFolder(run).weights.is_file():
        _step(start, f"reusing the trained model in {run} (delete it to train again)")
    else:
        _step(start, f"training ({config.training.max_minutes} min budget) into {run}")
        resume = RunFolder(run).last_checkpoint.is_file()
        # A run stopped before its first checkpoint cannot be resumed: start it again (it is the demo's own).
        train(cohort, config, run, resume=resume, overwrite=not resume and RunFolder(run).config_json.is_file())
    test = _test_patients(run)[:PREDICTED_PATIENTS]
    _step(start, f"predicting {', '.join(test)}: outcome unknown, then as responders and as non-responders")
    again = {"patients": test, "overwrite": True}  # a demo run again replaces its own predictions
    predict(run, cohort, out / "predictions" / "outcome-unknown", **again)
    predict(run, cohort, out / "predictions" / "if-responder", overrides=[f"response={_positive(cohort)}"], **again)
    predict(run, cohort, out / "predictions" / "if-non-responder", overrides=["response=non-responder"], **again)
    trained = Config.model_validate(read_export_meta(run)["config"])  # a reused model keeps its own settings
    for name in trained.evaluation.baselines:  # evaluate would train them; a step of their own shows their cost
        _step(start, f"training the baseline {name!r} with the same budget")
        ensure_baseline(run, cohort, trained, name, trained.evaluation.baseline_minutes)
    _step(start, "evaluating against ground truth and baselines")
    summary = evaluate(run, cohort, out / "evaluation", overwrite=True)  # a demo run again replaces its own outputs
    report = write_report(summary.parent)
    _step(start, f"done: {report}")
    print("to look at the predictions and ask what-if questions:\n  "
          + shlex.join(["oncodiff", "view", "--model", str(run), "--predictions",
                        str(out / "predictions" / "outcome-unknown")]), flush=True)
    return report


def _cohort(path: Path, site: str, n_patients: int, dims: int, seed: int) -> Path:
    from oncodiff.synth import synthesize

    if (path / COHORT_YAML).is_file():
        return path
    print(f"writing a synthetic {site} cohort of {n_patients} patients ({dims}D) to {path}", flush=True)
    return synthesize(site=site, n_patients=n_patients, dims=dims, seed=seed, out=path)


def _test_patients(run: Path) -> list[str]:
    return list(RunFolder(run).splits().test)


def _positive(cohort: Path) -> str:
    import yaml

    spec = yaml.safe_load((cohort / COHORT_YAML).read_text(encoding="utf-8"))
    return spec["outcomes"]["response"]["positive"]


def _step(start: float, message: str) -> None:
    cpu = sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN))) / 60
    print(f"[demo {(time.monotonic() - start) / 60:5.1f} min, CPU {cpu:5.1f} min] {message}", flush=True)
