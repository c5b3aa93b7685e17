"""report.json -> report.md and a self-contained report.html (figures inlined as data URIs).

Both are built from the same list of sections and tables, so they always say the same thing;
the markdown leaves the figures to the HTML.
"""

from __future__ import annotations

import base64
import html as _html
from dataclasses import dataclass, field

from distillery.evaluation.plots import Plot

DASH = "—"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Section:
    key: str  # figures named `key` or `key-...` belong here
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def sections(report: dict) -> list[Section]:
    keys = [m["key"] for m in report["models"]]
    teacher, students = keys[0], keys[1:]
    data = report["data"]
    out = [Section("models", "Models", [
        f"Pipeline `{report['pipeline']}`, data `{data['source']}` (fingerprint "
        f"`{data['fingerprint']}`): {data['val_rows']} validation and {data['test_rows']} test "
        f"rows, {data['num_features']} features, {data['num_classes']} classes."], [Table(
            ["model", "role", "params", "architecture", "created", "location"],
            [[m["key"], m["role"], fmt(m["params"]), _arch(m["architecture"]), m["created"],
              m["location"] + ("" if m["same_data_spec"] else " (trained on other data)")]
             for m in report["models"]])])]

    gates = report["gates"]["results"]
    verdict = Section("verdict", "Verdict", [report["verdict"][k] + "." for k in students])
    if gates:
        verdict.text.append("Gates: " + ("all passed." if report["gates"]["passed"]
                                         else "FAILED."))
        verdict.tables.append(Table(["gate", "model", "value", "threshold", "result"], [
            [r["gate"], r["model"], fmt(r["value"]), fmt(r["threshold"]), fmt(r["passed"])]
            for r in gates]))
    out.append(verdict)

    q = report["quality"]
    k = q[teacher]["top_k"]
    rows = [["accuracy", *(fmt(q[key]["accuracy"]) for key in keys)],
            ["macro-F1", *(fmt(q[key]["macro_f1"]) for key in keys)],
            [f"top-{k} accuracy", *(fmt(q[key]["top_k_accuracy"]) for key in keys)]]
    rows += [[f"class {c} accuracy", *(fmt(q[key]["per_class_accuracy"][c]) for key in keys)]
             for c in range(data["num_classes"])]
    out.append(Section("quality", "Task quality (test split)", [], [Table(["", *keys], rows)]))

    fid = report["fidelity"]

    def fidelity_row(label, name, digits=4):
        return [label, DASH, *(fmt(fid[key][name], digits) for key in students)]
    out.append(Section("fidelity", "Fidelity to the teacher (test split)", [
        "KL is mean KL(teacher || model) of the temperature-1 distributions, in nats. "
        "Agreement on the rows the teacher gets wrong is high when a model copies its mistakes."],
        [Table(["", *keys], [
            fidelity_row("top-1 agreement", "agreement"),
            fidelity_row("KL(teacher || model)", "kl_teacher_student"),
            fidelity_row("agreement where teacher right", "agreement_teacher_right"),
            fidelity_row("agreement where teacher wrong", "agreement_teacher_wrong"),
            ["rows teacher right / wrong", DASH, *(
                f"{fid[key]['teacher_right_rows']} / {fid[key]['teacher_wrong_rows']}"
                for key in students)]])]))

    cal = report["calibration"]
    out.append(Section("calibration", "Calibration (test split)", [
        "ECE over 15 equal-width confidence bins (Guo et al. 2017). The temperature minimizes "
        "NLL on the validation split; ECE and NLL after it are on the test split."],
        [Table(["", *keys], [[label, *(fmt(cal[key][name]) for key in keys)]
                             for label, name in (("ECE", "ece"), ("NLL", "nll"),
                                                 ("fitted temperature", "temperature"),
                                                 ("ECE after temperature",
                                                  "ece_after_temperature"),
                                                 ("NLL after temperature",
                                                  "nll_after_temperature"))])]))

    robust = Section("robustness", "Robustness under distribution shift")
    if not report["robustness"]:
        robust.text.append("No shifts configured (`evaluate.shifts`).")
    for shift in report["robustness"]:
        robust.tables.append(Table(
            [shift["parameter"], *(f"{key} acc" for key in keys),
             *(f"{key} agreement" for key in students)],
            [[f"{sev:g}" + (" (clean)" if i == 0 else ""),
              *(fmt(shift["accuracy"][key][i]) for key in keys),
              *(fmt(shift["agreement"][key][i]) for key in students)]
             for i, sev in enumerate(shift["severities"])], title=shift["kind"]))
    out.append(robust)

    out.append(efficiency_section(report, keys))

    failures = Section("failures", "Failure analysis (test split)")
    for key in students:
        f = report["failures"][key]
        failures.tables.append(Table(
            ["class", "rows", "agreement", "teacher accuracy", f"{key} accuracy"],
            [[str(c["class"]), fmt(c["rows"]), fmt(c["agreement"]), fmt(c["teacher_accuracy"]),
              fmt(c["accuracy"])] for c in f["divergent_classes"]],
            title=f"{key}: classes where it diverges most from the teacher "
                  f"({f['disagreements']} disagreements in all)"))
    out.append(failures)
    return out


def efficiency_section(report: dict, keys: list[str]) -> Section:
    eff = report["efficiency"]
    models = eff["models"]
    rows = [["parameters", *(fmt(models[k]["params"]) for k in keys)],
            ["size on disk (KiB)", *(", ".join(f"{n} {b / 1024:.1f}" for n, b in
                                               models[k]["size_bytes"].items()) for k in keys)]]
    for b in eff["batch_sizes"]:
        for p in ("p50", "p95", "p99"):
            rows.append([f"latency {p}, batch {b} (ms)",
                         *(fmt(models[k]["latency_s"][b][p] * 1e3, 3) for k in keys)])
        rows.append([f"throughput, batch {b} (rows/s)",
                     *(fmt(round(models[k]["throughput_rows_per_s"][b])) for k in keys)])
    rows.append([f"peak inference memory, batch {eff['largest_batch']} (MiB)", *(
        DASH if models[k]["peak_memory_bytes"] is None
        else f"{models[k]['peak_memory_bytes'] / 2 ** 20:.2f}" for k in keys)])

    def times(value):
        return DASH if value is None else f"{value:.2f}x"
    versus = [["params", *(times(models[k]["vs_teacher"]["params"]) for k in keys)],
              ["size on disk", *(times(models[k]["vs_teacher"]["size_bytes"]) for k in keys)]]
    for b in eff["batch_sizes"]:
        versus.append([f"p50 latency, batch {b}",
                       *(times(models[k]["vs_teacher"]["latency_p50"][b]) for k in keys)])
        versus.append([f"throughput, batch {b}",
                       *(times(models[k]["vs_teacher"]["throughput"][b]) for k in keys)])
    versus.append(["peak memory", *(times(models[k]["vs_teacher"]["peak_memory"])
                                    for k in keys)])
    counts = ", ".join(f"batch {b}: {models[keys[0]]['latency_s'][b]['repetitions']}"
                       for b in eff["batch_sizes"])
    share = min(t["cpu_share"] for k in keys for t in models[k]["latency_s"].values())
    return Section("efficiency", "Efficiency", [
        f"Measured on {eff['host']['cpu']} with {eff['threads']} thread (torch.set_num_threads"
        f"(1)), each model alone in a fresh worker process, warm-up runs excluded (timed runs "
        f"of the teacher: {counts}). Percentiles interpolate linearly between order statistics; "
        f"throughput is rows / total timed seconds. Peak memory: {eff['memory_method']}. "
        f"CPU share (CPU time / wall time while timing), lowest of all runs: {share:.2f}"
        + ("" if share >= 0.9 else " — other work competed for the CPU; timings are inflated")
        + "."], [
        Table(["", *keys], rows),
        Table(["vs teacher (>1 = cheaper/faster)", *keys], versus,
              title="Relative to the teacher")])


def _arch(arch: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in arch.items())


# ---------------------------------------------------------------- markdown

def markdown(report: dict) -> str:
    lines = [f"# Evaluation report `{report['run_id']}`", "",
             f"Created {report['created']}; figures are in report.html next to this file.", ""]
    for section in sections(report):
        lines += [f"## {section.title}", ""]
        for paragraph in section.text:
            lines += [paragraph, ""]
        for table in section.tables:
            if table.title:
                lines += [f"**{table.title}**", ""]
            lines += [_md_row(table.header), _md_row(["---"] * len(table.header)),
                      *(_md_row(row) for row in table.rows), ""]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# ---------------------------------------------------------------- html

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 12px; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def html(report: dict, plots: list[Plot]) -> str:
    e = _html.escape
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>Evaluation {e(report['run_id'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>Evaluation report <code>{e(report['run_id'])}</code></h1>",
             f"<p>Created {e(report['created'])} in {report['timing_s']['total']:.0f} s. "
             f"Machine-readable: report.json (schema version {report['schema_version']}).</p>"]
    for section in sections(report):
        parts.append(f"<h2 id='{section.key}'>{e(section.title)}</h2>")
        for paragraph in section.text:
            parts.append(f"<p>{_inline_code(e(paragraph))}</p>")
        for table in section.tables:
            parts.append("<table>" + (f"<caption>{e(table.title)}</caption>" if table.title
                                      else ""))
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        for plot in plots:
            if plot.name == section.key or plot.name.startswith(section.key + "-") or (
                    section.key == "failures" and plot.name.startswith("disagreements-")):
                data = base64.b64encode(plot.png).decode()
                parts.append(f"<figure><img alt='{e(plot.caption)}' "
                             f"src='data:image/png;base64,{data}'>"
                             f"<figcaption>{e(plot.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline_code(text: str) -> str:
    """`x` -> <code>x</code> (on escaped text; backticks are never escaped)."""
    pieces = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
