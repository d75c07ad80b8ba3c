"""A picture of how UCoFiA aligns a caption with a video, like the paper's qualitative figure.

    python scripts/visualize.py --checkpoint CKPT --video clip.mp4 --caption "a dog runs on a beach" --out fig.png

Draws, with OpenCV, the frames the model samples (the centre crop it sees) with
  - the patches chosen by the top-K patch selection: a box on each chosen cell of the patch grid, its opacity the
    selection weight (1 for a patch the eval-time selection always picks; fractional under the perturbed top-K),
  - under each frame, its frame-sentence weight (the ISA weights over frames for this sentence) and its share of the
    patch-word weights over visual tokens (the frame's class token and K patches together),
and the caption's tokens coloured by their patch-word ISA weight, with a heat bar. The scores in the title are raw
logits (no SK-norm). Everything comes from ``UCoFiA.explain``: the same functions as the forward pass.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch

# See scripts/retrieve.py: a broken file is reported once, by the one-line error.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2

from modules.common.errors import ConfigError, DataError
from modules.common.runtime import (
    autocast_context,
    run_entry,
    setup,
    setup_logging,
)
from modules.data.transforms import clip_frames, resize_center_crop
from modules.data.video import load_video_raw, probe_video
from modules.evaluation.retrieval import Tool, add_tool_arguments, load_tool, tool_overrides
from modules.model.similarity import LEVELS
from modules.model.tokenizer import get_tokenizer, text_mask, tokenize
from modules.model.ucofia import Explanation
from scripts.plotlib import GREY, INK, put, text_width, wrap

TILE = 224               # displayed frame side (pixels)
GAP, MARGIN = 14, 18     # between frames, around the picture
PER_ROW = 6              # frames per row
MIN_WIDTH = 820
TRACK = (225, 225, 225)                                             # BGR
BOX = (0, 140, 255)                                                 # orange: selected patches
FRAME_BAR, TOKEN_BAR = (200, 120, 40), (60, 160, 60)               # blue: frame-sentence, green: patch-word
HOT = np.array([40, 40, 215], dtype=np.float64)                     # red end of the word heat scale
SHOWN_SELECTION = 0.02   # selection weights below this are not drawn (invisible anyway)
STRONG_SELECTION = 0.25  # from this weight a chosen cell also gets an outline


def heat(weight: float) -> tuple[int, int, int]:
    """White (0) to red (1), BGR."""
    w = float(np.clip(weight, 0.0, 1.0))
    return tuple(int(v) for v in (1 - w) * np.array([255.0, 255.0, 255.0]) + w * HOT)


def token_labels(ids: Sequence[int]) -> list[str]:
    """One label per real token; the start and end tokens are real positions of the text tower and get weights too."""
    tok = get_tokenizer()
    special = {tok.sot_id: "<start>", tok.eot_id: "<end>"}
    return [special.get(int(i)) or tok.decode([int(i)]) or "?" for i in ids]


def draw_frame(frame_rgb: np.ndarray, selection: np.ndarray, grid: int) -> np.ndarray:
    """A TILE x TILE BGR tile: the frame, a faint patch grid, and the selected cells.

    Args:
        frame_rgb: uint8 [R, R, 3], the crop the model sees.
        selection: [P] per-patch selection weight (summed over the K slots, each in [0, 1]).
        grid: patches per side (P = grid ** 2).
    """
    tile = cv2.resize(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), (TILE, TILE), interpolation=cv2.INTER_CUBIC)
    cell = TILE / grid
    lines = tile.copy()
    for k in range(1, grid):
        pos = int(round(k * cell))
        cv2.line(lines, (pos, 0), (pos, TILE), (255, 255, 255), 1)
        cv2.line(lines, (0, pos), (TILE, pos), (255, 255, 255), 1)
    tile = cv2.addWeighted(lines, 0.25, tile, 0.75, 0)
    for p in np.argsort(selection):                      # strongest last, drawn on top
        w = float(min(selection[p], 1.0))
        if w < SHOWN_SELECTION:
            continue
        r, c = divmod(int(p), grid)
        # Inset so that the boxes of neighbouring cells do not merge into lines.
        x0, y0 = int(round(c * cell)) + 2, int(round(r * cell)) + 2
        x1, y1 = int(round((c + 1) * cell)) - 3, int(round((r + 1) * cell)) - 3
        fill = tile.copy()
        cv2.rectangle(fill, (x0, y0), (x1, y1), BOX, -1)
        tile = cv2.addWeighted(fill, 0.5 * w, tile, 1 - 0.5 * w, 0)
        if w >= STRONG_SELECTION:
            edge = tile.copy()
            cv2.rectangle(edge, (x0, y0), (x1, y1), BOX, 2)
            tile = cv2.addWeighted(edge, w, tile, 1 - w, 0)
    return tile


def bar(img: np.ndarray, x: int, y: int, label: str, value: float, colour) -> None:
    """A labelled horizontal bar TILE wide for a weight in [0, 1]; y is the label's baseline."""
    put(img, label, x, y, 0.42, GREY)
    value_text = f"{value:.2f}"
    put(img, value_text, x + TILE - text_width(value_text, 0.45, 1), y, 0.45, INK)
    cv2.rectangle(img, (x, y + 5), (x + TILE, y + 13), TRACK, -1)
    cv2.rectangle(img, (x, y + 5), (x + int(round(TILE * min(max(value, 0.0), 1.0))), y + 13), colour, -1)


def render(expl: Explanation, frames: np.ndarray, times: Sequence[float], labels: Sequence[str], caption: str,
           subtitle: str, grid: int) -> np.ndarray:
    """The whole picture, BGR uint8.

    Args:
        expl: the explanation (CPU tensors).
        frames: uint8 [n, R, R, 3] RGB crops of the n real frames.
        times: seconds of each real frame.
        labels: one label per real token.
        caption, subtitle: title lines.
        grid: patches per side.
    """
    n = len(frames)
    rows = (n + PER_ROW - 1) // PER_ROW
    cols = (n + rows - 1) // rows                                   # balanced rows: 8 frames as 4 + 4, not 6 + 2
    width = max(MIN_WIDTH, 2 * MARGIN + cols * TILE + (cols - 1) * GAP)
    inner = width - 2 * MARGIN
    head = wrap(f'"{caption}"', inner, 0.7, 2)
    levels = {k: float(v) for k, v in expl.levels.items()}
    overall = sum(levels.values()) / len(levels)
    scores = (f"score {overall:.3f} = mean of video_sentence {levels['video_sentence']:.3f}, "
              f"frame_sentence {levels['frame_sentence']:.3f}, patch_word {levels['patch_word']:.3f} (raw logits)")
    info = wrap(subtitle, inner, 0.45) + wrap(scores, inner, 0.45)
    frame_block = 22 + TILE + 62                                    # time label, tile, two bars
    # Word boxes: lay out first to know the height.
    box_h, pad = 30, 8
    word_w = np.asarray(expl.word_weights, dtype=np.float64)[:len(labels)]
    boxes, x, y = [], 0, 0
    for label in labels:
        w = max(text_width(label, 0.55), text_width("0.00", 0.4)) + 2 * pad
        if x and x + w > inner:
            x, y = 0, y + box_h + 26
        boxes.append((x, y, w))
        x += w + 6
    words_h = y + box_h + 26
    legend = wrap(f"orange boxes: the {expl.selection.shape[1]} patches per frame chosen by the top-K selection, "
                  "opacity = selection weight (top patch: the frame's largest)", inner, 0.42)
    legend += wrap("frame-sentence weight: ISA over the frames for this sentence; patch-word token weight: the "
                   "frame's share of ISA over the visual tokens (its class token and patches)", inner, 0.42)
    height = (MARGIN + 34 * len(head) + 22 * len(info) + 12 + rows * frame_block + (rows - 1) * GAP + 36
              + words_h + 50 + 20 * len(legend) + MARGIN)
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    y = MARGIN + 24
    for line in head:
        put(img, line, MARGIN, y, 0.7, INK, 2)
        y += 34
    for line in info:
        put(img, line, MARGIN, y - 8, 0.45, GREY)
        y += 22
    y += 12
    selection = np.asarray(expl.selection, dtype=np.float64).sum(axis=1)   # [F, P]: a patch fills at most one slot
    frame_w = np.asarray(expl.frame_weights, dtype=np.float64)
    token_w = np.asarray(expl.token_weights, dtype=np.float64).sum(axis=1)  # [F]
    for i in range(n):
        r, c = divmod(i, cols)
        x0 = MARGIN + c * (TILE + GAP)
        y0 = y + r * (frame_block + GAP)
        put(img, f"#{i + 1}  {times[i]:.1f} s", x0, y0 + 14, 0.45, INK)
        top = f"top patch {selection[i].max():.2f}"                    # low: an undecided (spread) selection
        put(img, top, x0 + TILE - text_width(top, 0.42), y0 + 14, 0.42, GREY)
        img[y0 + 22:y0 + 22 + TILE, x0:x0 + TILE] = draw_frame(frames[i], selection[i], grid)
        bar(img, x0, y0 + 22 + TILE + 18, "frame-sentence weight", frame_w[i], FRAME_BAR)
        bar(img, x0, y0 + 22 + TILE + 48, "patch-word token weight", token_w[i], TOKEN_BAR)
    y += rows * frame_block + (rows - 1) * GAP + 8

    put(img, "patch-word weights over the caption's tokens", MARGIN, y + 14, 0.5, INK)
    y += 28
    for (bx, by, bw), label, w in zip(boxes, labels, word_w):
        x0, y0 = MARGIN + bx, y + by
        cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + box_h), heat(w), -1)
        cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + box_h), (180, 180, 180), 1)
        put(img, label, x0 + pad, y0 + 21, 0.55, (255, 255, 255) if w > 0.6 else INK)
        put(img, f"{w:.2f}", x0 + pad, y0 + box_h + 16, 0.4, GREY)
    y += words_h + 8

    ramp_w = min(300, inner // 2)
    ramp = np.array([heat(v) for v in np.linspace(0, 1, ramp_w)], dtype=np.uint8)        # [ramp_w, 3]
    img[y:y + 12, MARGIN:MARGIN + ramp_w] = ramp[None]
    cv2.rectangle(img, (MARGIN, y), (MARGIN + ramp_w - 1, y + 11), (180, 180, 180), 1)
    put(img, "0", MARGIN, y + 28, 0.4, GREY)
    put(img, "0.5", MARGIN + ramp_w // 2 - 10, y + 28, 0.4, GREY)
    put(img, "1", MARGIN + ramp_w - 8, y + 28, 0.4, GREY)
    put(img, "word weight", MARGIN + ramp_w + 12, y + 11, 0.42, GREY)
    for k, line in enumerate(legend):
        put(img, line, MARGIN, y + 50 + 20 * k, 0.42, GREY)
    return img


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return (t.float() if t.is_floating_point() else t).cpu()


def explain_video(tool: Tool, video_path: str, caption: str) -> tuple[Explanation, np.ndarray, list[float], list[str]]:
    """Decode, encode and explain one pair.

    Returns:
        the explanation (CPU), the n real frames as RGB crops [n, R, R, 3], their times in seconds, token labels.
    """
    frames, indices = load_video_raw(video_path, tool.data)
    res = tool.data.image_resolution
    video, video_mask = clip_frames(frames, res, tool.data.max_frames)         # [F, 3, R, R], [F]
    ids = tokenize(caption, tool.data.max_words)                                # [1, L]
    device = tool.rt.device
    with autocast_context(tool.precision, device):
        expl = tool.model.explain(ids.to(device), text_mask(ids).to(device), video[None].to(device),
                                  video_mask[None].to(device))
    expl = Explanation(**{k: ({n: _cpu(t) for n, t in v.items()} if isinstance(v, dict) else _cpu(v))
                          for k, v in vars(expl).items()})
    fps = probe_video(video_path).fps
    real = int(expl.word_mask.sum())
    return expl, resize_center_crop(frames, res), [i / fps for i in indices], token_labels(ids[0, :real].tolist())


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/visualize.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="one video file")
    parser.add_argument("--caption", required=True, help="the caption to align with it")
    parser.add_argument("--out", required=True, help="PNG file to write")
    add_tool_arguments(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        setup_logging(0)
        if not os.path.isfile(args.video):
            raise DataError(f"{args.video}: no such video file")
        if not args.caption.strip():
            raise ConfigError("--caption is empty")
        if not args.out.lower().endswith(".png"):
            raise ConfigError(f"--out {args.out}: expected a .png file name")
        tool = load_tool(args.checkpoint, setup(args.device, seed=0), tool_overrides(args), args.precision)
        expl, frames, times, labels = explain_video(tool, args.video, args.caption)
        cfg = tool.model.config
        # Cut when the caption has more than max_words - 2 tokens besides the start and end token.
        kept = get_tokenizer().encode(args.caption, max_tokens=cfg.max_words - 1)
        cut = f"; caption cut to max_words = {cfg.max_words} tokens" if len(kept) > cfg.max_words - 2 else ""
        subtitle = (f"{os.path.basename(args.video)}: {len(frames)} frames sampled (max {cfg.max_frames}); "
                    f"top-K {cfg.eval_topk}, K = {cfg.topk}; checkpoint {os.path.basename(args.checkpoint)}{cut}")
        img = render(expl, frames, times, labels, args.caption, subtitle, tool.model.clip.config.grid_size)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if not cv2.imwrite(args.out, img):
            raise DataError(f"{args.out}: could not write the picture")
        print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]}): " +
              ", ".join(f"{k} {float(expl.levels[k]):.3f}" for k in LEVELS), flush=True)
        return 0

    return run_entry(run)


if __name__ == "__main__":
    sys.exit(main())
