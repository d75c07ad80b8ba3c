"""Pictures drawn with OpenCV (already a dependency): text helpers and a line chart with axes, ticks and a legend.

Shared by ``visualize.py`` (alignment pictures), ``plot_training.py`` (training curves) and ``report.py`` (R@K and
hubness curves). Charts are BGR uint8 images; ``png_bytes`` encodes one for a file or an HTML page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK, GREY, GRID, WHITE = (30, 30, 30), (110, 110, 110), (232, 232, 232), (255, 255, 255)   # BGR
# A colour-blind-safe palette (Okabe-Ito), BGR.
PALETTE = ((178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (233, 180, 86), (66, 228, 240),
           (0, 0, 0))


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def put(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.5, colour=INK, thickness: int = 1) -> int:
    """Draw ``text`` with its baseline at y; returns its width."""
    text = _ascii(text)
    cv2.putText(img, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def text_width(text: str, scale: float, thickness: int = 1) -> int:
    return cv2.getTextSize(_ascii(text), FONT, scale, thickness)[0][0]


def wrap(text: str, width: int, scale: float, thickness: int = 1) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and text_width(trial, scale, thickness) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


@dataclass
class Series:
    """One line of a chart: points (x, y), drawn in ``colour``; NaN y values break the line."""
    label: str
    x: Sequence[float]
    y: Sequence[float]
    colour: tuple[int, int, int] = PALETTE[0]
    thickness: int = 2
    dashed: bool = False
    markers: bool = False


def nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten, at least 1 if ``integer``)
    covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if integer else step
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step - 1e-9)) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... within [lo, hi] (lo > 0)."""
    out, power = [], 10.0 ** math.floor(math.log10(lo))
    while power <= hi:
        out += [m * power for m in (1, 2, 5) if lo <= m * power <= hi]
        power *= 10
    return out


def tick_label(value: float) -> str:
    if abs(value) < 1e-12:
        return "0"
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e")


def _dashed_line(img: np.ndarray, p: tuple[int, int], q: tuple[int, int], colour, thickness: int,
                 dash: int = 8) -> None:
    length = math.hypot(q[0] - p[0], q[1] - p[1])
    for start in np.arange(0, length, 2 * dash):
        a, b = start / max(length, 1e-9), min(start + dash, length) / max(length, 1e-9)
        cv2.line(img, (int(p[0] + a * (q[0] - p[0])), int(p[1] + a * (q[1] - p[1]))),
                 (int(p[0] + b * (q[0] - p[0])), int(p[1] + b * (q[1] - p[1]))), colour, thickness, cv2.LINE_AA)


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, width: int = 640, height: int = 360,
               x_range: Optional[tuple[float, float]] = None, y_range: Optional[tuple[float, float]] = None,
               log_x: bool = False, log_y: bool = False, x_integer: bool = False,
               y_from_zero: bool = False) -> np.ndarray:
    """A line chart as a BGR image [height, width, 3]: title (wrapped), framed plot area with grid, ticks, axis
    labels and a legend under the title. Ranges default to the data's (log axes need positive values);
    ``x_integer`` keeps x ticks on whole numbers, ``y_from_zero`` starts the y axis at 0."""
    xs = np.concatenate([np.asarray(s.x, dtype=np.float64) for s in series]) if series else np.zeros(1)
    ys = np.concatenate([np.asarray(s.y, dtype=np.float64) for s in series]) if series else np.zeros(1)
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    x0, x1 = x_range or (float(xs.min()), float(xs.max()))
    y0, y1 = y_range or (float(ys.min()), float(ys.max()))
    if not log_y and y_range is None:
        pad = 0.05 * (y1 - y0) if y1 > y0 else max(abs(y1), 1.0) * 0.1
        y0, y1 = (0.0 if y_from_zero else y0 - pad), y1 + pad
    x_ticks = log_ticks(x0, x1) if log_x else nice_ticks(x0, x1, integer=x_integer)
    y_ticks = log_ticks(y0, y1) if log_y else nice_ticks(y0, y1)
    if not log_x and x_range is None:
        x0, x1 = min(x0, x_ticks[0]), max(x1, x_ticks[-1])
    if not log_y and y_range is None:
        y0, y1 = min(y0, y_ticks[0]), max(y1, y_ticks[-1])
    x_ticks = [t for t in x_ticks if x0 - 1e-9 <= t <= x1 + 1e-9]
    y_ticks = [t for t in y_ticks if y0 - 1e-9 <= t <= y1 + 1e-9]

    title_lines = wrap(title, width - 28, 0.6)
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, line in enumerate(title_lines):
        put(img, line, 14, 24 + 24 * i, 0.6, INK, 1)
    legend_y = 46 + 24 * (len(title_lines) - 1)
    x = 14
    for s in series:                                         # legend: one row of samples under the title
        w = 28 + text_width(s.label, 0.45) + 18
        if x + w > width - 10:
            x, legend_y = 14, legend_y + 20
        _draw_segment(img, (x, legend_y - 5), (x + 22, legend_y - 5), s)
        put(img, s.label, x + 28, legend_y, 0.45, INK)
        x += w
    left = 16 + max([text_width(tick_label(t), 0.42) for t in y_ticks] + [0]) + 24
    top, right, bottom = legend_y + 16, width - 18, height - 46

    def to_px(vx: float, vy: float) -> tuple[int, int]:
        fx = (math.log10(vx) - math.log10(x0)) / (math.log10(x1) - math.log10(x0) or 1) if log_x else \
            (vx - x0) / ((x1 - x0) or 1)
        fy = (math.log10(vy) - math.log10(y0)) / (math.log10(y1) - math.log10(y0) or 1) if log_y else \
            (vy - y0) / ((y1 - y0) or 1)
        return int(round(left + fx * (right - left))), int(round(bottom - fy * (bottom - top)))

    for t in x_ticks:
        px, _ = to_px(t, y0 if not log_y else max(y0, 1e-12))
        cv2.line(img, (px, top), (px, bottom), GRID, 1)
        label = tick_label(t)
        put(img, label, px - text_width(label, 0.42) // 2, bottom + 18, 0.42, GREY)
    for t in y_ticks:
        _, py = to_px(x0 if not log_x else max(x0, 1e-12), t)
        cv2.line(img, (left, py), (right, py), GRID, 1)
        label = tick_label(t)
        put(img, label, left - 8 - text_width(label, 0.42), py + 5, 0.42, GREY)
    cv2.rectangle(img, (left, top), (right, bottom), GREY, 1)
    put(img, xlabel, (left + right - text_width(xlabel, 0.45)) // 2, height - 12, 0.45, INK)
    rotated = np.full((24, text_width(ylabel, 0.45) + 8, 3), 255, dtype=np.uint8)
    put(rotated, ylabel, 4, 17, 0.45, INK)
    rotated = cv2.rotate(rotated, cv2.ROTATE_90_COUNTERCLOCKWISE)
    ry = max(top, (top + bottom - rotated.shape[0]) // 2)
    rh = min(rotated.shape[0], height - ry)
    img[ry:ry + rh, 2:2 + rotated.shape[1]] = rotated[:rh]

    plot = img[top:bottom + 1, left:right + 1].copy()     # lines are clipped to the plot area
    for s in series:
        points = [to_px(float(a), float(b)) if np.isfinite(b) else None for a, b in zip(s.x, s.y)]
        shifted = [None if p is None else (p[0] - left, p[1] - top) for p in points]
        for p, q in zip(shifted, shifted[1:]):
            if p is not None and q is not None:
                _draw_segment(plot, p, q, s)
        if s.markers:
            for p in shifted:
                if p is not None:
                    cv2.circle(plot, p, s.thickness + 2, s.colour, -1, cv2.LINE_AA)
    img[top + 1:bottom, left + 1:right] = plot[1:-1, 1:-1]
    return img


def _draw_segment(img: np.ndarray, p: tuple[int, int], q: tuple[int, int], s: Series) -> None:
    if s.dashed:
        _dashed_line(img, p, q, s.colour, s.thickness)
    else:
        cv2.line(img, p, q, s.colour, s.thickness, cv2.LINE_AA)


def stack(images: Sequence[np.ndarray], columns: int = 1, gap: int = 10) -> np.ndarray:
    """Images (BGR) laid out in a grid of ``columns`` on white, row by row."""
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    width = max(sum(im.shape[1] for im in row) + gap * (len(row) - 1) for row in rows)
    height = sum(max(im.shape[0] for im in row) for row in rows) + gap * (len(rows) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for row in rows:
        x = 0
        for im in row:
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
            x += im.shape[1] + gap
        y += max(im.shape[0] for im in row) + gap
    return out


def png_bytes(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("OpenCV could not encode the picture as PNG")
    return data.tobytes()
