"""Markdown tables of an evaluation summary: every method side by side, mean ± std over cases."""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_COLUMNS = (("ssim_tumor", "SSIM tumour"), ("psnr_tumor", "PSNR tumour"), ("mae_tumor", "MAE tumour"),
                 ("ssim_bbox", "SSIM box"), ("psnr_bbox", "PSNR box"), ("ssim", "SSIM image"),
                 ("psnr", "PSNR image"), ("mae", "MAE image"))
SIZE_COLUMNS = (("change_mae_pp", "|Δvol error| (pp)"), ("change_bias_pp", "bias (pp)"), ("pearson_r", "Pearson r"),
                ("response_agreement", "response agreement"))
RESPONSE_COLUMNS = ("balanced_accuracy", "f1", "precision", "recall", "auc")


def format_tables(summary: dict) -> str:
    """All tables of ``summary`` (see evaluate.py) as one markdown document."""
    parts = [_image_table(summary), _size_table(summary), _uncertainty_table(summary),
             _counterfactual_table(summary.get("counterfactual", {})), _distribution_table(summary),
             _outcome_tables(summary.get("outcomes", {}))]
    return "\n\n".join(p for p in parts if p) + "\n"


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


def _label(summary: dict, method: str) -> str:
    return summary["methods"][method]["label"]


def _image_table(summary: dict) -> str:
    aggregate = summary["image_metrics"]["aggregate"]
    rows = [[_label(summary, m)] + [mean_std(aggregate[m].get(k), 2 if k.startswith("psnr") else 3)
                                    for k, _ in IMAGE_COLUMNS] for m in aggregate]
    n = len(summary.get("test_cases", []))
    return f"### Image metrics on {n} test cases (mean ± std over cases; tumour = baseline mask)\n\n" + \
        markdown(["method", *(title for _, title in IMAGE_COLUMNS)], rows)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _size_table(summary: dict) -> str:
    rows = []
    for method, scores in summary["size"].items():
        if "status" in scores:
            rows.append([_label(summary, method), scores["status"], "", "", ""])
        else:
            rows.append([_label(summary, method)] + [_num(scores.get(k), 2 if "pp" in k else 3) for k, _ in SIZE_COLUMNS])
    return "### Tumour volume change vs ground-truth follow-up masks (one segmenter for all methods)\n\n" + \
        markdown(["method", *(title for _, title in SIZE_COLUMNS)], rows)


def _uncertainty_table(summary: dict) -> str:
    rows = []
    for method, u in summary["uncertainty"].items():
        if "coverage" not in u:
            continue
        empirical = dict(zip(u["coverage"]["nominal"], u["coverage"]["empirical"]))
        cells = [_num(empirical.get(level), 2) for level in (0.5, 0.9)]
        rows.append([_label(summary, method), *cells, _num(u["spread_error"].get("spearman_rho"), 2)])
    if not rows:
        return ""
    return "### Uncertainty: coverage of the true volume change by the sample interval\n\n" + \
        markdown(["method", "coverage @50%", "coverage @90%", "spread-error Spearman ρ"], rows)


def _counterfactual_table(cf: dict) -> str:
    if "status" in cf:
        return f"### Counterfactuals\n\n{cf['status']}"
    rows = [["cases scored", str(cf["n_scored"])],
            ["volume change moves the right way under the flipped class", _num(cf["fraction_right_direction"], 2)],
            ["tumour MAE to counterfactual truth", _num(cf["tumor_mae_to_counterfactual_truth"], 4)],
            ["tumour MAE to factual truth", _num(cf["tumor_mae_to_factual_truth"], 4)],
            ["fraction closer to counterfactual truth", _num(cf["closer_to_counterfactual_truth"], 2)]]
    return "### Counterfactuals (prediction under the opposite response class)\n\n" + markdown(["", "value"], rows)


def _distribution_table(summary: dict) -> str:
    dist = summary["distribution"]
    rows = [[_label(summary, m), _num(v["mmd"], 4)] for m, v in dist.items() if isinstance(v, dict) and "mmd" in v]
    notes = [f"FID: {dist['fid'].get('status')}", f"LPIPS: {dist['lpips'].get('status')}"]
    return "### Distribution distance to the true follow-ups (MMD², RBF kernel)\n\n" + \
        markdown(["method", "MMD²"], rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def _outcome_tables(outcomes: dict) -> str:
    parts = []
    response = outcomes.get("response", {})
    if "status" in response:
        parts.append(f"### Response prediction\n\n{response['status']}")
    elif response:
        rows = [[name, *(_cv(r, k) for k in RESPONSE_COLUMNS), _num((r.get("test_split_only") or {}).get("balanced_accuracy"), 2)]
                for name, r in response.items()]
        parts.append(f"### Response prediction, {outcomes.get('folds')}-fold patient-grouped CV (mean ± std over folds)\n\n"
                     + markdown(["model", *RESPONSE_COLUMNS, "bal. acc., test-split patients"], rows))
    survival = outcomes.get("survival", {})
    if "status" in survival:
        parts.append(f"### Survival prediction\n\n{survival['status']}")
    elif survival:
        rows = [[name, _cv(r, "c_index"), _num((r.get("test_split_only") or {}).get("c_index"), 2)]
                for name, r in survival.items()]
        parts.append("### Survival prediction (c-index, mean ± std over folds)\n\n"
                     + markdown(["model", "c-index", "c-index, test-split patients"], rows))
    if outcomes.get("caveat"):
        parts.append("Note: " + " ".join(outcomes["caveat"].split()))
    return "\n\n".join(parts)


def _cv(result: dict, metric: str) -> str:
    mean, std = result.get("mean", {}).get(metric), result.get("std", {}).get(metric)
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")
