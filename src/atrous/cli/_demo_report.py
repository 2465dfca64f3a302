"""``atrous demo``'s ``report.md`` and ``report.html``: the metrics table, the learning curve,
the example images beside their ground truth and prediction, and the colour legend.

Each figure says which images it was measured on: the learning curve's validation mIoU on
the subset the training run validated on, the table on the full evaluation set.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_STYLE = (
    "body{font-family:sans-serif;max-width:900px;margin:2em auto}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
    "padding:4px 10px;text-align:left}img{max-width:100%}"
    ".swatch{display:inline-block;width:1.2em;height:1.2em;border:1px solid #888;"
    "vertical-align:middle;margin-right:.4em}"
)


@dataclass(frozen=True)
class Example:
    """One example's three pictures, as paths relative to the report."""

    image: str
    truth: str
    prediction: str


def legend(class_names: list[str], palette: np.ndarray) -> list[tuple[str, str]]:
    """``(class name, '#rrggbb')`` of each class, in class order: the colours every overlay
    of the report is drawn with."""
    return [
        (n, "#" + bytes(np.asarray(palette[k], np.uint8)).hex()) for k, n in enumerate(class_names)
    ]


def _what(s: dict[str, Any]) -> tuple[str, str, str]:
    """The sentences saying what the model is, what the table and the curve measured."""
    trained = f"{s['train_seconds']:.0f} s" if s["train_seconds"] else "reused"
    intro = (
        f"`{s['model']}` ({s['parameters'] / 1e6:.2f} M parameters), trained on the built-in "
        f"synthetic dataset ({trained})."
    )
    table = (
        f"The table is measured on the full evaluation set: {s['val_images']} validation "
        "images at full resolution with one confusion matrix (DeepLab's protocol)."
    )
    n = s.get("curve_val_images")
    subset = f"subset of {n} images" if n else "subset (its size was not recorded)"
    curve = (
        f"The learning curve's val mIoU (and its 'best val mIoU') is measured during training "
        f"on the run's validation {subset}, so it differs from the table's mIoU on "
        f"{s['val_images']} images."
    )
    return intro, table, curve


def _metric_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("mIoU", f"{100 * s['miou']:.1f}"),
        ("pixel accuracy", f"{100 * s['pixel_accuracy']:.1f}"),
        ("mean class accuracy", f"{100 * s['mean_class_accuracy']:.1f}"),
        ("frequency-weighted IoU", f"{100 * s['fw_iou']:.1f}"),
    ]


def _iou_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    return [(n, "absent" if v is None else f"{100 * v:.1f}") for n, v in s["iou"].items()]


def _markdown(s: dict[str, Any], examples: list[Example], colours: list[tuple[str, str]]) -> str:
    intro, table, curve = _what(s)
    swatch = '<span style="background:{c}">&nbsp;&nbsp;&nbsp;&nbsp;</span>'
    md = ["# atrous demo", "", intro, "", table, "", "| metric | value |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in _metric_rows(s)]
    md += ["", "| class | IoU |", "| --- | --- |", *[f"| {n} | {v} |" for n, v in _iou_rows(s)]]
    md += ["", curve, "", "![learning curve](learning_curve.png)", ""]
    md += ["Accuracy within a band around label boundaries (DeepLab v1/v2 trimap):", ""]
    md += ["![trimap](eval/trimap.png)", ""]
    md += [
        f"New images (multi-scale 0.75/1/1.25 + flip), {len(examples)} example(s): the "
        "image, its ground truth and the prediction, drawn with these colours:",
        "",
        "| colour | class |",
        "| --- | --- |",
        *[f"| {swatch.format(c=c)} `{c}` | {n} |" for n, c in colours],
        "",
        "| image | ground truth | prediction |",
        "| --- | --- | --- |",
        *[
            f"| ![image]({e.image}) | ![ground truth]({e.truth}) | ![prediction]({e.prediction}) |"
            for e in examples
        ],
        "",
        "![confusion matrix](eval/confusion.png)",
        "",
    ]
    return "\n".join(md)


def _html(s: dict[str, Any], examples: list[Example], colours: list[tuple[str, str]]) -> str:
    intro, table, curve = (html.escape(t) for t in _what(s))
    body = [f"<h1>atrous demo</h1><p>{intro}</p><p>{table}</p><table>"]
    body += [f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _metric_rows(s)]
    body.append("</table><table><tr><th>class</th><th>IoU</th></tr>")
    body += [f"<tr><td>{html.escape(n)}</td><td>{v}</td></tr>" for n, v in _iou_rows(s)]
    body.append(f"</table><p>{curve}</p>")
    body += ['<img src="learning_curve.png">', '<img src="eval/trimap.png">']
    body.append("<h2>New images: image, ground truth, prediction</h2><p class='legend'>")
    body += [
        f"<span><span class='swatch' style='background:{c}'></span>{html.escape(n)}</span> "
        for n, c in colours
    ]
    body.append("</p><table><tr><th>image</th><th>ground truth</th><th>prediction</th></tr>")
    body += [
        f"<tr><td><img src='{e.image}' alt='image'></td>"
        f"<td><img src='{e.truth}' alt='ground truth'></td>"
        f"<td><img src='{e.prediction}' alt='prediction'></td></tr>"
        for e in examples
    ]
    body.append('</table><img src="eval/confusion.png" width="600">')
    return (
        f"<!doctype html><meta charset='utf-8'><title>atrous demo</title><style>{_STYLE}</style>"
        + "\n".join(body)
    )


def write_report(
    out: Path, summary: dict[str, Any], examples: list[Example], colours: list[tuple[str, str]]
) -> None:
    """``out/report.md`` and ``out/report.html`` from the demo's ``summary`` (its metrics,
    ``val_images`` evaluated and ``curve_val_images`` validated on during training), the
    examples and the legend's ``(name, colour)`` rows."""
    (out / "report.md").write_text(_markdown(summary, examples, colours))
    (out / "report.html").write_text(_html(summary, examples, colours))
