"""Tables of an evaluation summary: every method side by side, mean ± std over cases.

Each table is built once (:func:`summary_tables`: titles, headers, formatted cells, notes) and
rendered twice: as markdown for ``tables.md`` (:func:`format_tables`) and as HTML for the report
(:func:`to_html`). A section with nothing to tabulate keeps its title and says why in its notes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from oncodiff.evaluation.paired import MIN_PATIENTS

IMAGE_COLUMNS = (("ssim_tumor", "SSIM tumour"), ("psnr_tumor", "PSNR tumour (dB)"), ("mae_tumor", "MAE tumour"),
                 ("ssim_bbox", "SSIM box"), ("psnr_bbox", "PSNR box (dB)"), ("ssim", "SSIM image"),
                 ("psnr", "PSNR image (dB)"), ("mae", "MAE image"))
SIZE_COLUMNS = (("change_mae_pp", "Δvol MAE (pp)"), ("change_bias_pp", "bias (pp)"), ("pearson_r", "Pearson r"),
                ("response_agreement", "response agreement"))
RESPONSE_COLUMNS = (("balanced_accuracy", "balanced accuracy"), ("f1", "F1"), ("precision", "precision"),
                    ("recall", "recall"), ("auc", "AUC"))


@dataclass(frozen=True)
class Table:
    """One section of the tables: ``key`` names it (``image``, ``size``, ``uncertainty``,
    ``counterfactual``, ``class_prior``, ``mechanistic``, ``proper_scores``, ``spread``, ``paired``, ``distribution``, ``response``,
    ``survival``), ``rows`` hold formatted cells
    under ``header``; a row whose cells after the second are all empty is a status line. ``notes``
    are caveats shown under the table (or instead of it when there is no header)."""

    key: str
    title: str
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = ()


def summary_tables(summary: dict) -> list[Table]:
    """The tables of ``summary`` (see protocol.py), in reading order."""
    outcomes = summary.get("outcomes", {})
    survival_tabulated = bool(outcomes.get("survival")) and "status" not in outcomes["survival"]
    return [_image_table(summary), _size_table(summary), _uncertainty_table(summary),
            _counterfactual_table(summary.get("counterfactual", {})), _class_prior_table(summary.get("class_prior")),
            _mechanistic_table(summary.get("mechanistic")), _proper_scores_table(summary), _spread_table(summary), _paired_table(summary), _distribution_table(summary),
            _response_table(outcomes, with_caveat=not survival_tabulated), _survival_table(outcomes)]


def format_tables(summary: dict) -> str:
    """All tables of ``summary`` (see protocol.py) as one markdown document."""
    return "\n\n".join(to_markdown(t) for t in summary_tables(summary)) + "\n"


def to_markdown(table: Table) -> str:
    """``### title``, the pipe table (if any) and the notes as a bullet list."""
    parts = [f"### {table.title}"]
    if table.header:
        parts.append(markdown(table.header, table.rows))
    if table.notes:
        parts.append("\n".join(f"- {note}" for note in table.notes))
    return "\n\n".join(parts)


def to_html(table: Table, heading: str = "h3") -> str:
    """The table as an HTML fragment (every text escaped); status rows span the metric columns."""
    parts = []
    if table.title:
        parts.append(f"<{heading} id=\"table-{html.escape(table.key)}\">{html.escape(table.title)}</{heading}>")
    if table.header:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
        body = "".join(_html_row(row) for row in table.rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if table.notes:
        parts.append("<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def _html_row(row: Sequence[str]) -> str:
    cells = [html.escape(c) for c in row]
    if len(cells) > 2 and not any(row[2:]):
        return f"<tr><th>{cells[0]}</th><td class=\"status\" colspan=\"{len(cells) - 1}\">{cells[1]}</td></tr>"
    return f"<tr><th>{cells[0]}</th>" + "".join(f"<td>{c}</td>" for c in cells[1:]) + "</tr>"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def mean_std(stat: dict | None, digits: int = 3) -> str:
    """``0.812 ± 0.041`` from a summarize() dict; notes undefined cases; '-' when nothing is defined."""
    if not stat or stat.get("mean") is None:
        return "not defined" if stat and stat.get("n_undefined") else "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    if stat.get("n_undefined"):
        text += f" ({stat['n_undefined']} undef.)"
    return text


def method_label(summary: dict, method: str) -> str:
    """The readable name of ``method`` (e.g. ``diffusion, outcome unknown (null class)``)."""
    return summary.get("methods", {}).get(method, {}).get("label", method)


def _image_table(summary: dict) -> Table:
    aggregate = summary.get("image_metrics", {}).get("aggregate", {})
    rows = tuple((method_label(summary, m), *(mean_std(aggregate[m].get(k), 2 if k.startswith("psnr") else 3)
                                              for k, _ in IMAGE_COLUMNS)) for m in aggregate)
    n = len(summary.get("test_cases", []))
    notes = ("SSIM/PSNR/MAE of each method's mean prediction against the true follow-up; tumour = inside the "
             "baseline tumour mask, box = its bounding box plus a margin.",)
    return Table("image", f"Image metrics on {n} test cases (mean ± std over cases; tumour = baseline mask)",
                 ("method", *(title for _, title in IMAGE_COLUMNS)), rows, notes)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cases(n, n_undefined) -> str:
    return "-" if n is None else f"{n}" + (f" ({n_undefined} undef.)" if n_undefined else "")


def _size_table(summary: dict) -> Table:
    rows = []
    for method, scores in summary.get("size", {}).items():
        if "status" in scores:
            rows.append((method_label(summary, method), scores["status"], *("" for _ in SIZE_COLUMNS), ""))
        else:
            rows.append((method_label(summary, method), _cases(scores.get("n"), scores.get("n_undefined")),
                         *(_num(scores.get(k), 2 if "pp" in k else 3) for k, _ in SIZE_COLUMNS),
                         str(scores.get("source", "-"))))
    notes = ("Δvol = relative tumour volume change, follow-up vs baseline, in percentage points (pp), against the "
             "change between the ground-truth baseline and follow-up masks. Predicted volumes are measured by each "
             "sample's own generated tumour mask (model.generate_mask), or by the segmenter on the generated scan "
             "relative to the segmenter on the baseline scan (one instrument at both ends, so post = pre reads as no "
             "change).",)
    return Table("size", "Tumour volume change vs ground-truth follow-up masks",
                 ("method", "cases", *(title for _, title in SIZE_COLUMNS), "measured by"), tuple(rows), notes)


def _uncertainty_table(summary: dict) -> Table:
    rows, deterministic = [], []
    for method, u in summary.get("uncertainty", {}).items():
        if "coverage" not in u and "calibrated" not in u:
            deterministic.append(method_label(summary, method))
            continue
        raw = dict(zip(u["coverage"]["nominal"], u["coverage"]["empirical"])) if "coverage" in u else {}
        calibrated = u.get("calibrated", {})
        fitted = dict(zip(calibrated.get("nominal", []), calibrated.get("empirical", [])))
        width = dict(zip(calibrated.get("nominal", []), calibrated.get("mean_width_pp", [])))
        n = u.get("coverage", calibrated)
        rows.append((method_label(summary, method), _cases(n.get("n_cases"), n.get("n_undefined")),
                     *[_num(raw.get(level), 2) for level in (0.5, 0.9)],
                     *[_num(fitted.get(level), 2) for level in (0.5, 0.9)], _num(width.get(0.9), 1),
                     _num(u.get("spread_error", {}).get("spearman_rho"), 2)))
    notes = ["A calibrated model covers the truth in about 50 % / 90 % of cases; below = overconfident.",
             "raw: the central interval of the samples; calibrated: widened by conformal margins fitted on the "
             "validation split at the end of training (sampling.calibrate; oncodiff.pipeline.calibration), which "
             "also gives one-prediction methods an interval. Narrower calibrated intervals are better."]
    if deterministic:
        notes.append("No interval (one prediction per case, no calibration): " + "; ".join(deterministic) + ".")
    title = "Uncertainty: coverage of the true volume change by the sample interval"
    if not rows:
        return Table("uncertainty", title, notes=tuple(notes[2:]) or ("no uncertainty results in the summary",))
    return Table("uncertainty", title, ("method", "cases", "raw @50%", "raw @90%", "calibrated @50%",
                                        "calibrated @90%", "calibrated 90% width (pp)", "spread-error Spearman ρ"),
                 tuple(rows), tuple(notes))


def _counterfactual_table(cf: dict) -> Table:
    if "status" in cf or not cf:
        return Table("counterfactual", "Counterfactuals", notes=(cf.get("status", "not evaluated"),))
    rows = (("cases scored", str(cf["n_scored"])),
            ("volume change moves the right way under the flipped class", _num(cf["fraction_right_direction"], 2)),
            ("tumour MAE to counterfactual truth", _num(cf["tumor_mae_to_counterfactual_truth"], 4)),
            ("tumour MAE to factual truth", _num(cf["tumor_mae_to_factual_truth"], 4)),
            ("fraction closer to counterfactual truth", _num(cf["closer_to_counterfactual_truth"], 2)))
    return Table("counterfactual", "Counterfactuals (prediction under the opposite response class)", ("", "value"), rows)


def _class_prior_table(prior: dict | None) -> Table:
    title = "Class prior on the test cases (what the mixture samples by with the outcome unknown)"
    if not prior or "status" in prior:
        return Table("class_prior", title, notes=((prior or {}).get("status", "not evaluated"),))
    rows = tuple((name, _num(prior.get(key), digits), _num(prior.get(f"base_rate_{key}"), digits))
                 for name, key, digits in (("log loss", "log_loss", 3), ("Brier score", "brier", 3),
                                           ("AUC", "auc", 2), ("accuracy of the most probable class", "accuracy", 2)))
    cv = "; ".join(f"{name} {loss:.3f}" for name, loss in (prior.get("cv_log_loss") or {}).items())
    notes = (f"{prior['n']} test cases with a known class. Fitted: {prior['fitted']}",
             *((f"Training-split CV log loss of each candidate (best C): {cv}",) if cv else ()),
             "A log loss or Brier score above the training class rates' means the probabilities are worse than no "
             "prior at all; the reliability curve is in the report.")
    return Table("class_prior", title, ("", "chosen predictor", "training class rates"), rows, notes)


def _mechanistic_table(fit: dict | None) -> Table:
    title = "Mechanistic forecast: reaction-diffusion parameters fitted on the training split"
    if not fit or "status" in fit:
        return Table("mechanistic", title, notes=((fit or {}).get("status", "not evaluated"),))
    fitted = [("outcome unknown", fit["outcome_unknown"])]
    fitted += [(f"{fit['class_key']} = {k}", p) for k, p in fit.get("per_class", {}).items()]
    rows = tuple((name, f"{p['diffusivity']:.3g}", f"{p['proliferation']:.3g}", f"{p['kill']:.3g}", f"{p['contrast']:.3g}",
                  _num(p["mae"], 4), str(p["n_cases"])) for name, p in fitted)
    grid = fit["grid"]
    notes = (f"Fisher-KPP u_t = div(D w grad u) + rho u (1 - u) after a log-kill u -> u exp(-kill) at day 0, from the "
             f"baseline mask smoothed into a density ({fit['dims']}D crops, diffusivity weights from the anatomy masks "
             f"{', '.join(fit['anatomy']) or '(none: isotropic)'}); predicted follow-up = the baseline denoised by "
             f"{fit['smoothing_mm']:g} mm + contrast (u(days) - u(0)). Fitted on {fit['fitted_on']} by the grid "
             f"D {grid['diffusivity_mm2_per_day']} mm^2/day, rho {grid['proliferation_per_day']}/day, "
             f"log-kill {grid['log_kill']} (then {grid.get('refined', 'not refined')}), contrast in closed form, "
             "minimising the in-tumour MAE.",)
    return Table("mechanistic", title, ("parameters", "D (mm²/day)", "rho (1/day)", "log-kill", "contrast",
                                        "training in-tumour MAE", "training pairs"), rows, notes)


def _proper_scores_table(summary: dict) -> Table:
    rows = []
    for method, scores in summary.get("proper_scores", {}).items():
        volume, tumour = scores.get("volume_change", {}), scores.get("in_tumour", {})
        rows.append((method_label(summary, method), _num(volume.get("crps_pp"), 1),
                     _num(volume.get("response_log_score"), 3), _num(tumour.get("crps"), 4),
                     _num(tumour.get("energy_score"), 3), str(volume.get("distribution", volume.get("status", "-")))))
    notes = ("Proper scoring rules (lower is better; oncodiff.evaluation.distribution_scores): CRPS of the relative "
             "volume change in percentage points; log score of the response category (change <= the response "
             "threshold); mean per-voxel CRPS and energy score inside the tumour box, in normalised intensity.",
             "A one-prediction method's volume change is scored as the Gaussian matching its conformal margins "
             "(validation split); its in-tumour CRPS is its absolute error, since it predicts no spread.")
    return Table("proper_scores", "Proper scores of the predicted distributions",
                 ("method", "CRPS Δvol (pp)", "log score, response", "CRPS tumour box", "energy score box",
                  "Δvol distribution"), tuple(rows), notes)


def _spread_table(summary: dict) -> Table:
    rows = []
    for method, scores in summary.get("proper_scores", {}).items():
        tumour, spread = scores.get("in_tumour", {}), scores.get("spread_skill") or {}
        ranks = scores.get("rank_histogram") or {}
        outside = (f"{100 * ranks['outside_share']:.0f} % (calibrated {100 * ranks['outside_share_calibrated']:.0f} %)"
                   if "outside_share" in ranks else "-")
        rows.append((method_label(summary, method), _num(tumour.get("mae_of_mean"), 4), _num(tumour.get("crps"), 4),
                     _num(spread.get("spread"), 4), _num(spread.get("rmse_of_mean"), 4), _num(spread.get("ratio"), 2),
                     _num(ranks.get("delta"), 1), outside))
    notes = ("Inside the tumour box, pooled over its voxels (normalised intensity; distribution_scores.py): MAE of the "
             "sample mean beside the per-voxel CRPS of the samples (a one-prediction method's CRPS is its MAE, so "
             "CRPS below the point methods' MAE is what a distribution adds); spread = RMS of the per-voxel sample "
             "standard deviation, RMSE of the sample mean, and the spread-skill ratio sqrt((M + 1) / M) x spread / "
             "RMSE for M samples: 1 = as spread as the errors, below 1 = samples too alike.",
             "Rank histogram (figure in the report, counts in summary.json): the truth's rank among the samples per "
             "voxel, ties broken at random. delta = its squared distance from flat over what independent flat ranks "
             "give (about 1 = flat; voxels are correlated, so read it as a size); 'outside' = voxels whose truth lies "
             "below or above every sample, against 2 / (M + 1) when calibrated (more = a U, overconfident).")
    return Table("spread", "Spread of the samples against their error, in the tumour box",
                 ("method", "MAE of mean", "CRPS", "spread (RMS sd)", "RMSE of mean", "spread-skill",
                  "rank delta", "truth outside samples"), tuple(rows), notes)


def _paired_table(summary: dict) -> Table:
    paired = summary.get("paired") or {}
    verdicts, rows = paired.get("verdicts", {}), []
    for method, against in verdicts.items():
        for reference, scores in against.items():
            rows.append((method_label(summary, method), method_label(summary, reference),
                         *(_difference(scores.get(k)) for k in ("mae_tumor", "ssim_tumor", "crps_box"))))
    if not rows:
        return Table("paired", "Paired verdicts against the reference predictions",
                     notes=("not computed: no reference method (post = pre, denoised, regression) was evaluated",))
    n_patients = next((d.get("n_patients") for a in verdicts.values() for r in a.values() for d in r.values()), None)
    notes = (f"Mean per-case difference (method - reference), with a 95 % interval from {paired.get('n_boot')} "
             f"bootstrap resamples of the {n_patients} test patients (a patient's follow-ups and slices stay together; "
             "evaluation/paired.py), and the verdict: better / worse when the interval excludes 0, ties when it "
             f"holds 0; not judged with fewer than {MIN_PATIENTS} patients. MAE and SSIM inside the baseline "
             "tumour; CRPS per voxel in the tumour box (lower MAE and CRPS, higher SSIM are better).",)
    return Table("paired", "Paired verdicts against the reference predictions",
                 ("method", "against", "Δ MAE tumour", "Δ SSIM tumour", "Δ CRPS box"), tuple(rows), notes)


def _difference(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    low, high = d["ci95"]
    interval = "" if low is None else f" [{low:+.4f}, {high:+.4f}]"
    return f"{d['mean']:+.4f}{interval} {d.get('verdict') or 'not judged'}"


def _distribution_table(summary: dict) -> Table:
    dist = summary.get("distribution", {})
    rows = tuple((method_label(summary, m), _num(v["mmd"], 4)) for m, v in dist.items()
                 if isinstance(v, dict) and "mmd" in v)
    notes = ("MMD² is the unbiased estimate: it can be below 0 when predictions and true follow-ups are close, and it "
             "is noisy with few cases; compare methods, not values to 0.",
             _fid_note(dist.get("fid", {})), _lpips_note(dist.get("lpips", {})))
    return Table("distribution", "Distribution distance to the true follow-ups (MMD², RBF kernel)",
                 ("method", "MMD²"), rows, notes)


def _fid_note(fid: dict) -> str:
    return f"FID: {fid['status']}" if fid.get("status") else f"FID: {_num(fid.get('value'), 2)}"


def _lpips_note(lpips: dict) -> str:
    if lpips.get("status"):
        return f"LPIPS: {lpips['status']}"
    return f"LPIPS: {_num(lpips.get('mean'), 4)}" + (f" ± {lpips['std']:.4f}" if lpips.get("std") is not None else "")


def _response_table(outcomes: dict, with_caveat: bool) -> Table:
    response = outcomes.get("response", {})
    if "status" in response or not response:
        return Table("response", "Response prediction", notes=(response.get("status", "not evaluated"),))
    rows = tuple((name, *(_cv(r, k) for k, _ in RESPONSE_COLUMNS), _test_only(r, "balanced_accuracy"))
                 for name, r in response.items())
    title = f"Response prediction, {outcomes.get('folds')}-fold patient-grouped CV (mean ± std over folds)"
    return Table("response", title,
                 ("model", *(name for _, name in RESPONSE_COLUMNS), "bal. acc., test-split patients"), rows,
                 _outcome_notes(outcomes, response, with_caveat))


def _survival_table(outcomes: dict) -> Table:
    survival = outcomes.get("survival", {})
    if "status" in survival or not survival:
        return Table("survival", "Survival prediction", notes=(survival.get("status", "not evaluated"),))
    rows = tuple((name, _cv(r, "c_index"), _pooled(r.get("pooled_c_index")), _test_only(r, "c_index"))
                 for name, r in survival.items())
    return Table("survival", f"Survival prediction, {outcomes.get('folds')}-fold patient-grouped CV "
                 "(c-index, mean ± std over folds)",
                 ("model", "c-index", "pooled out-of-fold c-index (95 % patient-bootstrap CI)",
                  "c-index, test-split patients"), rows, _outcome_notes(outcomes, survival, with_caveat=True))


def _pooled(pooled: dict | None) -> str:
    if not pooled or pooled.get("c_index") is None:
        return "-"
    low, high = pooled.get("ci95") or (None, None)
    return f"{pooled['c_index']:.2f}" + ("" if low is None else f" ({low:.2f}..{high:.2f})")


def _outcome_notes(outcomes: dict, results: dict, with_caveat: bool) -> tuple[str, ...]:
    """The folds each model could not fit normally, and the stage-2 caveat (shown once, under the last table)."""
    notes = [f"{name}: {note}" for name, r in results.items() for note in r.get("notes", [])]
    if with_caveat and outcomes.get("caveat"):
        notes.append("Caveat: " + " ".join(outcomes["caveat"].split()))
    return tuple(notes)


def _test_only(result: dict, metric: str) -> str:
    value = (result.get("test_split_only") or {}).get(metric)
    n = result.get("n_test_split")
    return _num(value, 2) + ("" if n is None else f" (n={n})")


def _cv(result: dict, metric: str) -> str:
    mean, std = result.get("mean", {}).get(metric), result.get("std", {}).get(metric)
    undefined = result.get("undefined", {}).get(metric)
    suffix = f" ({undefined} folds undef.)" if undefined else ""
    if mean is None:
        return "-" + suffix
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + suffix
