"""Write a `QuantReport` as `report.json` and a self-contained `report.html`, atomically.

The HTML is rendered from `templates/report.html.j2` (Jinja2): every chart is inline SVG, with
no script, stylesheet, font or image fetched from anywhere, so the file opens offline.  This
module only turns numbers into chart coordinates; the markup lives in the template.

    y(v) = top + (v_max − clamp(v)) / (v_max − v_min) · plot_height        (SVG y grows downwards)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from edgekiln.compiler.atomic_dir import atomic_directory
from edgekiln.quantization.debugger import MAX_DB, QuantReport

TEMPLATES = Path(__file__).parent / "templates"
PLOT_HEIGHT = 220
TOP, BOTTOM, LEFT, RIGHT = 16, 28, 48, 16
MAX_BARS = 20


def write_report(report: QuantReport, destination: str | Path, force: bool = False) -> Path:
    """Write `destination/report.json` and `destination/report.html` (the folder appears whole or not at all)."""
    destination = Path(destination)
    html, data = render_html(report), report_json(report)
    with atomic_directory(destination, replace=force) as staging:
        (staging / "report.json").write_text(data, encoding="utf-8")
        (staging / "report.html").write_text(html, encoding="utf-8")
    return destination


def report_json(report: QuantReport) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def render_html(report: QuantReport) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["db"] = format_db
    environment.filters["ratio"] = lambda v: "–" if v is None else f"{v:.1f}x"
    environment.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    template = environment.get_template("report.html.j2")
    return template.render(report=report, max_db=MAX_DB, sqnr_chart=sqnr_chart(report),
                           sensitivity_chart=sensitivity_chart(report), fix_chart=fix_chart(report),
                           worst=report.worst_layers(15))


def format_db(value: float | None) -> str:
    if value is None:
        return "–"
    return "exact" if value >= MAX_DB else f"{value:.1f}"


# -- chart geometry ------------------------------------------------------------------------------

def _axis(values: list[float], floor: float = 0.0, ceiling: float = 40.0) -> tuple[float, float]:
    """A 10 dB-aligned range holding the values (exact ones sit on the top edge)."""
    finite = [v for v in values if v is not None and v < MAX_DB]
    low = min([floor, *finite])
    high = max([ceiling, *finite])
    return math.floor(low / 10) * 10, min(MAX_DB, math.ceil(high / 10) * 10)


def _scale(low: float, high: float, top: float, height: float):
    def y(value: float) -> float:
        clamped = min(max(value, low), high)
        return round(top + (high - clamped) / (high - low) * height, 2)
    return y


def _ticks(low: float, high: float, y) -> list[dict[str, Any]]:
    step = 10 if high - low <= 60 else 20
    return [{"y": y(v), "label": f"{v:g}"} for v in range(int(low), int(high) + 1, step)]


def sqnr_chart(report: QuantReport) -> dict[str, Any]:
    """Bars: layer-wise SQNR per layer in graph order; line: accumulated SQNR."""
    layers = [l for l in report.layers if l.sqnr_layerwise_db is not None or l.sqnr_accumulated_db is not None]
    low, high = _axis([v for l in layers for v in (l.sqnr_layerwise_db, l.sqnr_accumulated_db)])
    y = _scale(low, high, TOP, PLOT_HEIGHT)
    step = max(4.0, min(24.0, 900.0 / max(len(layers), 1)))
    zero = y(0.0)
    bars, points = [], []
    for i, layer in enumerate(layers):
        x = LEFT + i * step
        if layer.sqnr_layerwise_db is not None:
            top = y(layer.sqnr_layerwise_db)
            bars.append({"x": round(x + step * 0.15, 2), "y": min(top, zero), "w": round(step * 0.7, 2),
                         "h": round(abs(zero - top), 2), "quantized": layer.quantized,
                         "title": f"{layer.name} ({layer.op_type}, {layer.precision}): layer-wise "
                                  f"{format_db(layer.sqnr_layerwise_db)} dB, accumulated "
                                  f"{format_db(layer.sqnr_accumulated_db)} dB"})
        if layer.sqnr_accumulated_db is not None:
            points.append(f"{x + step / 2:.2f},{y(layer.sqnr_accumulated_db):.2f}")
    width = LEFT + len(layers) * step + RIGHT
    return {"width": round(width, 2), "height": TOP + PLOT_HEIGHT + BOTTOM, "left": LEFT,
            "right": round(width - RIGHT, 2), "bottom": TOP + PLOT_HEIGHT, "zero": zero, "ticks": _ticks(low, high, y),
            "bars": bars, "line": " ".join(points), "count": len(layers)}


def sensitivity_chart(report: QuantReport) -> dict[str, Any]:
    """Horizontal bars: each measured layer's share of the output noise, most sensitive first."""
    ranked = report.ranked()[:MAX_BARS]
    row, label_width, bar_width = 22, 340, 360
    rows = []
    for i, layer in enumerate(ranked):
        share = layer.noise_share or 0.0
        name = layer.name if len(layer.name) <= 48 else "…" + layer.name[-47:]
        rows.append({"y": TOP + i * row, "label": name, "w": round(max(share * bar_width, 1.0), 2),
                     "value": f"{format_db(layer.sensitivity_db)} dB alone · {share:.0%}",
                     "title": f"{layer.name} ({layer.op_type}): output SQNR {format_db(layer.sensitivity_db)} dB "
                              f"with only this layer quantized, {share:.1%} of the noise"})
    return {"width": label_width + bar_width + 200, "height": TOP + len(rows) * row + 8, "label_width": label_width,
            "bar_height": row - 6, "rows": rows}


def fix_chart(report: QuantReport) -> dict[str, Any] | None:
    """Output SQNR against the number of layers kept in float (the greedy fix)."""
    fix = report.fix
    if fix is None:
        return None
    kept = [s for s in fix.steps if s.kept]
    values = [fix.before_db, *(s.output_sqnr_db for s in kept)]
    target = fix.requested if fix.mode == "target_sqnr" else None
    low, high = _axis(values + ([target] if target is not None else []), floor=0.0, ceiling=20.0)
    y = _scale(low, high, TOP, PLOT_HEIGHT)
    step = max(24.0, min(60.0, 600.0 / max(len(values), 1)))
    points = [{"x": round(LEFT + i * step + step / 2, 2), "y": y(v), "label": format_db(v),
               "title": (f"{i} layer(s) kept in float: output SQNR {format_db(v)} dB"
                         + (f" (+{kept[i - 1].layer})" if i else ""))}
              for i, v in enumerate(values)]
    width = LEFT + len(values) * step + RIGHT
    return {"width": round(width, 2), "height": TOP + PLOT_HEIGHT + BOTTOM, "left": LEFT,
            "right": round(width - RIGHT, 2), "bottom": TOP + PLOT_HEIGHT, "ticks": _ticks(low, high, y),
            "points": points, "line": " ".join(f"{p['x']},{p['y']}" for p in points),
            "target": y(target) if target is not None else None, "target_label": format_db(target) if target else ""}
