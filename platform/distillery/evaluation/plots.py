"""The report's figures, drawn from report.json's sections (plus the test rows for signals).

matplotlib's object API (`Figure`, no pyplot): no global state and no GUI backend, so plotting
works in any process. Each figure comes back as PNG bytes for the HTML to inline.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

TEACHER_COLOR = "#333333"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22"]
DPI = 96


@dataclass(frozen=True)
class Plot:
    name: str  # the section it belongs to, e.g. "calibration"; unique per report
    caption: str
    png: bytes


def figures(report: dict, x_test: np.ndarray, signals: bool) -> list[Plot]:
    """Every figure of the report, in reading order. `signals`: rows are 1D signals (MNIST-1D),
    so disagreement examples are drawn as curves."""
    out = [per_class(report), reliability(report)]
    if report["robustness"]:
        out.append(robustness(report))
    out += [efficiency(report), confusion(report)]
    if signals:
        out += [disagreements(report, key, x_test) for key in report["failures"]
                if report["failures"][key].get("examples")]
    return out


def colors(report: dict) -> dict[str, str]:
    keys = [m["key"] for m in report["models"]]
    return {key: TEACHER_COLOR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
            for i, key in enumerate(keys)}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _panels(n: int, width: float, height: float, rows: int = 1):
    fig = Figure(figsize=(width * n, height * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, n, squeeze=False))
    return fig, axes


def reliability(report: dict) -> Plot:
    keys, color = list(report["calibration"]), colors(report)
    fig, axes = _panels(len(keys), 3.0, 3.0)
    for ax, key in zip(axes[0], keys, strict=True):
        cal = report["calibration"][key]
        bins = cal["reliability"]
        lower, upper = np.array(bins["lower"]), np.array(bins["upper"])
        acc = np.array([np.nan if a is None else a for a in bins["accuracy"]])
        conf = np.array([np.nan if c is None else c for c in bins["confidence"]])
        ax.bar(lower, np.nan_to_num(acc), width=upper - lower, align="edge", color=color[key],
               edgecolor="white", label="accuracy")
        ax.bar(lower, np.nan_to_num(np.abs(conf - acc)), bottom=np.nan_to_num(np.fmin(acc, conf)),
               width=upper - lower, align="edge", color="#d62728", alpha=0.3,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence",
               title=f"{key}\nECE {cal['ece']:.3f} (T={cal['temperature']:.2f}: "
                     f"{cal['ece_after_temperature']:.3f})")
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="upper left")
    return Plot("calibration", "Reliability diagrams: accuracy per confidence bin (15 bins); "
                "red = the gap to the bin's mean confidence.", _png(fig))


def robustness(report: dict) -> Plot:
    shifts, color = report["robustness"], colors(report)
    fig, axes = _panels(len(shifts), 3.0, 2.6, rows=2)
    for col, shift in enumerate(shifts):
        for row, metric in enumerate(("accuracy", "agreement")):
            ax = axes[row][col]
            for key, values in shift[metric].items():
                ax.plot(shift["severities"], values, marker="o", markersize=3,
                        color=color[key], label=key)
            ax.set(ylim=(0, 1.02), xlabel=shift["parameter"] if row else None)
            if col == 0:
                ax.set_ylabel(metric if row == 0 else "agreement with teacher")
            if row == 0:
                ax.set_title(shift["kind"], fontsize=9)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper center",
               ncols=len(shift["accuracy"]), fontsize=8)
    return Plot("robustness", "Accuracy (top) and agreement with the teacher (bottom) against "
                "each shift's severity; the first point is the clean test split.", _png(fig))


def per_class(report: dict) -> Plot:
    keys, color = list(report["quality"]), colors(report)
    num_classes = report["data"]["num_classes"]
    fig = Figure(figsize=(max(6.0, 0.6 * num_classes * max(1, len(keys) / 2)), 2.8),
                 layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        acc = [np.nan if a is None else a for a in report["quality"][key]["per_class_accuracy"]]
        ax.bar(np.arange(num_classes) + i * width - 0.4 + width / 2, acc, width=width,
               color=color[key], label=key)
    ax.set(xticks=range(num_classes), xlabel="class", ylabel="accuracy", ylim=(0, 1))
    fig.legend(loc="outside upper center", ncols=len(keys), fontsize=8)
    return Plot("quality", "Per-class accuracy on the test split.", _png(fig))


def confusion(report: dict) -> Plot:
    keys = list(report["failures"])
    fig, axes = _panels(len(keys), 3.2, 3.2)
    for ax, key in zip(axes[0], keys, strict=True):
        cm = np.array(report["failures"][key]["confusion"])
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if len(cm) <= 12:
            for (i, j), n in np.ndenumerate(cm):
                if n:
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black")
        ax.set(title=key, xlabel="predicted", xticks=range(len(cm)), yticks=range(len(cm)))
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("true")
    return Plot("failures", "Confusion matrices on the test split (counts; colour = share of "
                "the true class).", _png(fig))


def efficiency(report: dict) -> Plot:
    eff, color = report["efficiency"], colors(report)
    keys = list(eff["models"])
    smallest, largest = eff["batch_sizes"][0], eff["largest_batch"]
    panels = [
        ("parameters", lambda e: e["params"]),
        (f"p50 latency, batch {smallest} (ms)", lambda e: e["latency_s"][smallest]["p50"] * 1e3),
        (f"throughput, batch {largest} (rows/s)",
         lambda e: e["throughput_rows_per_s"][largest]),
    ]
    if all(eff["models"][k]["peak_memory_bytes"] is not None for k in keys):
        panels.append((f"peak inference memory, batch {largest} (MiB)",
                       lambda e: e["peak_memory_bytes"] / 2 ** 20))
    fig, axes = _panels(len(panels), 2.6, 2.4)
    for ax, (title, value) in zip(axes[0], panels, strict=True):
        values = [value(eff["models"][k]) for k in keys]
        ax.bar(range(len(keys)), values, color=[color[k] for k in keys])
        ax.set(xticks=range(len(keys)), title=title)
        ax.set_xticklabels(keys, rotation=20, ha="right", fontsize=7)
        ax.title.set_fontsize(9)
    return Plot("efficiency", "Cost per model, single-threaded, each model alone in a fresh "
                "process.", _png(fig))


def disagreements(report: dict, key: str, x_test: np.ndarray) -> Plot:
    examples = report["failures"][key]["examples"]
    cols = 4
    rows = -(-len(examples) // cols)
    fig = Figure(figsize=(2.2 * cols, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(examples):]:
        ax.set_axis_off()
    name = key if len(key) <= 10 else "model"  # run ids would not fit a panel's title
    for ax, ex in zip(axes.flat, examples, strict=False):
        ax.plot(x_test[ex["row"]], color=colors(report)[key], linewidth=1.2)
        ax.set_title(f"row {ex['row']}: true {ex['label']}, teacher {ex['teacher']}, "
                     f"{name} {ex['prediction']}", fontsize=7)
        ax.tick_params(labelsize=6)
    return Plot(f"disagreements-{key}", f"Test rows where {key} and the teacher disagree "
                f"({len(examples)} of {report['failures'][key]['disagreements']}).", _png(fig))
