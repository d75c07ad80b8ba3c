"""Benchmark: the three similarity levels for many texts x videos, ours against the published formulation.

    python scripts/bench_similarity.py                       # 1,000 x 1,000, L=32, F=12, K=3, D=512 (minutes)
    python scripts/bench_similarity.py --texts 200 --videos 200   # quick

Both sides score the same random features with the same weights, each in its own child process (so that their peak
memory is measured separately), in one run:

* ours: the temporal module once per video, then ``LevelHead`` (per-text and per-video work once, blocks of
  ``--block_mb``), with ``mask_padding`` off so that the values are comparable;
* published: ``_loose_similarity`` transcribed, run on 32 x 32 blocks as the published evaluation loop does, so the
  temporal module, normalisations and projections are recomputed in every block.

Printed: time of each side and the speed ratio, max relative difference per level (max |ours - published| divided by
max |published|), peak resident memory of each child (and above its inputs), and the patch-word stage's FLOP rate
(its matmul FLOPs: G and both ISA mixings) next to this machine's rate for a plain matmul of the G block's shape,
measured in the same child. Subnormal floats are flushed to zero in both children (``--keep_denormals`` to keep them):
the tau = 0.01 softmaxes produce many, which slows x86 CPUs several-fold and changes nothing above 1e-38.
"""
from __future__ import annotations

import argparse
import time

import torch
from benchlib import peak_rss_mb, rss_mb, run_roles, save_role

from modules.model.similarity import LevelHead
from modules.model.temporal import TemporalTransformer
from modules.model.ucofia import ModelConfig

TEMPORAL_LAYERS, TAU, LOGIT_SCALE = 4, 0.01, 100.0


def build(args, mask_padding: bool):
    """Deterministic random features and weights, the same in every child."""
    torch.manual_seed(args.seed)  # module constructors draw from the global RNG
    g = torch.Generator().manual_seed(args.seed)
    d, n_words, n_frames, per_frame = args.dim, args.words, args.frames, 1 + args.topk
    head = LevelHead(d, n_words, n_frames, per_frame, TAU, mask_padding, args.block_mb << 20)
    temporal = TemporalTransformer(d, TEMPORAL_LAYERS, d // 64, n_frames, 1e-12)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        for p in temporal.parameters():
            if p.dim() > 1:
                p.normal_(0, d ** -0.5, generator=g)
    text = dict(sentence=torch.randn(args.texts, d, generator=g),
                words=torch.randn(args.texts, n_words, d, generator=g),
                word_mask=torch.arange(n_words)[None] < torch.randint(5, n_words + 1, (args.texts, 1), generator=g))
    video = dict(frames=torch.randn(args.videos, n_frames, d, generator=g),
                 frame_mask=torch.arange(n_frames)[None] < torch.randint(4, n_frames + 1, (args.videos, 1),
                                                                         generator=g),
                 tokens=torch.randn(args.videos, n_frames * per_frame, d, generator=g).mul_(0.5))
    return head, temporal, text, video


def run_ours(args, mask_padding: bool):
    head, temporal, text, video = build(args, mask_padding)
    base = rss_mb()
    scale = torch.tensor(LOGIT_SCALE)
    with torch.no_grad():
        start = time.perf_counter()
        chunks = torch.split(torch.arange(args.videos), 256)
        frames_temporal = torch.cat([temporal(video["frames"][c], video["frame_mask"][c]) for c in chunks])
        text_side = head.prepare_text(text["sentence"], text["words"], text["word_mask"])
        video_side = head.prepare_video(video["frames"], frames_temporal, video["frame_mask"], video["tokens"])
        levels = head(text_side, video_side, scale)
        total = time.perf_counter() - start
        start = time.perf_counter()
        head(text_side, video_side, scale, levels=("patch_word",))
        pw_time = time.perf_counter() - start
    bt, bv = head.block_shape(args.texts, args.videos, args.words, args.frames * (1 + args.topk), 4)
    matmul = plain_matmul_gflops(bt * args.words, args.dim, bv * args.frames * (1 + args.topk))
    return levels, dict(time=total, pw_time=pw_time, block=[bt, bv], peak_mb=peak_rss_mb(), base_mb=base,
                        matmul_gflops=matmul)


def plain_matmul_gflops(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9


def published_block(head, temporal, sentence, words, frames, video_mask, tokens, scale):
    """The published ``_loose_similarity`` levels for one block (no masks but the video mean's), transcribed."""
    visual = temporal(frames, video_mask)                      # recomputed in every block, as published
    video_output = visual / visual.norm(dim=-1, keepdim=True)
    mask = video_mask.to(video_output.dtype).unsqueeze(-1)
    video_output = (video_output * mask).sum(1) / mask.sum(1).clamp(min=1)
    video_output = video_output / video_output.norm(dim=-1, keepdim=True)
    frame_features = frames / frames.norm(dim=-1, keepdim=True)
    sentence = sentence / sentence.norm(dim=-1, keepdim=True)
    words = words / words.norm(dim=-1, keepdim=True)
    vs = scale * (sentence @ head.sentence_proj) @ (video_output @ head.video_proj).t()
    sf = torch.matmul(sentence, frame_features.permute(0, 2, 1))
    fs = scale * (sf * torch.softmax(torch.softmax(sf / TAU, -1) @ head.frame_isa / TAU, -1)).sum(-1).t()
    bv, m, d = tokens.shape
    bt, n_words, _ = words.shape
    g = ((words.reshape(-1, d) @ head.word_proj) @ (tokens.reshape(-1, d) @ head.patch_proj).t()
         ).view(bt, n_words, bv, m)
    word_level = (torch.softmax(torch.softmax(g / TAU, dim=1).permute(0, 2, 3, 1) @ head.word_isa / TAU, -1
                                ).permute(0, 3, 1, 2) * g).sum(1)
    frame_level = (torch.softmax(torch.softmax(g / TAU, -1) @ head.patch_isa / TAU, -1) * g).sum(-1)
    sent2frame = (torch.softmax(torch.softmax(word_level / TAU, -1) @ head.patch_isa_2 / TAU, -1) * word_level).sum(-1)
    video2word = (torch.softmax(torch.softmax(frame_level / TAU, 1).permute(0, 2, 1) @ head.word_isa_2 / TAU, -1
                                ).permute(0, 2, 1) * frame_level).sum(1)
    return {"video_sentence": vs, "frame_sentence": fs, "patch_word": (sent2frame + video2word) / 2}


def run_published(args):
    head, temporal, text, video = build(args, mask_padding=False)
    base = rss_mb()
    scale = torch.tensor(LOGIT_SCALE)
    b = args.baseline_block
    rows = {name: [] for name in ("video_sentence", "frame_sentence", "patch_word")}
    with torch.no_grad():
        start = time.perf_counter()
        for t0 in range(0, args.texts, b):
            row = {name: [] for name in rows}
            for v0 in range(0, args.videos, b):
                out = published_block(head, temporal, text["sentence"][t0:t0 + b], text["words"][t0:t0 + b],
                                      video["frames"][v0:v0 + b], video["frame_mask"][v0:v0 + b],
                                      video["tokens"][v0:v0 + b], scale)
                for name in rows:
                    row[name].append(out[name])
            for name in rows:
                rows[name].append(torch.cat(row[name], dim=1))
        levels = {name: torch.cat(parts) for name, parts in rows.items()}
        total = time.perf_counter() - start
    return levels, dict(time=total, peak_mb=peak_rss_mb(), base_mb=base)


def child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)
    if args.role == "published":
        levels, stats = run_published(args)
    else:
        levels, stats = run_ours(args, mask_padding=args.role == "ours_masked")
    save_role(args.out, args.role, stats, levels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block_mb", type=int, default=ModelConfig().score_block_bytes >> 20,
                        help="ours: memory budget of a patch-word block (the model's default)")
    parser.add_argument("--baseline_block", type=int, default=32, help="published: texts and videos per block")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep_denormals", action="store_true")
    parser.add_argument("--role", choices=["ours", "ours_masked", "published"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return child(args)
    stats, levels = run_roles(__file__, argv, ("ours", "ours_masked", "published"))
    ours, masked, pub = stats["ours"], stats["ours_masked"], stats["published"]
    m = args.frames * (1 + args.topk)
    print(f"{args.texts} texts x {args.videos} videos, L={args.words}, F={args.frames}, K={args.topk}, D={args.dim}, "
          f"threads={args.threads}, denormals {'kept' if args.keep_denormals else 'flushed'}")
    print(f"published (blocks of {args.baseline_block}x{args.baseline_block}): {pub['time']:.1f} s, "
          f"peak {pub['peak_mb']:.0f} MB ({pub['peak_mb'] - pub['base_mb']:.0f} MB above inputs)")
    print(f"ours (blocks of {ours['block'][0]}x{ours['block'][1]}):  {ours['time']:.1f} s, "
          f"peak {ours['peak_mb']:.0f} MB ({ours['peak_mb'] - ours['base_mb']:.0f} MB above inputs)")
    print(f"ours with padding masked: {masked['time']:.1f} s")
    print(f"speed-up: {pub['time'] / ours['time']:.2f}x")
    worst = 0.0
    for name, reference in levels["published"].items():
        rel = ((levels["ours"][name] - reference).abs().max() / reference.abs().max()).item()
        worst = max(worst, rel)
        print(f"  {name:15s} max relative difference {rel:.2e}")
    print(f"max relative difference: {worst:.2e}")
    flops = 2 * args.texts * args.videos * args.words * m * (args.dim + args.words + m)
    rate = flops / ours["pw_time"] / 1e9
    print(f"patch-word stage: {ours['pw_time']:.1f} s, {rate:.1f} GFLOP/s; plain matmul of the block's shape "
          f"{ours['matmul_gflops']:.1f} GFLOP/s; ratio {rate / ours['matmul_gflops']:.0%}")


if __name__ == "__main__":
    main()
