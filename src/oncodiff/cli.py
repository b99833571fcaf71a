"""The ``oncodiff`` command: thin Typer verbs over importable functions.

Heavy modules (torch, MONAI) are imported inside each verb so that ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from oncodiff.errors import OncodiffError

app = typer.Typer(
    help="Predict post-treatment tumour scans with conditional diffusion models, and evaluate them honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Site(str, Enum):
    brain = "brain"
    lung = "lung"
    breast = "breast"
    glioma = "glioma"


class Acquisition(str, Enum):
    ideal = "ideal"
    clinical = "clinical"


PRESET_HELP = "preset name (see `oncodiff presets`) or a YAML path"
SET_HELP = "override a config key, e.g. --set training.max_minutes=2 (repeatable)"
VERBOSE_HELP = "also print the training framework's (Lightning's) own messages and warnings"
WORKERS_HELP = ("lesions preprocessed at once, in separate processes (default: every core this process may use); "
                "the cache is the same for any number. Shortcut for --set data.preprocess_workers=N")
SCHEDULER_HELP = ("preprocess on a Dask cluster: its scheduler address, e.g. tcp://10.0.0.5:8786 (needs "
                  "oncodiff's cluster extra, i.e. Dask's distributed package). "
                  "Shortcut for --set data.scheduler=ADDRESS")


def _parallel_overrides(workers: int | None, scheduler: str | None) -> list[str]:
    return ([f"data.preprocess_workers={workers}"] if workers else []) + \
        ([f"data.scheduler={scheduler}"] if scheduler else [])


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OncodiffError as e:
        _fail(e)
    except OSError as e:  # the file system refused (disk full, permissions, a path too long): no traceback
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}; check the path, its permissions and the free disk space")


def _config(preset: str, overrides: list[str] | None):
    from oncodiff.config import load_config

    return _run(load_config, preset, overrides or [])


@app.command()
def presets() -> None:
    """List the presets that ship with oncodiff, and each paper's chain of them (docs/presets.md)."""
    from oncodiff.config import preset_names, preset_path
    from oncodiff.presets.papers import PAPERS

    for name in preset_names():
        first = preset_path(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        typer.echo(f"{name:14s} {first}")
    typer.echo("\npapers (each chain's presets in the order they run; `oncodiff train --preset NAME`):")
    for paper in PAPERS:
        typer.echo(f"{paper.name} ({paper.citation.short()}): {paper.site}, {paper.dims}D")
        for chain in paper.chains().values():
            typer.echo("  " + " -> ".join(stage.preset for stage in chain))


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="new cohort folder to write"),
    site: Site = typer.Option(Site.brain, help="anatomy and treatment to simulate"),
    patients: int = typer.Option(48, min=1, help="number of patients"),
    dims: int = typer.Option(2, min=2, max=3, help="2 for slices, 3 for volumes"),
    seed: int = typer.Option(0, help="random seed; the same seed gives identical files"),
    overwrite: bool = typer.Option(False, help="replace OUT if it holds a cohort `oncodiff synth` wrote "
                                   "(docs/outputs.md)"),
    misalign_mm: float = typer.Option(0.0, min=0.0, help="shift each follow-up rigidly by this many mm (tests registration)"),
    workers: int = typer.Option(1, min=1, help="patients simulated in parallel processes (files do not depend on it)"),
    untreated: bool = typer.Option(False, help="natural growth without treatment (a pre-training cohort)"),
    acquisition: Acquisition = typer.Option(
        Acquisition.ideal, help="ideal: aligned scans on one grid and scale; clinical: as a clinic acquires them "
        "(motion, thick slices, gain/offset, bias field, noise, missing clinical values; docs/synthetic-cohorts.md)"),
    sequences: Optional[str] = typer.Option(None, help="MRI sequences, comma-separated, the primary first (brain: "
                                            "t1c,t1,t2,flair): writes cohort format 2 with tumour label maps"),
    interim: Optional[list[str]] = typer.Option(None, help="days of scans during treatment, e.g. --interim 28 or "
                                                "--interim 21,35 (labelled day21, day35)"),
) -> None:
    """Write a synthetic longitudinal cohort with ground truth and counterfactuals (docs/synthetic-cohorts.md)."""
    from oncodiff.synth import synthesize

    names = tuple(s.strip() for s in (sequences or "").split(",") if s.strip())
    try:
        days = tuple(int(d) for text in interim or () for d in text.split(",") if d.strip())
    except ValueError:
        raise typer.BadParameter(f"--interim takes whole days, e.g. 28 or 21,35; got {interim}") from None
    path = _run(synthesize, site=site.value, n_patients=patients, dims=dims, seed=seed, out=out, overwrite=overwrite,
                misalign_mm=misalign_mm, workers=workers, treated=not untreated, acquisition=acquisition.value,
                sequences=names, interim=days)
    typer.echo(f"wrote {path}")


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="cohort folder (cohort.yaml, patients.csv, scans.csv)"),
    check_alignment: bool = typer.Option(True, help="warn about follow-ups misaligned to their baseline (a coarse "
                                         "rigid fit per follow-up)"),
    allow_external: bool = typer.Option(False, "--allow-external", help="accept files that symbolic links in the "
                                        "cohort lead to outside it (a warning, not a problem; docs/dataset-format.md)"),
    details: bool = typer.Option(False, "--details", help="list each misaligned follow-up, not only the count"),
) -> None:
    """Check a cohort folder and report every problem at once. Exit code 0 means valid."""
    from oncodiff.cohort import validate_cohort

    found = _run(validate_cohort, cohort, warnings=True, allow_external=allow_external or None)
    problems = [p for p in found if not p.warning]
    for warning in (p for p in found if p.warning):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if problems:
        typer.secho(f"{cohort}: {len(problems)} problem(s)", fg=typer.colors.RED, err=True)
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(code=1)
    typer.secho(f"{cohort}: valid", fg=typer.colors.GREEN)
    if check_alignment:
        from oncodiff.data.registration import misalignment_report

        summary, lines = _run(misalignment_report, cohort)
        if summary:
            typer.secho(f"warning: {summary}", fg=typer.colors.YELLOW, err=True)
        for line in lines if details else ():
            typer.echo(f"  - {line}", err=True)


class ImportLayout(str, Enum):
    lumiere = "lumiere"
    sailor = "sailor"
    brats_post = "brats-post"
    bids = "bids"


@app.command("import")
def import_(
    layout: ImportLayout = typer.Argument(..., help="how SRC is laid out (docs/dataset-format.md, \"Importing a "
                                          "published layout\")"),
    src: Path = typer.Argument(..., help="the folder the published data was unpacked into; only read"),
    out: Path = typer.Option(..., "--out", help="new cohort folder to write (tables only: images stay in SRC)"),
    space: str = typer.Option("native", help="native: the scanner's grids; atlas: LUMIERE's registered files"),
    segmentation: Optional[str] = typer.Option(
        None, help="whose tumour segmentation: LUMIERE deepbratumia (default) or hd-glio; BIDS a derivatives "
        "folder name (default the first with a _dseg)"),
    days: Optional[Path] = typer.Option(None, help="brats-post: a CSV (patient_id, timepoint, days) with the "
                                        "real days of each time point"),
    interval_days: float = typer.Option(90.0, min=0.0, help="brats-post without --days: days between time points"),
    overwrite: bool = typer.Option(False, help="replace OUT if it holds a cohort oncodiff wrote (docs/outputs.md)"),
) -> None:
    """Turn a published layout (LUMIERE, SAILOR, BraTS 2024 post-treatment, BIDS) into a cohort folder, without
    copying images; prints what it skipped and why."""
    from oncodiff.importers import import_cohort

    result = _run(import_cohort, layout.value, src, out, space=space, segmentation=segmentation,
                  overwrite=overwrite, days_table=days, interval_days=interval_days)
    typer.echo(str(result))


@app.command()
def preprocess(
    cohort: Path = typer.Argument(..., help="cohort folder"),
    preset: str = typer.Option("demo", help=PRESET_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    cache_dir: Optional[Path] = typer.Option(None, help="cache folder (default ~/.cache/oncodiff)"),
    workers: Optional[int] = typer.Option(None, min=1, help=WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """Validate, then orient, resample, normalise, register and crop a cohort into the cache."""
    from oncodiff.data import preprocess_cohort

    config = _config(preset, [*(set_ or []), *_parallel_overrides(workers, scheduler)])
    result = _run(preprocess_cohort, cohort, config.data, cache_dir=cache_dir)
    typer.echo(str(result))


@app.command()
def train(
    cohort: Path = typer.Option(..., help="cohort folder"),
    out: Path = typer.Option(..., help="run folder to create (or resume)"),
    preset: str = typer.Option("demo", help=PRESET_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    stage: Optional[str] = typer.Option(None, help="shortcut for --set training.stage=STAGE"),
    init_from: Optional[Path] = typer.Option(None, help="run folder of a pre-trained stage to start from"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoints/last.ckpt"),
    overwrite: bool = typer.Option(False, help="start the run in OUT again from scratch (docs/outputs.md)"),
    devices: Optional[str] = typer.Option(None, help="devices per node (Lightning), e.g. 2 or auto"),
    num_nodes: Optional[int] = typer.Option(None, help="nodes for DDP (Lightning)"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
    workers: Optional[int] = typer.Option(None, min=1, help=WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """Train a model on a cohort; writes config.json, splits.json, checkpoints, metrics.csv and model/ (the export)."""
    from oncodiff.training import train as train_fn
    from oncodiff.training.console import quiet_framework

    quiet_framework(verbose)

    extra = [*(set_ or []), *_parallel_overrides(workers, scheduler)]
    if stage:
        extra.append(f"training.stage={stage}")
    if init_from:
        extra.append(f"training.init_from={init_from}")
    if devices:
        extra.append(f"training.devices={devices}")
    if num_nodes:
        extra.append(f"training.num_nodes={num_nodes}")
    config = _config(preset, extra)
    run_dir = _run(train_fn, cohort=cohort, config=config, out=out, resume=resume, overwrite=overwrite)
    typer.echo(f"run folder: {run_dir}")


@app.command()
def predict(
    model: Path = typer.Option(..., help="run folder (or a folder with model.safetensors + config.json)"),
    cohort: Path = typer.Option(..., help="cohort folder with the pre-treatment scans"),
    out: Path = typer.Option(..., help="output folder"),
    patient: Optional[list[str]] = typer.Option(None, help="patient id(s); default: the run's test split"),
    samples: Optional[int] = typer.Option(None, min=1, help="samples per case (default: the run's config)"),
    days: Optional[float] = typer.Option(None, help="days since baseline to predict, from every scan of the lesion "
                                         "before that day (default: each follow-up's)"),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="sampling.KEY=V, clinical.VAR=V or response=V (counterfactual)"
    ),
    seed: int = typer.Option(0, help="base seed; each case has its own generator"),
    overwrite: bool = typer.Option(False, help="replace an earlier prediction in OUT (docs/outputs.md)"),
) -> None:
    """Sample post-treatment scans: mean, uncertainty, drift, volume change and response per case.

    summary.json: 50 % and 90 % sample intervals of the volume change, and conformally calibrated ones.
    """
    from oncodiff.pipeline import predict as predict_fn

    path = _run(predict_fn, model=model, cohort=cohort, out=out, patients=patient, samples=samples,
                days=days, overrides=set_ or [], seed=seed, overwrite=overwrite)
    typer.echo(f"predictions: {path}")


@app.command()
def calibrate(
    model: Path = typer.Option(..., help="run folder"),
    cohort: Path = typer.Option(..., help="cohort folder the run was trained on (its validation patients)"),
    samples: Optional[int] = typer.Option(None, min=1, help="samples per case (default: the run's config)"),
    seed: int = typer.Option(0, help="base seed; each case has its own generator"),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="sampling.KEY=V, as predict will sample (e.g. sampling.unknown_class=most_probable)"
    ),
) -> None:
    """Refit the samples' spread factor and the conformal margins of the volume-change intervals on the run's
    validation split (with the out-of-fold predictions of the calibration folds that training fitted when that
    split is too small).

    Training does this once with the run's sample count and sampling settings; run it again before predicting
    with another --samples or sampling.unknown_class, or for a run trained with sampling.calibrate=false.
    """
    import json

    from oncodiff.pipeline import calibrate_run

    result = _run(calibrate_run, model, cohort, samples=samples, seed=seed, overrides=set_ or [])
    typer.echo(json.dumps(result))


@app.command()
def evaluate(
    model: Path = typer.Option(..., help="run folder"),
    cohort: Path = typer.Option(..., help="cohort folder with ground-truth follow-ups"),
    out: Path = typer.Option(..., help="evaluation folder (summary.json, tables)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="evaluation.KEY=V or sampling.KEY=V"),
    overwrite: bool = typer.Option(False, help="replace an earlier evaluation in OUT (docs/outputs.md)"),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Evaluate a run against ground truth and baselines on its test split; prints the side-by-side table."""
    from oncodiff.evaluation import evaluate as evaluate_fn
    from oncodiff.training.console import quiet_framework

    quiet_framework(verbose)

    path = _run(evaluate_fn, model=model, cohort=cohort, out=out, overrides=set_ or [], overwrite=overwrite)
    typer.echo(f"summary: {path}")


@app.command()
def report(
    evaluation: Path = typer.Argument(..., help="folder written by `oncodiff evaluate`"),
    out: Optional[Path] = typer.Option(None, help="HTML file, new or an earlier report "
                                       "(default EVALUATION/report.html)"),
) -> None:
    """Render an evaluation as one self-contained HTML page with figures."""
    from oncodiff.evaluation import write_report

    path = _run(write_report, evaluation, out)
    typer.echo(f"report: {path}")


@app.command()
def view(
    model: Path = typer.Option(..., help="run folder (or a folder with model.safetensors + config.json)"),
    cohort: Optional[Path] = typer.Option(None, help="cohort folder (default: the one --predictions was made from)"),
    predictions: Optional[Path] = typer.Option(None, help="an `oncodiff predict` output folder to show"),
    cache: Optional[Path] = typer.Option(None, help="where what-if results go (default PREDICTIONS/view-cache, "
                                                    "else RUN/view-cache; never inside the cohort)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback needs --allow-remote"),
    port: int = typer.Option(8765, min=1, max=65535, help="port to listen on"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="let a --host beyond loopback be used: other "
                                      "machines can then reach the viewer (its token still guards it)"),
    no_token: bool = typer.Option(False, "--no-token", help="serve without the access token (not advised: any "
                                  "local program or web page that reaches the port can read the scans)"),
    cache_limit: int = typer.Option(200, min=8, help="what-if predictions kept in the cache; the least recently "
                                    "used go first"),
) -> None:
    """Open a local web app: patients, slice viewer, what-if predictions and NIfTI export (docs/viewer.md)."""
    from oncodiff.view import ViewerFolders, serve

    folders = _run(ViewerFolders.choose, model, cohort, predictions, cache)
    _run(serve, folders, host, port, token=not no_token, allow_remote=allow_remote, cache_limit=cache_limit)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), help="folder for the cohort, run, predictions and report"),
    site: Site = typer.Option(Site.brain, help="synthetic site"),
    patients: int = typer.Option(64, min=8, help="synthetic patients"),
    preset: str = typer.Option("demo", help=PRESET_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """The whole pipeline on a built-in synthetic cohort: synth, validate, train, predict, evaluate, report."""
    from oncodiff.demo import run_demo
    from oncodiff.training.console import quiet_framework

    quiet_framework(verbose)

    config = _config(preset, set_)
    path = _run(run_demo, out=out, site=site.value, n_patients=patients, config=config)
    typer.echo(f"demo finished: open {path}")


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
