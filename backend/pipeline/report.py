"""The build report: ``report.json`` (stage timings and metrics) and ``report.html`` plus a
``summary.png`` with the input, stylized and avatar frames side by side; the page also shows the
export's turntable strip (``turntable.png``) with its novel-view coverage (``turntable.json``)."""

from __future__ import annotations

import html
import os
from typing import Any

from ..fileio import write_bytes, write_image, write_json


def side_by_side(columns: list[tuple[str, str]], height: int = 256):
    """One labelled row of images (label, path) scaled to ``height``; missing paths are skipped."""
    from PIL import Image, ImageDraw

    tiles = []
    for label, path in columns:
        if not path or not os.path.exists(path):
            continue
        with Image.open(path) as image:
            image = image.convert("RGB")
            width = max(1, round(image.width * height / image.height))
            tile = image.resize((width, height), Image.LANCZOS)
        ImageDraw.Draw(tile).rectangle((0, 0, 8 * len(label) + 8, 16), fill=(0, 0, 0))
        ImageDraw.Draw(tile).text((4, 2), label, fill=(255, 255, 255))
        tiles.append(tile)
    if not tiles:
        return None
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 4
    return canvas


def write_report(out: str, summary: dict[str, Any], rows: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Write report.json, summary.png and report.html into ``out``; return their paths."""
    paths = {"json": os.path.join(out, "report.json"), "html": os.path.join(out, "report.html"),
             "png": os.path.join(out, "summary.png")}
    write_json(paths["json"], summary)
    strips = [side_by_side(row) for row in rows]
    strips = [s for s in strips if s is not None]
    if strips:
        from PIL import Image

        width = max(s.width for s in strips)
        page = Image.new("RGB", (width, sum(s.height + 4 for s in strips)), "white")
        y = 0
        for strip in strips:
            page.paste(strip, (0, y))
            y += strip.height + 4
        write_image(paths["png"], page)
    else:
        paths.pop("png")
    turntable = _turntable(out)
    write_bytes(paths["html"], _html(summary, "summary.png" if "png" in paths else None,
                                     turntable).encode())
    return paths


def _turntable(out: str) -> str:
    """The HTML of the turntable strip and its coverage, or "" when the build has none."""
    from ..errors import ToonSplatError
    from ..fileio import read_json

    if not os.path.exists(os.path.join(out, "turntable.png")):
        return ""
    try:
        report = read_json(os.path.join(out, "turntable.json"), "turntable coverage")
    except ToonSplatError:
        report = {}
    coverage = ", ".join(f"{k[len('coverage_'):]} deg: {v:.1%} (surface "
                         f"{report.get('surface_' + k[len('coverage_'):], float('nan')):.1%})"
                         for k, v in report.items() if k.startswith("coverage_")
                         and k != "coverage_min" and isinstance(v, (int, float)))
    frame = report.get("frame")
    caption = (f"Turntable, yaw -60..+60 deg (positive: the subject's left), expression of "
               f"frame {frame}. Coverage of the head (alpha >= 0.9): {coverage or 'n/a'}.")
    return (f'<h2>Novel views</h2><p>{html.escape(caption)}</p>'
            '<p><img src="turntable.png" style="max-width:100%"></p>')


def _html(summary: dict[str, Any], picture: str | None, turntable: str = "") -> str:
    rows = []
    for stage in summary.get("stages", []):
        metrics = ", ".join(f"{k}: {_fmt(v)}" for k, v in stage.get("metrics", {}).items()
                            if not isinstance(v, (dict, list)))
        status = "skipped (complete)" if stage.get("skipped") else f"{stage.get('seconds', 0):.1f} s"
        rows.append(f"<tr><td>{html.escape(stage['name'])}</td><td>{status}</td>"
                    f"<td>{html.escape(metrics)}</td></tr>")
    image = f'<p><img src="{picture}" style="max-width:100%"></p>' if picture else ""
    title = html.escape(str(summary.get("title", "ToonSplat build")))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;text-align:left}"
            "</style></head><body>"
            f"<h1>{title}</h1>{image}<table><tr><th>stage</th><th>time</th><th>metrics</th></tr>"
            + "".join(rows) + "</table>" + turntable
            + f"<pre>{html.escape(str(summary.get('inputs', '')))}</pre></body></html>\n")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
