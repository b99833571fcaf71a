"""Figures of the evaluation report, drawn with matplotlib's object API (no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`png_base64` encodes it for an
``<img src="data:image/png;base64,...">`` tag. Images are shown as axial slices in radiological
convention (patient's right on the left, anterior at the top) of the RAS crops the pipeline works on.
"""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from skimage.measure import block_reduce

PANEL_INCHES = 1.45
MAX_PANEL_PIXELS = 96  # larger slices are block-averaged first: the panel has no more pixels, the file stays small
IMAGE_CMAP, DRIFT_CMAP, STD_CMAP = "gray", "RdBu_r", "viridis"
# name: (colour, line style) of the tumour outlines drawn on the crops
CONTOURS = {"baseline tumour": ("#00e5ff", "--"), "true follow-up tumour": ("#ffd60a", "-"),
            "predicted tumour (in ≥ 50 % of samples)": ("#ff3b8d", "-")}
METHOD_ARRAYS = ("mean", "samples", "std", "tumor_probability")


def png_base64(fig: Figure, dpi: int = 80) -> str:
    """The figure as base64 PNG text, for a ``data:image/png;base64,`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def wrap(label: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


# ---------------------------------------------------------------------------------------------
# Per-case panels


@dataclass(frozen=True)
class CaseImages:
    """One case ready to draw: ``pre``, ``post``, ``tumor_mask``, ``post_mask`` as 2-D display slices
    (rows = anterior -> posterior, columns = patient right -> left), and per method ``mean``, ``std``,
    ``tumor_probability`` (H, W) and ``samples`` (S, H, W). ``slice_note`` says which slice of a
    3-D crop is shown ("" for 2-D data)."""

    key: str
    pre: np.ndarray
    post: np.ndarray
    tumor_mask: np.ndarray
    post_mask: np.ndarray
    methods: dict[str, dict[str, np.ndarray]]
    slice_note: str = ""


def load_case_images(figures: Mapping[str, np.ndarray], methods: Sequence[str]) -> list[CaseImages]:
    """The cases of ``figures.npz`` (keys ``pre`` (N, *spatial), ``<method>/samples`` (N, S, *spatial),
    ...). A 3-D crop is cut at the axial slice with the most baseline + follow-up tumour."""
    cases = []
    for i, key in enumerate(np.asarray(figures["keys"]).tolist()):
        masks = figures["tumor_mask"][i] + figures["post_mask"][i]
        z, note = None, ""
        if masks.ndim == 3:
            area = masks.reshape(-1, masks.shape[-1]).sum(axis=0)
            z = int(area.argmax()) if area.any() else masks.shape[-1] // 2
            note = f"axial slice {z + 1} of {masks.shape[-1]}, the one with most tumour"
        per_method = {m: {name: _display(figures[f"{m}/{name}"][i], z) for name in METHOD_ARRAYS}
                      for m in methods if all(f"{m}/{name}" in figures for name in METHOD_ARRAYS)}
        cases.append(CaseImages(str(key), *(_display(figures[k][i], z) for k in ("pre", "post", "tumor_mask", "post_mask")),
                                methods=per_method, slice_note=note))
    return cases


def _display(array: np.ndarray, z: int | None) -> np.ndarray:
    """(..., X, Y[, Z]) RAS -> (..., Y, X) flipped so that anterior is up and the patient's right is left."""
    array = np.asarray(array, dtype=np.float32)
    if z is not None:
        array = array[..., z]
    return np.flip(np.swapaxes(array, -1, -2), axis=(-2, -1))


@dataclass(frozen=True)
class _Windows:
    image: Normalize
    drift: Normalize
    std: Normalize
    crop: tuple[slice, slice]


def _windows(case: CaseImages) -> _Windows:
    """One intensity window per case for all images, a symmetric one for drifts, one for the spread,
    and the tumour crop."""
    low, high = np.percentile(np.concatenate([case.pre.ravel(), case.post.ravel()]), [1, 99])
    high = high if high > low else low + 1.0
    # The true drift sets the drift scale, so every method is read against it (a far-off baseline saturates
    # instead of flattening the others); the predictions' scale is the fallback when nothing changed.
    drift = float(np.percentile(np.abs(case.post - case.pre), 99.5))
    if drift == 0:
        drift = max((float(np.percentile(np.abs(m["mean"] - case.pre), 99.5)) for m in case.methods.values()), default=0)
    spreads = [float(np.percentile(m["std"], 99)) for m in case.methods.values()]
    std = max(spreads, default=0.0)
    # the crop follows the true tumour only: a stray predicted blob elsewhere must not zoom the view out
    return _Windows(Normalize(low, high), Normalize(-drift, drift) if drift > 0 else Normalize(-1e-3, 1e-3),
                    Normalize(0.0, std if std > 0 else 1.0), _crop(np.stack([case.tumor_mask, case.post_mask]) >= 0.5))


def _crop(masks: np.ndarray) -> tuple[slice, slice]:
    """A square box around every tumour voxel of ``masks`` (K, H, W), with half its size as margin on
    each side (at least 8 voxels across)."""
    height, width = masks.shape[-2:]
    rows, cols = np.nonzero(masks.any(axis=0))
    if rows.size == 0:
        return slice(0, height), slice(0, width)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    size = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    half = max(int(size), 4)  # box = 2 * size + 1 voxels across
    box = [(int(max(0, round(c) - half)), int(min(n, round(c) + half + 1))) for c, n in zip(centre, (height, width))]
    return slice(*box[0]), slice(*box[1])


def case_figure(case: CaseImages, labels: Mapping[str, str]) -> Figure:
    """Top row: pre, true post, the pre crop, the true drift and the true post crop. One row per
    method: mean, two samples, drift (mean - pre), spread (std over samples) and the mean's crop."""
    methods = [m for m in labels if m in case.methods]
    rows = 1 + len(methods)
    fig = Figure(figsize=(PANEL_INCHES * 6 + 1.3, PANEL_INCHES * rows + 0.9), layout="constrained")
    grid = fig.add_gridspec(rows + 1, 6, height_ratios=[1.0] * rows + [0.08])
    axes = np.array([[fig.add_subplot(grid[r, c], xticks=[], yticks=[]) for c in range(6)] for r in range(rows)])
    windows = _windows(case)
    _truth_row(axes[0], case, windows)
    for row, method in enumerate(methods, start=1):
        _method_row(axes[row], case, method, labels[method], windows, titles=row == 1)
    bars = ((grid[-1, 0:3], windows.image, IMAGE_CMAP, "intensity (normalised; one window for every image of the case)"),
            (grid[-1, 3], windows.drift, DRIFT_CMAP, "drift = post − pre"),
            (grid[-1, 4], windows.std, STD_CMAP, "std over samples"))
    for cell, norm, cmap, label in bars:
        bar = fig.colorbar(ScalarMappable(norm, cmap), cax=fig.add_subplot(cell), orientation="horizontal")
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def _fit(image: np.ndarray) -> np.ndarray:
    factor = -(-max(image.shape) // MAX_PANEL_PIXELS)
    if factor == 1:
        return image
    height, width = (n - n % factor for n in image.shape)  # whole blocks only: no padded, darkened border
    return block_reduce(image[:height, :width], (factor, factor), np.mean)


def _show(ax, image: np.ndarray, norm: Normalize, cmap: str, title: str | None = None) -> None:
    # nearest: voxels stay sharp squares, and repeated pixels compress well in the PNG
    ax.imshow(_fit(image), norm=norm, cmap=cmap, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=8)


def _outline(ax, mask: np.ndarray, name: str) -> None:
    colour, style = CONTOURS[name]
    mask = _fit(mask.astype(np.float32)) >= 0.5
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linestyles=style, linewidths=1.2)


def _row_label(ax, label: str) -> None:
    ax.set_ylabel(wrap(label, 16), fontsize=8, rotation=0, ha="right", va="center", labelpad=6)


def _empty(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.35", transform=ax.transAxes)


def _truth_row(axes, case: CaseImages, windows: _Windows) -> None:
    rows, cols = windows.crop
    _show(axes[0], case.pre, windows.image, IMAGE_CMAP, "pre (baseline)")
    _show(axes[1], case.post, windows.image, IMAGE_CMAP, "true post (follow-up)")
    _show(axes[2], case.pre[rows, cols], windows.image, IMAGE_CMAP, "pre, tumour crop")
    _outline(axes[2], case.tumor_mask[rows, cols], "baseline tumour")
    _show(axes[3], case.post - case.pre, windows.drift, DRIFT_CMAP, "true drift (post − pre)")
    axes[4].axis("off")
    handles = [Line2D([], [], color=c, linestyle=s, linewidth=1.5, label=n) for n, (c, s) in CONTOURS.items()]
    axes[4].legend(handles=handles, loc="center", fontsize=6.5, frameon=False, title="crop outlines",
                   title_fontsize=7)
    _show(axes[5], case.post[rows, cols], windows.image, IMAGE_CMAP, "true post, tumour crop")
    _outline(axes[5], case.tumor_mask[rows, cols], "baseline tumour")
    _outline(axes[5], case.post_mask[rows, cols], "true follow-up tumour")
    _row_label(axes[0], "ground truth")


def _method_row(axes, case: CaseImages, method: str, label: str, windows: _Windows, titles: bool) -> None:
    arrays, (rows, cols) = case.methods[method], windows.crop
    names = ("mean prediction", "sample 1", "sample 2", "drift (mean − pre)", "uncertainty (std)", "mean, tumour crop")
    _show(axes[0], arrays["mean"], windows.image, IMAGE_CMAP)
    samples = arrays["samples"]
    for k in (0, 1):
        if k < len(samples) and len(samples) > 1:
            _show(axes[1 + k], samples[k], windows.image, IMAGE_CMAP)
        else:
            _empty(axes[1 + k], "one prediction\nper case\n(deterministic)")
    _show(axes[3], arrays["mean"] - case.pre, windows.drift, DRIFT_CMAP)
    if len(samples) > 1:
        _show(axes[4], arrays["std"], windows.std, STD_CMAP)
    else:
        _empty(axes[4], "no spread\n(deterministic)")
    _show(axes[5], arrays["mean"][rows, cols], windows.image, IMAGE_CMAP)
    for mask, name in ((case.tumor_mask, "baseline tumour"), (case.post_mask, "true follow-up tumour"),
                       (arrays["tumor_probability"], "predicted tumour (in ≥ 50 % of samples)")):
        _outline(axes[5], mask[rows, cols], name)
    _row_label(axes[0], label)
    if titles:
        for ax, name in zip(axes, names):
            ax.set_title(name, fontsize=8)


# ---------------------------------------------------------------------------------------------
# Summary plots


def ssim_histogram(per_case: Sequence[Mapping], labels: Mapping[str, str]) -> Figure:
    """Per-case SSIM inside the baseline tumour and over the whole image, one row per method
    (I-SPY DDPM paper, Fig. 6), on shared axes."""
    methods = [m for m in labels if any(r.get("method") == m for r in per_case)]
    columns = ("ssim_tumor", "ssim")
    values = {(m, k): _finite([r.get(k) for r in per_case if r.get("method") == m]) for m in methods for k in columns}
    every = np.concatenate(list(values.values()) + [np.array([0.0, 1.0])])
    bins = np.linspace(min(0.0, float(every.min())), 1.0, 26)
    fig = Figure(figsize=(10.0, 0.6 + 1.0 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), 2, squeeze=False, sharex=True, sharey=True)
    for row, method in enumerate(methods):
        axes[row, 0].set_title(labels[method], loc="left", fontsize=8.5, fontweight="bold")
        for ax, key in zip(axes[row], columns):
            _histogram(ax, values[method, key], sum(r.get("method") == method for r in per_case), bins)
    axes[0, 0].yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    for ax, text in zip(axes[-1], ("SSIM inside the baseline tumour", "SSIM over the whole image")):
        ax.set_xlabel(text + " (1 = identical to the true follow-up)", fontsize=8)
    return fig


def _finite(values: Sequence) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


def _histogram(ax, values: np.ndarray, n_cases: int, bins: np.ndarray) -> None:
    ax.hist(values, bins=bins, color="#4c72b0", edgecolor="white")
    ax.set_xlim(bins[0], bins[-1])
    ax.tick_params(labelsize=7)
    ax.set_ylabel("cases", fontsize=7.5)
    undefined = f", {n_cases - len(values)} undefined" if n_cases > len(values) else ""
    if len(values):
        ax.axvline(values.mean(), color="#c44e52", linestyle="--", linewidth=1,
                   label=f"mean {values.mean():.3f} (n = {len(values)}{undefined})")
        ax.legend(fontsize=7, loc="best", handlelength=1.5, framealpha=0.8)
    else:
        ax.text(0.5, 0.5, f"no defined value{undefined}", transform=ax.transAxes, ha="center", fontsize=7)


def calibration_figure(curves: Mapping[str, Mapping], labels: Mapping[str, str]) -> Figure:
    """Nominal vs empirical coverage of the true volume change, one line per method; the diagonal
    is perfect calibration, below it = overconfident. ``curves``: method -> calibration_curve() dict."""
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="ideal (calibrated)")
    markers = "osD^v<>p*h"
    for k, (method, curve) in enumerate(curves.items()):
        points = [(p, e) for p, e in zip(curve["nominal"], curve["empirical"]) if e is not None]
        if points:
            x, y = zip(*points)
            # shrinking hollow markers keep methods with identical curves visible on top of each other
            ax.plot(x, y, marker=markers[k % len(markers)], markersize=max(11 - 2 * k, 4), markerfacecolor="none",
                    linewidth=1.5, alpha=0.9, label=f"{wrap(labels.get(method, method), 34)} (n = {curve.get('n_cases')})")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03))
    ax.set_xlabel("nominal coverage of the central sample interval", fontsize=9)
    ax.set_ylabel("empirical coverage (fraction of cases)", fontsize=9)
    fig.legend(fontsize=7.5, loc="outside right upper", frameon=False)
    return fig


def rank_histogram_figure(histograms: Mapping[str, Mapping], labels: Mapping[str, str]) -> Figure:
    """The truth's rank among the samples per tumour-box voxel (distribution_scores.rank_histogram), one panel
    per method, as the share of voxels per rank; the dashed line is the flat histogram of a calibrated ensemble."""
    fig = Figure(figsize=(3.0 * min(len(histograms), 3), 2.6 * -(-len(histograms) // 3)), layout="constrained")
    axes = fig.subplots(-(-len(histograms) // 3), min(len(histograms), 3), squeeze=False)
    for ax in axes.flat[len(histograms):]:
        ax.set_axis_off()
    for ax, (method, h) in zip(axes.flat, histograms.items()):
        counts = np.asarray(h["counts"], dtype=float)
        ax.bar(np.arange(len(counts)), counts / counts.sum(), color="#4c72b0", edgecolor="white", width=0.9)
        ax.axhline(1 / len(counts), color="#c44e52", linestyle="--", linewidth=1)
        ax.set_title(wrap(labels.get(method, method), 34), fontsize=8)
        ax.set_xticks(np.arange(len(counts)))
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"rank of the truth among {len(counts) - 1} samples", fontsize=7.5)
        ax.set_ylabel("share of voxels", fontsize=7.5)
    return fig


def reliability_figure(curve: Mapping, base_rate: float | None = None) -> Figure:
    """Predicted probability against the observed frequency per bin (evaluation.proper_scores.reliability_curve);
    marker area ~ cases in the bin; the diagonal is calibrated; the dotted line, the training class rate."""
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    counts = np.asarray(curve["count"], dtype=float)
    ax.plot(curve["predicted"], curve["observed"], color="C0", linewidth=1.2)
    ax.scatter(curve["predicted"], curve["observed"], s=20 + 180 * counts / max(counts.max(), 1), color="C0",
               zorder=3, label="chosen predictor (area ~ cases)")
    if base_rate is not None:
        ax.axvline(base_rate, color="C1", linestyle=":", label="training class rate")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03))
    ax.set_xlabel(f"predicted {curve.get('of', 'probability')}", fontsize=9)
    ax.set_ylabel("observed frequency", fontsize=9)
    ax.legend(fontsize=7.5, frameon=False, loc="upper left")
    return fig


def kaplan_meier_figure(km: Mapping) -> Figure:
    """``summary["outcomes"]["kaplan_meier"]`` drawn by :func:`oncodiff.outcomes.survival_curves.plot_kaplan_meier`."""
    from oncodiff.outcomes.survival_curves import KaplanMeierCurve, KaplanMeierData, plot_kaplan_meier

    arrays = ("time", "survival", "ci_lower", "ci_upper")
    curves = tuple(KaplanMeierCurve(label=c["label"], n=c["n"], events=c["events"],
                                    **{k: np.asarray(c[k], dtype=float) for k in arrays}) for c in km["curves"])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    plot_kaplan_meier(KaplanMeierData(curves, float(km["threshold"]), km.get("logrank_p")), fig.subplots())
    return fig


def training_curves_figure(metrics) -> Figure:
    """Losses and learning rate vs optimiser step from Lightning's ``metrics.csv`` (a DataFrame)."""
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    loss_ax, lr_ax = fig.subplots(1, 2)
    styles = {"train_loss_step": dict(alpha=0.4, linewidth=0.8, marker=".", markersize=3, label="train loss (per step)"),
              "train_loss_epoch": dict(marker="o", markersize=3, label="train loss (epoch mean)"),
              "val_loss": dict(marker="s", markersize=3, label="validation loss")}
    plotted = []
    for column, style in styles.items():
        if column in metrics:
            series = metrics[["step", column]].dropna()
            loss_ax.plot(series["step"], series[column], **style)
            plotted.append(series[column].to_numpy())
    if plotted and all((p > 0).all() for p in plotted):
        loss_ax.set_yscale("log")
    loss_ax.set(xlabel="optimiser step", ylabel="loss", title="losses")
    loss_ax.legend(fontsize=7)
    lr_columns = [c for c in metrics.columns if c.startswith("lr")]
    for column in lr_columns:
        series = metrics[["step", column]].dropna()
        lr_ax.plot(series["step"], series[column], marker=".", label=column.replace("lr-", "optimiser "))
    lr_ax.set(xlabel="optimiser step", ylabel="learning rate", title="learning rate")
    if lr_columns:
        lr_ax.legend(fontsize=7)
    else:
        _empty(lr_ax, "no learning-rate column in metrics.csv")
    return fig
