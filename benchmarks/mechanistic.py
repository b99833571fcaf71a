"""The mechanistic forecast against post = pre and the denoised identity, on a run's test split, without sampling.

    python -m benchmarks.mechanistic --run RUN --cohort COHORT [--cache-dir DIR]

Fits the mechanistic forecast (oncodiff.data.mechanistic) on RUN's training split exactly as
``oncodiff evaluate`` does (``evaluation.baselines.mechanistic_predictions``), and prints the in-tumour MAE of
identity, the denoised identity, the forecast with the outcome unknown and given the true class on RUN's test
split, with the fit's CPU time and parameters. Only RUN's export (model/) is read, for its preprocessing: the
denoiser is not used, so a run stopped after its export (or trained for one step) serves. ``oncodiff evaluate``
gives the same rows beside the diffusion model and the trained baselines, with paired intervals.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from oncodiff.data.denoise import choose_smoothing
from oncodiff.evaluation.baselines import mechanistic_predictions
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.runs import RunFolder


def in_tumour_mae(prediction: np.ndarray, post: np.ndarray, tumour: np.ndarray) -> tuple[float, int]:
    """Mean over cases with tumour voxels of each case's in-tumour MAE (as evaluate's mae_tumor), and that count."""
    errors = [np.abs(prediction[i] - post[i])[tumour[i]].mean() for i in range(len(post)) if tumour[i].any()]
    return float(np.mean(errors)), len(errors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    exported, splits = load_export(args.run), RunFolder(args.run).splits()
    cases = load_cases(exported, args.cohort, patients=list(splits.test), cache_dir=args.cache_dir)
    cases = cases.select([i for i, c in enumerate(cases.cases) if c.has_truth])
    started = time.process_time()
    forecast, given, fit = mechanistic_predictions(exported, args.cohort, list(splits.train), cases, args.cache_dir)
    seconds = time.process_time() - started
    train = load_cases(exported, args.cohort, patients=list(splits.train), cache_dir=args.cache_dir)
    index, _ = choose_smoothing(train.batch["pre_smoothed"].numpy(), train.batch["post"].numpy(),
                                train.batch["tumor_mask"].numpy())
    post = cases.batch["post"][:, 0].numpy()
    tumour = cases.batch["tumor_mask"][:, 0].numpy() > 0
    rows = {"identity (post = pre)": cases.batch["pre_raw"][:, 0].numpy(),
            "denoised identity": cases.batch["pre_smoothed"][:, index].numpy(),
            "mechanistic, outcome unknown": forecast.mean,
            "mechanistic, true class (oracle)": None if given is None else given.mean}
    print(f"\n{len(post)} test cases of shape {post.shape[1:]} from {len(set(cases.batch['patient_id']))} test "
          f"patients; fitted on {fit['fitted_on']} in {seconds:.0f} CPU-seconds (loading included)\n")
    denoised = in_tumour_mae(rows["denoised identity"], post, tumour)[0]
    print("| method | in-tumour MAE | vs denoised |\n|---|---|---|")
    for name, prediction in rows.items():
        if prediction is not None:
            mae, n = in_tumour_mae(prediction, post, tumour)
            print(f"| {name} | {mae:.4f} ({n} cases) | {mae / denoised:.2f}x |")
    print(f"\noutcome unknown: {fit['outcome_unknown']}")
    for k, p in fit["per_class"].items():
        print(f"{fit['class_key']} = {k}: {p}")


if __name__ == "__main__":
    main()
