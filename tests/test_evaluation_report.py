"""oncodiff report: one self-contained HTML page from a hand-made evaluation folder."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from oncodiff.cli import app
from oncodiff.errors import OncodiffError
from oncodiff.evaluation import write_report
from oncodiff.evaluation.report.figures import case_figure, load_case_images
from oncodiff.evaluation.report.tables import format_tables, summary_tables, to_html

SHAPE = (16, 16)
KEYS = ["P1/L1/week6", "P2/L1/week6", "P3/L1/week6"]
HOSTILE = 'diffusion <b>"tuned"</b> & co'  # a label that must come out escaped
LABELS = {"identity": "identity (post = pre)", "diffusion": HOSTILE}


def _stat(mean):
    return {"mean": mean, "std": 0.05, "n": 3, "n_undefined": 0, "n_infinite": 0}


def _calibration(empirical):
    levels = [round(0.1 * k, 1) for k in range(1, 10)]
    return {"nominal": levels, "empirical": empirical, "n_cases": 3, "n_undefined": 0}


def _outcomes():
    cv = {"mean": {"c_index": 0.7}, "std": {"c_index": 0.1}, "undefined": {"c_index": 0}, "notes": [],
          "test_split_only": {"c_index": 0.6}, "n_test_split": 3}
    curve = {"time": [0.0, 100.0, 200.0], "survival": [1.0, 0.5, 0.0], "ci_lower": [1.0, 0.1, 0.0],
             "ci_upper": [1.0, 0.9, 0.0]}
    return {"folds": 2, "caveat": "features of training patients may carry their outcome",
            "response": {"status": "not available: fewer than 2 patients with a known response"},
            "survival": {"denoiser features + Cox head": cv},
            "kaplan_meier": {"curves": [{"label": "low risk", "n": 3, "events": 2, **curve},
                                        {"label": "high risk", "n": 3, "events": 3, **curve}],
                             "threshold": 0.1, "logrank_p": 0.42}}


def make_summary(run, cohort, stochastic=True, outcomes=True) -> dict:
    methods = {"identity": {"label": LABELS["identity"], "samples": 1},
               "diffusion": {"label": HOSTILE, "samples": 4 if stochastic else 1}}
    per_case = [{"method": m, "case_id": k, "ssim": 0.3 + 0.1 * i, "ssim_tumor": None if i == 2 else 0.5, "psnr": 20.0}
                for m in methods for i, k in enumerate(KEYS)]
    uncertainty = {"identity": {"status": "deterministic: one prediction per case, no interval"},
                   "diffusion": {"coverage": {"nominal": [0.5, 0.9], "empirical": [0.33, 0.67], "n_cases": 3,
                                              "n_undefined": 0},
                                 "spread_error": {"spearman_rho": 0.5},
                                 "calibration": _calibration([0.0, 0.33, 0.33, None, 0.67, 0.67, 0.67, 1.0, 1.0])}}
    if not stochastic:
        uncertainty["diffusion"] = uncertainty["identity"]
    size_case = {"volume_unit": "mm2", "volume_baseline": 40.0, "change_pct_mean": -25.0,
                 "change_pct_interval_90": [-40.0, -10.0], "response_probability": 0.75, "volume_true": 20.0,
                 "change_pct_true": -50.0, "response_rule": "change <= -20%"}
    return {
        "methods": methods, "test_cases": KEYS, "run": str(run), "cohort": str(cohort), "data_hash": "abc123",
        "oncodiff_version": "0.1.0", "training_curves": str(run / "metrics.csv"),
        "config": {"preset": "demo", "data": {"dims": 2, "crop_size": list(SHAPE), "crop": "fixed"},
                   "diffusion": {"target": "drift", "prediction": "x0"},
                   "sampling": {"sampler": "ddim", "steps": 20, "samples": 4, "guidance_scale": 1.0}},
        "image_metrics": {"aggregate": {m: {"ssim": _stat(0.4), "ssim_tumor": _stat(0.5) | {"n_undefined": 1},
                                            "psnr": _stat(20.0)} for m in methods},
                          "per_case": per_case},
        "size": {m: {"n": 3, "status": "not defined: fewer than 3 cases with a measurable change"} for m in methods},
        "uncertainty": uncertainty,
        "distribution": {**{m: {"mmd": 0.01} for m in methods},
                         "fid": {"value": None, "status": "not computed: no feature-extractor weights given"},
                         "lpips": {"mean": None, "status": "not computed: no LPIPS network weights given"}},
        "per_case_size": {m: [size_case | {"key": k} for k in KEYS] for m in methods},
        "counterfactual": {"status": "not available: the cohort has no counterfactuals.csv"},
        "outcomes": _outcomes() if outcomes else {},
        "segmenter": {"trained": True, "steps": 50, "val_dice": 0.9},
    }


def make_figures(methods: dict, n_cases: int = 1, shape=SHAPE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    centre = (np.array(shape, dtype=np.float32) / 2).reshape(-1, *[1] * len(shape))
    disc = (((np.indices(shape) - centre) ** 2).sum(0) < 9).astype(np.float32)
    pre = np.stack([0.2 + 0.7 * disc + 0.02 * rng.standard_normal(shape) for _ in range(n_cases)]).astype(np.float32)
    arrays = {"keys": np.array(KEYS[:n_cases]), "pre": pre, "post": 0.8 * pre,
              "tumor_mask": np.stack([disc] * n_cases), "post_mask": np.zeros_like(pre)}
    for name, info in methods.items():
        kept = min(info["samples"], 2)  # figures.npz keeps two samples
        samples = np.repeat(pre[:, None], kept, axis=1) + 0.05 * rng.standard_normal((n_cases, kept, *shape))
        arrays |= {f"{name}/mean": samples.mean(1), f"{name}/samples": samples.astype(np.float32),
                   f"{name}/std": samples.std(1), f"{name}/tumor_probability": np.stack([disc] * n_cases)}
    return arrays


def write_evaluation(tmp_path, figures=True, curves=True, **options):
    run, cohort, evaluation = tmp_path / "run", tmp_path / "cohort", tmp_path / "eval"
    for folder in (run, cohort, evaluation):
        folder.mkdir()
    summary = make_summary(run, cohort, **options)
    (evaluation / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if figures:
        np.savez_compressed(evaluation / "figures.npz", **make_figures(summary["methods"]))
    if curves:
        (run / "metrics.csv").write_text("epoch,lr-AdamW,step,train_loss_epoch,train_loss_step,val_loss\n"
                                         "0,,3,,0.5,\n0,,3,,,0.4\n0,,3,0.45,,\n,1e-4,4,,,\n1,,7,,0.3,\n1,,7,,,0.25\n", encoding="utf-8")
    return evaluation, cohort


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    evaluation, _ = write_evaluation(tmp_path_factory.mktemp("full"))
    path = write_report(evaluation)
    return path, path.read_text(encoding="utf-8")


def test_report_defaults_to_the_evaluation_folder(full_report):
    path, page = full_report
    assert path.name == "report.html" and (path.parent / "summary.json").is_file()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_report_is_self_contained(full_report):
    _, page = full_report
    assert not re.search(r"<(script|link|iframe)\b", page)
    assert "url(" not in page and "@import" not in page
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == 5  # SSIM histogram, one case, calibration, Kaplan-Meier, training curves
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert all(href.startswith("#") for href in re.findall(r'\bhref="([^"]*)"', page))
    assert not re.search(r"https?://", page)


def test_every_method_label_appears_escaped(full_report):
    _, page = full_report
    assert LABELS["identity"] in page
    assert html.escape(HOSTILE) in page
    assert "<b>" not in page and '"tuned"' not in page


def test_sections_and_caveats_are_shown(full_report):
    _, page = full_report
    for anchor in ("caveats", "methods", "table-image", "cases", "table-size", "table-uncertainty",
                   "table-counterfactual", "table-distribution", "table-response", "table-survival", "training"):
        assert f'id="{anchor}"' in page
    for text in ("SSIM per case", "Calibration of the sample intervals", "Kaplan-Meier curves by predicted risk group",
                 "Training curves", "not computed: no feature-extractor weights given",
                 "not computed: no LPIPS network weights given", "features of training patients may carry their outcome",
                 "not available: the cohort has no counterfactuals.csv", "fewer than 3 cases with a measurable change",
                 "not available: fewer than 2 patients with a known response", "Only 3 test cases",
                 "SSIM tumour is undefined for 1 case(s)", "abc123", "P1/L1/week6", "-25.0 [-40.0, -10.0]"):
        assert html.escape(text) in page, text


def test_missing_data_is_explained_not_fatal(tmp_path):
    evaluation, _ = write_evaluation(tmp_path, figures=False, curves=False, stochastic=False, outcomes=False)
    page = write_report(evaluation).read_text(encoding="utf-8")
    assert "No figures.npz in the evaluation folder" in page
    assert "Calibration plot: no method has several samples per case" in page
    assert "Kaplan-Meier curves: not available" in page
    assert "Training curves not drawn" in page and "metrics.csv is not there" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 1  # only the SSIM histogram has data


def test_out_option_and_refusals(tmp_path):
    evaluation, cohort = write_evaluation(tmp_path, figures=False, curves=False, outcomes=False)
    elsewhere = tmp_path / "reports"
    elsewhere.mkdir()
    result = CliRunner().invoke(app, ["report", str(evaluation), "--out", str(elsewhere)])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "report.html").is_file() and not (evaluation / "report.html").exists()
    assert write_report(evaluation, tmp_path / "new" / "mine.html").is_file()
    with pytest.raises(OncodiffError, match="inside the cohort"):
        write_report(evaluation, cohort / "report.html")
    with pytest.raises(OncodiffError, match="no summary.json"):
        write_report(tmp_path / "reports")
    assert not (cohort / "report.html").exists()


def test_case_images_cut_3d_crops_at_the_most_tumour_and_orient_radiologically():
    shape = (6, 5, 4)  # x (left -> right), y (posterior -> anterior), z (inferior -> superior)
    figures = make_figures({"m": {"samples": 3}}, shape=shape)
    figures["tumor_mask"][:] = 0
    figures["tumor_mask"][0, 5, 4, 2] = 1  # most right, most anterior voxel on slice z = 2
    figures["pre"][0, 5, 4, 2] = 9.0
    (case,) = load_case_images(figures, ["m"])
    assert case.slice_note.startswith("axial slice 3 of 4,")
    assert case.pre.shape == (5, 6) and case.methods["m"]["samples"].shape == (2, 5, 6)
    assert case.pre[0, 0] == 9.0 and case.tumor_mask[0, 0] == 1  # anterior at the top, patient's right on the left


def test_case_figure_draws_without_any_tumour():
    figures = make_figures({"m": {"samples": 1}})
    for key in ("tumor_mask", "post_mask", "m/tumor_probability"):
        figures[key][:] = 0
    (case,) = load_case_images(figures, ["m"])
    fig = case_figure(case, {"m": "a deterministic method"})
    assert len(fig.axes) == 2 * 6 + 3  # two rows of panels and three colour bars


def test_markdown_and_html_tables_carry_the_same_cells(tmp_path):
    summary = make_summary(tmp_path, tmp_path / "cohort")
    markdown = format_tables(summary)
    for table in summary_tables(summary):
        fragment = to_html(table)
        assert f"### {table.title}" in markdown and html.escape(table.title) in fragment
        for cell in [c for row in table.rows for c in row if c] + list(table.notes):
            assert cell in markdown and html.escape(cell) in fragment, cell


def test_a_model_that_generates_its_masks_is_not_reported_as_lacking_a_segmenter():
    from oncodiff.evaluation.report.page import _caveats, _segmenter

    skipped = {"trained": False, "reason": "model.generate_mask: every sample carries its own mask"}
    generating = {"config": {"model": {"generate_mask": True}}, "segmenter": skipped, "test_cases": ["a"] * 20}
    assert not any("segmenter" in note.lower() for note in _caveats(generating, []))
    assert "generates each sample's tumour mask" in _segmenter(skipped, generates_masks=True)
    missing = {**generating, "config": {"model": {"generate_mask": False}}}  # no segmenter and no masks: warn
    assert any("not meaningful" in note for note in _caveats(missing, []))
