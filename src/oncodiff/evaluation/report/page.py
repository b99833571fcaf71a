"""``oncodiff report``: an evaluation folder -> one self-contained ``report.html``.

Reads what ``oncodiff evaluate`` wrote (``summary.json``, ``figures.npz``) and the run's
``metrics.csv``, and writes a single HTML file with every figure embedded as a base64 PNG and no
external resource, so it opens offline and survives being emailed. Sections: provenance, the notes
and caveats the summary carries, the metric tables (the same as ``tables.md``) with their plots
(SSIM histogram, calibration, rank histograms, Kaplan-Meier), the first test cases image by image, training curves.
A section without data says why in one line.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from oncodiff import __version__
from oncodiff.errors import OncodiffError
from oncodiff.layouts import FIGURES_NPZ, SUMMARY_JSON, EvaluationFolder
from oncodiff.evaluation.report.figures import (
    CaseImages, calibration_figure, case_figure, kaplan_meier_figure, load_case_images, png_base64,
    rank_histogram_figure, reliability_figure, ssim_histogram, training_curves_figure,
)
from oncodiff.evaluation.report.tables import IMAGE_COLUMNS, Table, method_label, summary_tables, to_html
from oncodiff.outputs import REPORT_SIGNATURE, check_output_file, make_folder, write_file_atomic
from oncodiff.runs import RunFolder

FEW_TEST_CASES = 10
METRIC_NAMES = dict(IMAGE_COLUMNS)
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:1.5em 2em 4em;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2.2em}h3{margin-top:1.6em}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}th,td{border:1px solid #d0d0d0;padding:.3em .55em}
thead th{background:#eef1f5;text-align:center}tbody th{text-align:left;font-weight:600;background:#fafafa}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.status{text-align:left;font-style:italic;
color:#8a4b00;white-space:normal}tbody tr:nth-child(even) td{background:#f7f8fa}.scroll{overflow-x:auto}td.text{text-align:left}
dl.provenance{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1.2em;font-size:.92em}
dl.provenance dt{font-weight:600;color:#555}dl.provenance dd{margin:0;word-break:break-all}
.caveats{background:#fff8e1;border:1px solid #f0c36d;border-radius:6px;padding:.6em 1.2em}
.caveats li,ul.notes li{margin:.2em 0}ul.notes{font-size:.88em;color:#444}.missing{color:#8a4b00;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
nav{font-size:.9em}nav a{margin-right:1em}code{font-size:.92em}
.cases table{width:100%}.cases td{white-space:normal}.cases td:last-child{text-align:left;min-width:12em}
"""


def write_report(evaluation_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the evaluation folder ``evaluation_dir`` as one HTML file; returns its path.

    ``out`` defaults to ``evaluation_dir/report.html``; an existing folder gets ``report.html`` inside.
    Refuses to write into the cohort folder the summary names.
    """
    evaluation = Path(evaluation_dir).resolve()
    summary = _load_summary(evaluation)
    out = _output_path(evaluation, out, summary)
    page = render_report(summary, _load_figures(evaluation), evaluation)
    return write_file_atomic(out, page)


def _load_summary(evaluation: Path) -> dict:
    path = EvaluationFolder(evaluation).summary_json
    if not path.is_file():
        raise OncodiffError(f"{evaluation}: no {SUMMARY_JSON}; pass the folder written by `oncodiff evaluate`")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise OncodiffError(f"{path}: not valid JSON ({error}); re-run `oncodiff evaluate`") from error
    if not isinstance(summary, dict) or "methods" not in summary:
        raise OncodiffError(f"{path}: not an evaluation summary (no 'methods'); re-run `oncodiff evaluate`")
    return summary


def _output_path(evaluation: Path, out: str | Path | None, summary: dict) -> Path:
    """A new file, or a report oncodiff wrote; never inside a cohort or run folder (oncodiff/outputs.py)."""
    inputs = {role: summary[role] for role in ("cohort", "run") if summary.get(role)}
    path = check_output_file(EvaluationFolder(evaluation).report_html if out is None else out, evaluation, inputs)
    return make_folder(path.parent) / path.name


def _load_figures(evaluation: Path) -> dict[str, np.ndarray] | None:
    path = EvaluationFolder(evaluation).figures_npz
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def render_report(summary: dict, figures: Mapping[str, np.ndarray] | None, evaluation: Path) -> str:
    """The whole page as one HTML string (see the module docstring for its sections)."""
    tables = summary_tables(summary)
    labels = {m: method_label(summary, m) for m in summary["methods"]}
    body = [_header(summary, evaluation), _caveats_section(summary, tables), _methods_section(summary)]
    for table in tables:
        body.append(f"<section>{_scroll(to_html(table, 'h2'))}{_plot_for(table.key, summary, labels)}</section>")
        if table.key == "image":
            body.append(_cases_section(summary, figures, labels))
    body.append(_training_section(summary))
    title = html.escape(f"oncodiff evaluation: {Path(summary.get('run', 'run')).name}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{REPORT_SIGNATURE}<title>{title}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _scroll(fragment: str) -> str:
    return fragment.replace("<table>", "<div class=\"scroll\"><table>").replace("</table>", "</table></div>")


def _image(fig, alt: str, caption: str = "", dpi: int = 100) -> str:
    img = f"<img src=\"data:image/png;base64,{png_base64(fig, dpi)}\" alt=\"{html.escape(alt)}\">"
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{img}{text}</figure>"


def _missing(text: str) -> str:
    return f"<p class=\"missing\">{html.escape(text)}</p>"


# ---------------------------------------------------------------------------------------------
# Header, caveats, methods


def _header(summary: dict, evaluation: Path) -> str:
    config = summary.get("config", {})
    data, model, diffusion, sampling = (config.get(k, {}) for k in ("data", "model", "diffusion", "sampling"))
    segmenter = summary.get("segmenter") or {}
    rows = [("run", summary.get("run")), ("cohort", summary.get("cohort")), ("data hash", summary.get("data_hash")),
            ("evaluation folder", str(evaluation)), ("evaluated", _modified(EvaluationFolder(evaluation).summary_json)),
            ("report written", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("oncodiff version", _versions(summary.get("oncodiff_version"))),
            ("test cases", f"{len(summary.get('test_cases', []))} (cases with a ground-truth follow-up in the run's "
                           "test split)"),
            ("preset", config.get("preset")),
            ("data", f"{data.get('dims')}-D crops of {_shape(data.get('crop_size'))} voxels, crop {data.get('crop')}"),
            ("model", f"target {diffusion.get('target')}, prediction {diffusion.get('prediction')}, schedule "
                      f"{diffusion.get('schedule')}, clinical {model.get('clinical')}, "
                      f"class label {model.get('class_label')}"),
            ("sampling", f"sampler {sampling.get('sampler')}, {sampling.get('steps')} steps, {sampling.get('samples')} "
                         f"samples per case, guidance scale {sampling.get('guidance_scale')}, eta {sampling.get('eta')}"),
            ("tumour volumes", _segmenter(segmenter, _generates_masks(summary)))]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows)
    nav = " ".join(f"<a href=\"#{a}\">{html.escape(t)}</a>" for a, t in _CONTENTS)
    return (f"<header><h1>oncodiff evaluation report</h1><nav>{nav}</nav>"
            f"<dl class=\"provenance\">{items}</dl></header>")


_CONTENTS = (("caveats", "notes & caveats"), ("methods", "methods"), ("table-image", "image metrics"),
             ("cases", "cases"), ("table-size", "volume change"), ("table-uncertainty", "uncertainty"),
             ("table-counterfactual", "counterfactuals"), ("table-distribution", "distribution"),
             ("table-response", "response"), ("table-survival", "survival"), ("training", "training curves"))


def _modified(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC") + " (time summary.json was written)"


def _versions(evaluated_with) -> str:
    if evaluated_with in (None, __version__):
        return f"{__version__}"
    return f"evaluated with {evaluated_with}, report written with {__version__}"


def _shape(size) -> str:
    return "×".join(str(s) for s in size) if isinstance(size, (list, tuple)) else str(size)


def _generates_masks(summary: dict) -> bool:
    return bool(((summary.get("config") or {}).get("model") or {}).get("generate_mask"))


def _segmenter(segmenter: dict, generates_masks: bool = False) -> str:
    if generates_masks:
        return "none needed: the model generates each sample's tumour mask (model.generate_mask)"
    if not segmenter:
        return "not recorded"
    if not segmenter.get("trained"):
        return "not trained: volume metrics are not meaningful"
    dice = segmenter.get("val_dice")
    return f"trained {segmenter.get('steps')} steps, validation Dice " + ("n/a" if dice is None else f"{dice:.3f}")


def _caveats_section(summary: dict, tables: list[Table]) -> str:
    notes = _caveats(summary, tables)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes) or "<li>none recorded in the summary</li>"
    return f"<section id=\"caveats\"><h2>Notes and caveats</h2><ul class=\"caveats\">{items}</ul></section>"


def _caveats(summary: dict, tables: list[Table]) -> list[str]:
    """Everything the summary marks as not computed, not defined or to be read with care."""
    notes = []
    n = len(summary.get("test_cases", []))
    if n < FEW_TEST_CASES:
        notes.append(f"Only {n} test cases: means, standard deviations and histograms are rough.")
    notes += [f"{t.title}: {note}" for t in tables if not t.header for note in t.notes]
    notes += _grouped_statuses(summary, "size", "Tumour volume change")
    notes += _undefined_metrics(summary)
    dist = summary.get("distribution", {})
    notes += [f"{name}: {dist[key]['status']}" for key, name in (("fid", "FID"), ("lpips", "LPIPS"))
              if isinstance(dist.get(key), dict) and dist[key].get("status")]
    segmenter = summary.get("segmenter") or {}
    if segmenter and not _generates_masks(summary) and (not segmenter.get("trained")
                                                         or (segmenter.get("val_dice") or 0) < 0.7):
        notes.append(f"Volume segmenter: {_segmenter(segmenter)}; volume-change numbers inherit its errors.")
    outcomes = summary.get("outcomes", {})
    for task in ("response", "survival"):
        results = outcomes.get(task, {})
        notes += [f"{task}, {name}: {note}" for name, r in results.items() if isinstance(r, dict)
                  for note in r.get("notes", [])]
    if outcomes.get("caveat"):
        notes.append("Response/survival: " + " ".join(outcomes["caveat"].split()))
    return notes


def _grouped_statuses(summary: dict, section: str, title: str) -> list[str]:
    """One line per distinct status of ``summary[section][method]``, naming the methods (or 'all methods')."""
    by_status: dict[str, list[str]] = {}
    for method, value in summary.get(section, {}).items():
        if isinstance(value, dict) and value.get("status"):
            by_status.setdefault(value["status"], []).append(method)
    every = len(summary.get(section, {}))
    return [f"{title} ({'all methods' if len(ms) == every else ', '.join(method_label(summary, m) for m in ms)}): "
            f"{status}" for status, ms in by_status.items()]


def _undefined_metrics(summary: dict) -> list[str]:
    notes = []
    for method, metrics in summary.get("image_metrics", {}).get("aggregate", {}).items():
        for name, stat in metrics.items():
            for key, meaning in (("n_undefined", "undefined"), ("n_infinite", "infinite (prediction equals truth)")):
                if isinstance(stat, dict) and stat.get(key):
                    notes.append(f"{method_label(summary, method)}: {METRIC_NAMES.get(name, name)} is {meaning} "
                                 f"for {stat[key]} case(s); left out of its mean")
    return notes


def _methods_section(summary: dict) -> str:
    rows = []
    for name, info in summary["methods"].items():
        samples = info.get("samples")
        kind = "deterministic (one prediction per case)" if samples == 1 else f"{samples} samples per case"
        rows.append(f"<tr><th>{html.escape(info.get('label', name))}</th><td class=\"text\"><code>{html.escape(name)}"
                    f"</code></td><td class=\"text\">{html.escape(kind)}</td></tr>")
    return ("<section id=\"methods\"><h2>Methods compared</h2><p>Every method predicts the same test cases and is "
            "scored by the same code; the tables and figures below use these names.</p>"
            "<div class=\"scroll\"><table><thead><tr><th>method</th><th>key</th><th>predictions</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


# ---------------------------------------------------------------------------------------------
# Plots beside the tables


def _plot_for(key: str, summary: dict, labels: dict[str, str]) -> str:
    if key == "image":
        return _ssim_plot(summary, labels)
    if key == "uncertainty":
        return _calibration_plot(summary, labels)
    if key == "survival":
        return _kaplan_meier_plot(summary)
    if key == "class_prior":
        return _reliability_plot(summary)
    if key == "spread":
        return _rank_histogram_plot(summary, labels)
    return ""


def _rank_histogram_plot(summary: dict, labels: dict[str, str]) -> str:
    histograms = {m: s["rank_histogram"] for m, s in summary.get("proper_scores", {}).items()
                  if isinstance(s.get("rank_histogram"), dict) and s["rank_histogram"].get("counts")}
    if not histograms:
        return _missing("Rank histogram: no method has several samples per case (or no test case has a baseline "
                        "tumour), so there is no ensemble to rank the truth in.")
    return "<h3>Rank histograms in the tumour box</h3>" + _image(
        rank_histogram_figure(histograms, labels), "rank histograms",
        "Share of tumour-box voxels per rank of the true follow-up among the samples (ties at random). Flat "
        "(dashed line) = the truth behaves like one more sample; a U = samples too alike (overconfident); a dome "
        "= too spread; a slope = biased.")


def _reliability_plot(summary: dict) -> str:
    prior = summary.get("class_prior") or {}
    curve = prior.get("reliability")
    if not curve or not curve.get("count"):
        return _missing("Reliability curve: the class prior was not scored on the test cases.")
    rates = (prior.get("frequencies") or [None, None]) if curve.get("of") == "P(class 1)" else [None, None]
    return "<h3>Reliability of the class probabilities</h3>" + _image(
        reliability_figure(curve, rates[1]), "reliability curve",
        "Test cases binned by the predicted probability: mean predicted against observed frequency. On the "
        "diagonal = calibrated. The training class rates predict the same probability for every case.")


def _ssim_plot(summary: dict, labels: dict[str, str]) -> str:
    per_case = summary.get("image_metrics", {}).get("per_case", [])
    if not per_case:
        return _missing("SSIM histogram: the summary has no per-case image metrics.")
    return "<h3>SSIM per case</h3>" + _image(ssim_histogram(per_case, labels), "SSIM histogram per method",
                                             "Distribution over test cases of the SSIM between each method's mean "
                                             "prediction and the true follow-up; dashed line = mean.")


def _calibration_plot(summary: dict, labels: dict[str, str]) -> str:
    curves = {m: u["calibration"] for m, u in summary.get("uncertainty", {}).items()
              if isinstance(u, dict) and u.get("calibration")}
    if not curves:
        return _missing("Calibration plot: no method has several samples per case, so there is no interval to "
                        "calibrate.")
    return "<h3>Calibration of the sample intervals</h3>" + _image(
        calibration_figure(curves, labels), "calibration plot",
        "For each nominal level p: the fraction of cases whose true volume change lies in the central p-interval "
        "of the samples' volume changes. On the diagonal = calibrated; below = overconfident; n = cases with a "
        "defined change.")


def _kaplan_meier_plot(summary: dict) -> str:
    km = summary.get("outcomes", {}).get("kaplan_meier")
    if not km or not km.get("curves"):
        return _missing("Kaplan-Meier curves: not available (no survival model was cross-validated).")
    return "<h3>Kaplan-Meier curves by predicted risk group</h3>" + _image(
        kaplan_meier_figure(km), "Kaplan-Meier curves",
        "Patients split at the median out-of-fold risk of the denoiser-features Cox head (high risk = above "
        "the median); shaded = 95 % confidence interval; p = log-rank test.")


# ---------------------------------------------------------------------------------------------
# Cases and training curves


def _cases_section(summary: dict, figures: Mapping[str, np.ndarray] | None, labels: dict[str, str]) -> str:
    head = "<section id=\"cases\"><h2>Test cases, image by image</h2>"
    if figures is None or "keys" not in figures:
        return head + _missing(f"No {FIGURES_NPZ} in the evaluation folder: re-run `oncodiff evaluate` to draw the "
                               "cases.") + "</section>"
    cases = load_case_images(figures, list(labels))
    absent = [labels[m] for m in labels if not cases or m not in cases[0].methods]
    intro = (f"<p>The first {len(cases)} of {len(summary.get('test_cases', []))} test cases. Each case row uses one "
             "intensity window for all its images; drift maps are centred at 0 on the scale of the true drift (red "
             "= brighter at follow-up, blue = darker; stronger predicted drifts saturate); uncertainty = per-voxel "
             "std over the samples. Axial view, radiological convention (patient's right on the left).</p>")
    if absent:
        intro += _missing(f"Not in {FIGURES_NPZ}, so not drawn: " + "; ".join(absent) + ".")
    return head + intro + "".join(_case_html(summary, case, labels) for case in cases) + "</section>"


def _case_html(summary: dict, case: CaseImages, labels: dict[str, str]) -> str:
    title = html.escape(case.key) + (f" <small>({html.escape(case.slice_note)})</small>" if case.slice_note else "")
    table = _case_table(summary, case.key, labels)
    wrapping = _scroll(table).replace('<div class="scroll">', '<div class="scroll cases">')  # fits the page: wraps
    return f"<h3>{title}</h3>" + _image(case_figure(case, labels), f"case {case.key}", dpi=90) + wrapping


def _case_table(summary: dict, key: str, labels: dict[str, str]) -> str:
    metrics = {r.get("method"): r for r in summary.get("image_metrics", {}).get("per_case", []) if r.get("case_id") == key}
    follow_up = "/".join(key.split("/")[:3])  # sizes are per follow-up; a tumour-slice case key ends in /zK
    sizes = {m: next((s for s in rows if s.get("key") in (key, follow_up)), {})
             for m, rows in summary.get("per_case_size", {}).items()}
    truth = next(iter(sizes.values()), {})
    rows = [("ground truth", "", "", _pct(truth.get("change_pct_true")), "", _volumes(truth))]
    for method, label in labels.items():
        size, image = sizes.get(method, {}), metrics.get(method, {})
        rows.append((label, _fmt(image.get("ssim_tumor")), _fmt(image.get("ssim")), _change(size),
                     _fmt(size.get("response_probability"), 2), size.get("note", "")))
    header = ("", "SSIM tumour", "SSIM image", "Δvol (%) [90 % interval of samples], calibrated interval",
              "P(responder)", "volumes / notes")
    return to_html(Table("case", "", header, tuple(rows)))


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "not defined" if value is None else f"{value:+.1f}"


def _change(size: dict) -> str:
    if not size:
        return "-"
    interval = size.get("change_pct_interval_90")
    text = _pct(size.get("change_pct_mean"))
    if interval and interval[0] != interval[1]:
        text += f" [{interval[0]:+.1f}, {interval[1]:+.1f}]"
    calibrated = size.get("change_pct_interval_90_calibrated")
    if calibrated:
        text += f", calibrated [{calibrated[0]:+.1f}, {calibrated[1]:+.1f}]"
    return text


def _volumes(size: dict) -> str:
    if not size:
        return ""
    unit = str(size.get("volume_unit", "")).replace("mm2", "mm²").replace("mm3", "mm³")
    true = size.get("volume_true")
    return (f"baseline {size.get('volume_baseline', float('nan')):.0f} {unit}, follow-up "
            + ("not measured" if true is None else f"{true:.0f} {unit}") + f"; response rule: {size.get('response_rule')}")


def _training_section(summary: dict) -> str:
    head = "<section id=\"training\"><h2>Training curves</h2>"
    path = Path(summary["training_curves"]) if summary.get("training_curves") else None
    if path is None or not path.is_file():
        where = "the summary names no metrics.csv" if path is None else f"{path} is not there (run folder moved?)"
        return head + _missing(f"Training curves not drawn: {where}.") + "</section>"
    import pandas as pd

    metrics = pd.read_csv(path)
    if "step" not in metrics or metrics.empty:
        return head + _missing(f"Training curves not drawn: {path} has no 'step' column or no rows.") + "</section>"
    text = f"<p>From <code>{html.escape(str(path))}</code>. {html.escape(_train_summary(path.parent))}</p>"
    return head + text + _image(training_curves_figure(metrics), "training curves") + "</section>"


def _train_summary(run: Path) -> str:
    path = RunFolder(run).train_summary_json
    if not path.is_file():
        return ""
    info = json.loads(path.read_text(encoding="utf-8"))
    best = info.get("best_val_loss")
    return (f"{info.get('global_step')} optimiser steps in {info.get('epochs')} epochs; best validation loss "
            + ("n/a" if best is None else f"{best:.4g}") + ("; stopped early." if info.get("stopped_early") else "."))
