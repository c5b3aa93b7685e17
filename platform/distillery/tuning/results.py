"""What a search leaves behind: the trial table, the Pareto set, the noise check, best.yaml
and the plot. Pure functions of the trial rows; no Ray.

A row is one trial: `trial` (Tune's trial id), `order` (of creation: the first is the spec's
own values), `status` (completed, stopped by ASHA, error), `epochs` run, `params`
({path: value}), the metric at its last epoch, and for completed trials the exported student
(`student`, `student_params`, `test_accuracy`, `test_agreement`).
"""

from __future__ import annotations

import io
import json
import math

import yaml

from distillery.config import PipelineSpec, SearchDim


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, where the first coordinate is maximised
    (accuracy) and the second minimised (size); a point dominates another when it is no worse
    in both and better in one. Sorted by the second coordinate."""
    front = [i for i, (a, c) in enumerate(points)
             if not any(a2 >= a and c2 <= c and (a2 > a or c2 < c) for a2, c2 in points)]
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def compare(best: float, default: float, n: int) -> dict:
    """Is `best` accuracy above `default` beyond sampling noise, both measured on the same `n`
    validation rows? Each accuracy's binomial standard error is sqrt(p (1 - p) / n); the
    difference's is the root of their squares' sum (treated as independent, which overstates
    it a little for the same rows). Beyond noise: more than 2 standard errors apart."""
    diff = best - default
    stderr = math.sqrt(best * (1 - best) / n + default * (1 - default) / n)
    z = diff / stderr if stderr else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {"difference": diff, "stderr": stderr, "z": z, "within_noise": abs(z) <= 2,
            "val_rows": n}


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The completed trial with the highest metric; the earlier trial on a tie."""
    done = [r for r in rows if r["status"] == "completed"]
    return max(done, key=lambda r: (r[metric], -r["order"])) if done else None


def best_yaml(spec: PipelineSpec, header: list[str]) -> str:
    """The complete spec (no tune section) as YAML under `# ` header lines."""
    body = yaml.safe_dump(spec.model_dump(mode="json", exclude={"tune"}), sort_keys=False)
    return "".join(f"# {line}\n" for line in header) + body


def markdown_table(rows: list[dict], metric: str, paths: list[str],
                   own: str | None = None) -> str:
    """Completed trials by metric, then stopped ones by how far they got, then errors; the
    trial `own` (the spec's own values) is marked."""
    rank = {"completed": 0, "stopped": 1, "error": 2}
    rows = sorted(rows, key=lambda r: (rank[r["status"]], -(r["epochs"] or 0),
                                       -(r[metric] or 0), r["order"]))
    head = ["trial", "status", "epochs", metric, *paths, "student params", "test accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"{r['trial']} (spec's values)" if r["trial"] == own else r["trial"]
        cells = [name, r["status"], _cell(r["epochs"]), _cell(r[metric]),
                 *(_cell(r["params"][p]) for p in paths), _cell(r.get("student_params")),
                 _cell(r.get("test_accuracy"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def plot_png(rows: list[dict], space: dict[str, SearchDim], metric: str, title: str,
             own: str | None = None) -> bytes:
    """One panel per numeric searched field (else one by trial order): the metric at each
    trial's last epoch against the field's value; completed trials filled, ASHA-stopped hollow,
    the spec's own values (trial `own`) as a square and the best as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    numeric = [p for p, d in space.items() if d.type != "choice" or all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in d.values)]
    scored = [r for r in rows if r[metric] is not None]
    best = best_row(rows, metric)
    panels = numeric or ["order"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, path in zip(axes[0], panels, strict=True):
        def x(r, path=path):
            return r["order"] if path == "order" else r["params"][path]

        for status, face in (("completed", "tab:blue"), ("stopped", "none")):
            group = [r for r in scored if r["status"] == status]
            ax.scatter([x(r) for r in group], [r[metric] for r in group], label=status,
                       facecolors=face, edgecolors="tab:blue")
        for r, marker, label in ((next((r for r in scored if r["trial"] == own), None), "s",
                                  "spec's values"), (best, "*", "best")):
            if r is not None:
                ax.scatter([x(r)], [r[metric]], marker=marker, s=160, facecolors="none",
                           edgecolors="tab:red" if label == "best" else "black", label=label)
        if path in space and space[path].type != "choice":
            dim = space[path]
            margin = (dim.upper / dim.lower) ** 0.04 if dim.type == "loguniform" else (
                0.04 * (dim.upper - dim.lower))
            if dim.type == "loguniform":
                ax.set_xscale("log")
                ax.set_xlim(dim.lower / margin, dim.upper * margin)
                ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.set_xlim(dim.lower - margin, dim.upper + margin)
        ax.set_xlabel(path)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()
