"""Benchmark of stage-1 feature extraction (decode once, cut every window, run the backbone).
Run `python tests/bench/bench_extract.py [--videos N] [--repeats R]`: one line per comparison
(`name: measured=..., target=..., PASS|FAIL`); exit status 1 if any fails. Not collected by
pytest. Everything runs on videos it generates itself in a temporary folder:

1. decode once: frames our path decodes (VideoReader + cut_windows over all groups) vs a peer
   that decodes the video once per (L, s) group.
2. data pipeline hidden: end-to-end extract_items time vs the backbone forward alone on the same
   windows (precomputed tensors, the same batches).
3. faster than the usual way: ours vs a loop that decodes each clip separately with
   pytorchvideo's EncodedVideo.get_clip, resizes it and runs the same backbone.
4. bounded memory: peak RSS (getrusage RUSAGE_CHILDREN of a subprocess) of the whole stage-1
   engine (decode, windows, backbone at 32 px, item file) on a long 640x480 video, at two lengths.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.extract.video import VideoReader, WindowGroup, cut_windows, window_indices  # noqa: E402

log = logging.getLogger("bench_extract")
GIB = 1024 ** 3
LONG_H, LONG_W, LONG_FPS = 480, 640, 25.0


# --------------------------------------------------------------------------------------------
# helpers

def report(name: str, measured: str, target: str, ok: bool) -> bool:
    print(f"{name}: measured={measured}, target={target}, {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def groups_of(lengths, steps, stride) -> list[WindowGroup]:
    return [WindowGroup(L, stride, s) for L in lengths for s in steps]


def make_videos(folder: Path, n: int, frames: int, size: int, fps: float) -> list[Path]:
    """n synthetic action videos (mp4v), cycling through the motions."""
    from pipeline.datasets.synthetic import MOTIONS, render_video, write_video

    names = list(MOTIONS)
    paths = []
    for k in range(n):
        rng = np.random.default_rng([0, k])
        video = render_video(MOTIONS[names[k % len(names)]], rng, frames=frames, size=size)
        path = folder / f"video_{k:02d}.mp4"
        write_video(path, video, fps=fps, codec="mp4v")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# 1. decode once

def decode_counts(paths: list[Path], groups: list[WindowGroup], size: int) -> dict:
    ours = peer = windows_ours = windows_peer = 0
    for path in paths:
        reader = VideoReader(path, size=size, crop=True)
        windows_ours += sum(1 for _ in cut_windows(reader, groups))
        ours += reader.decoded
        for g in groups:                       # the peer: one decoding pass per (L, s) group
            r = VideoReader(path, size=size, crop=True)
            windows_peer += sum(1 for _ in cut_windows(r, [g]))
            peer += r.decoded
    return dict(ours=ours, peer=peer, windows_ours=windows_ours, windows_peer=windows_peer)


# --------------------------------------------------------------------------------------------
# 2. + 3. timing: ours (extract_items), backbone alone, the pytorchvideo peer

def batches_like_extract_items(paths: list[Path], groups, size: int, batch_size: int
                               ) -> list[np.ndarray]:
    """The uint8 batches (B, L, H, W, C) extract_items hands to the encoder: per group, the
    windows of consecutive videos in order, batch_size at a time (the tail of each group last)."""
    pending: list[list[np.ndarray]] = [[] for _ in groups]
    out = []
    for path in paths:
        for gi, _, clip in cut_windows(VideoReader(path, size=size, crop=True), groups):
            pending[gi].append(clip)
            if len(pending[gi]) == batch_size:
                out.append(np.stack(pending[gi]))
                pending[gi] = []
    out.extend(np.stack(p) for p in pending if p)
    return out


def import_peer():
    """(description, opener(path) -> object with .get_clip and .close)."""
    try:
        from pytorchvideo.data.encoded_video import EncodedVideo
        return ("pytorchvideo EncodedVideo (pyav decoder, get_clip per window)",
                lambda p: EncodedVideo.from_path(str(p), decode_audio=False, decoder="pyav"))
    except Exception as exc:                   # e.g. pytorchvideo.transforms vs new torchvision
        log.warning("pytorchvideo.data.encoded_video import failed (%s); trying EncodedVideoPyAV",
                    exc)
    try:
        from pytorchvideo.data.encoded_video_pyav import EncodedVideoPyAV

        def open_pyav(p):
            return EncodedVideoPyAV(open(p, "rb"), Path(p).name, decode_audio=False)
        return "pytorchvideo EncodedVideoPyAV (get_clip per window)", open_pyav
    except Exception as exc:
        raise RuntimeError(f"no pytorchvideo clip decoder importable: {exc}") from exc


def peer_extract(path: Path, groups, model, layer: str, size: int, batch_size: int,
                 opener, fps: float, mean, std) -> int:
    """The usual way: per window, get_clip(start_sec, end_sec) decodes that clip (seek + decode),
    take every s-th frame, short-side resize + centre crop, normalise, batch, run the backbone."""
    import torch
    import torch.nn.functional as F

    video = opener(path)
    try:
        rate = Fraction(fps).limit_denominator(1001)
        num_frames = int(round(float(video.duration) * float(rate)))
        windows = 0
        for g in groups:
            pending = []
            feats = []

            def flush():
                if pending:
                    x = torch.stack(pending).div_(255).sub_(mean).div_(std)
                    with torch.inference_mode():
                        y = model(x, layer).float().mean(dim=(3, 4)).mean(dim=2)
                    feats.append(y.numpy())
                    pending.clear()

            starts, _ = window_indices(num_frames, g)
            for start in starts:
                start = int(start)
                clip = video.get_clip(start / rate, (start + g.span) / rate)["video"]  # C,T,H,W
                clip = clip[:, ::g.step][:, :g.length]
                if clip.shape[1] < g.length:       # pad a short clip with its last frame
                    pad = clip[:, -1:].expand(-1, g.length - clip.shape[1], -1, -1)
                    clip = torch.cat([clip, pad], dim=1)
                c, t, h, w = clip.shape
                scale = size / min(h, w)
                nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
                frames = F.interpolate(clip.permute(1, 0, 2, 3), size=(nh, nw), mode="bilinear",
                                       align_corners=False)
                y0, x0 = (nh - size) // 2, (nw - size) // 2
                pending.append(frames[:, :, y0:y0 + size, x0:x0 + size].permute(1, 0, 2, 3))
                windows += 1
                if len(pending) == batch_size:
                    flush()
            flush()
        return windows
    finally:
        video.close()


def timing(paths: list[Path], groups, *, size: int, batch_size: int, repeats: int,
           tmp: Path, fps: float, skip_peer: bool) -> dict:
    import torch

    from pipeline.extract.backbones import build_backbone
    from pipeline.datasets.base import Item
    from pipeline.extract.features import WindowEncoder, extract_items

    model, _ = build_backbone("x3d_xs", weights="none")
    layer = "res5"
    encoder = WindowEncoder(model, layers=(layer,), pool=("mean",), device=torch.device("cpu"))
    items = [Item(f"bench/{p.stem}", p, (0,)) for p in paths]

    # precomputed, normalised tensors of exactly the batches extract_items encodes
    tensors = []
    for b in batches_like_extract_items(paths, groups, size, batch_size):
        # built as WindowEncoder builds them (same dtype, values and memory layout: the
        # permuted uint8 array keeps channels-last strides through .float())
        x = torch.from_numpy(b).permute(0, 4, 1, 2, 3).float().div_(255)
        tensors.append(x.sub_(encoder.mean).div_(encoder.std))
    n_windows = sum(t.shape[0] for t in tensors)

    def run_ours():                             # decode, window, encode and write every item
        for item_id, write in extract_items(items, groups, {"rgb": encoder}, size=size, crop=True,
                                            batch_size=batch_size):
            if isinstance(write, BaseException):
                raise write
            write(tmp / f"{item_id.replace('/', '_')}.h5")

    @torch.inference_mode()
    def run_forward():
        for x in tensors:
            model(x, layer).float().mean(dim=(3, 4)).mean(dim=2)

    peer_name, opener = import_peer() if not skip_peer else ("skipped", None)
    peer_windows = []

    def run_peer():
        peer_windows.append(sum(peer_extract(p, groups, model, layer, size, batch_size, opener,
                                             fps, encoder.mean, encoder.std) for p in paths))

    with torch.inference_mode():                # warm-up: first calls allocate / pick kernels
        for x in {x.shape[2]: x for x in tensors}.values():
            model(x, layer)
    t = {"ours": [], "forward": [], "peer": []}
    for r in range(repeats):                    # interleaved, so drift hits all three alike
        for name, fn in (("ours", run_ours), ("forward", run_forward), ("peer", run_peer)):
            if name == "peer" and skip_peer:
                continue
            t0 = time.perf_counter()
            fn()
            t[name].append(time.perf_counter() - t0)
        log.info("repeat %d/%d: ours %.2fs, forward alone %.2fs, peer %s", r + 1, repeats,
                 t["ours"][-1], t["forward"][-1],
                 f"{t['peer'][-1]:.2f}s" if t["peer"] else "skipped")
    med = {k: float(np.median(v)) if v else float("nan") for k, v in t.items()}
    return dict(med, windows=n_windows, peer_name=peer_name,
                peer_windows=peer_windows[-1] if peer_windows else -1)


# --------------------------------------------------------------------------------------------
# 4. bounded memory

def write_long_videos(paths_and_frames: list[tuple[Path, int]]) -> float:
    """Write 640x480 mp4v videos (a scrolling noise texture plus a moving square) in one pass:
    each path gets the first `frames` frames of the same stream. Returns seconds taken."""
    import cv2

    rng = np.random.default_rng(1)
    extra = 2048
    tex = cv2.GaussianBlur(rng.random((LONG_H, LONG_W + extra, 3)).astype(np.float32), (0, 0), 3)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
    n_max = max(n for _, n in paths_and_frames)
    writers = [(cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), LONG_FPS,
                                (LONG_W, LONG_H)), n) for p, n in paths_and_frames]
    for w, _ in writers:
        if not w.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v")
    t0 = time.perf_counter()
    for i in range(n_max):
        off = (3 * i) % extra
        frame = np.ascontiguousarray(tex[:, off:off + LONG_W])
        x, y = (7 * i) % (LONG_W - 64), (5 * i) % (LONG_H - 64)
        frame[y:y + 64, x:x + 64] = (i * 13) % 256
        for w, n in writers:
            if i < n:
                w.write(frame)
    for w, _ in writers:
        w.release()
    return time.perf_counter() - t0


def rss_worker(path: str, lengths, steps, stride) -> None:
    """Child: the whole stage-1 engine on one video (decode thread, windows, x3d_xs on 32 px
    crops, batches, the item file written); prints frames, windows and seconds."""
    import h5py
    import torch

    from pipeline.extract.backbones import build_backbone
    from pipeline.datasets.base import Item
    from pipeline.extract.features import WindowEncoder, extract_items

    model, _ = build_backbone("x3d_xs", weights="none")
    encoder = WindowEncoder(model, layers=("res5",), pool=("mean",), device=torch.device("cpu"))
    out = Path(path).with_suffix(".h5")
    t0 = time.perf_counter()
    for _, write in extract_items([Item("long", Path(path), (0,))],
                                  groups_of(lengths, steps, stride), {"rgb": encoder}, size=32,
                                  crop=True, batch_size=8):
        if isinstance(write, BaseException):
            raise write
        write(out)
    secs = time.perf_counter() - t0
    with h5py.File(out, "r") as f:
        windows = sum(ds.shape[0] for ds in f["rgb/res5/mean"].values())
        print(f"{f.attrs['num_frames']} {windows} {secs:.3f}")
    out.unlink()


def rss_wrapper(path: str, argv_tail: list[str]) -> None:
    """Middle process: runs the worker and prints its peak RSS via RUSAGE_CHILDREN, so that
    each measurement has its own, clean RUSAGE_CHILDREN (the maximum over all waited children)."""
    res = subprocess.run([sys.executable, __file__, "--_rss-worker", path, *argv_tail],
                         capture_output=True, text=True, check=True)
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss       # KiB on Linux
    print(f"{res.stdout.strip()} {kib}")


def measure_rss(path: Path, tail: list[str], timeout: float) -> dict:
    res = subprocess.run([sys.executable, __file__, "--_rss-wrapper", str(path), *tail],
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"rss measurement failed: {res.stderr[-2000:]}")
    decoded, windows, secs, kib = res.stdout.split()
    return dict(decoded=int(decoded), windows=int(windows), secs=float(secs), rss=int(kib) * 1024)


# --------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6, help="synthetic videos")
    parser.add_argument("--frames", type=int, default=96, help="frames per synthetic video")
    parser.add_argument("--video-size", type=int, default=128, help="synthetic video size (px)")
    parser.add_argument("--size", type=int, default=112, help="backbone input size (px)")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="repeats (the median is used)")
    parser.add_argument("--long-frames", type=int, default=15000,
                        help="frames of the long video (15000 = 10 min at 25 fps)")
    parser.add_argument("--rss-budget", type=float, default=180.0,
                        help="seconds allowed for generating + processing the long videos")
    parser.add_argument("--skip-peer", action="store_true", help="skip the pytorchvideo peer")
    parser.add_argument("--_rss-worker", dest="rss_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_rss-wrapper", dest="rss_wrapper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tail = ["--lengths", *map(str, args.lengths), "--steps", *map(str, args.steps),
            "--stride", str(args.stride)]
    if args.rss_worker:
        rss_worker(args.rss_worker, args.lengths, args.steps, args.stride)
        return 0
    if args.rss_wrapper:
        rss_wrapper(args.rss_wrapper, tail)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    import torch

    t_start = time.perf_counter()
    groups = groups_of(args.lengths, args.steps, args.stride)
    cores = os.cpu_count()
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {cores} cores "
          f"({avail} usable), torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, device cpu")
    print(f"setup: {args.videos} synthetic mp4v videos x {args.frames} frames at "
          f"{args.video_size} px; groups {', '.join(g.name for g in groups)} stride {args.stride}; "
          f"x3d_xs (random weights) layer res5, input {args.size} px, batch {args.batch}; "
          f"median of {args.repeats} repeats", flush=True)
    ok = True
    fps = 25.0
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmpdir:
        tmp = Path(tmpdir)
        paths = make_videos(tmp, args.videos, args.frames, args.video_size, fps)
        total = args.videos * args.frames

        # 1. decode once ----------------------------------------------------------------------
        c = decode_counts(paths, groups, args.size)
        log.info("decoded frames: ours %d, per-group peer %d, video frames %d; windows ours %d, "
                 "peer %d", c["ours"], c["peer"], total, c["windows_ours"], c["windows_peer"])
        ok &= report("decode once (frames decoded: per-(L,s)-group peer / ours)",
                     f"{c['peer'] / c['ours']:.2f}x (ours {c['ours']} of {total} frames, "
                     f"peer {c['peer']})",
                     "ours == total frames (each frame decoded exactly once)",
                     c["ours"] == total and c["windows_ours"] == c["windows_peer"])

        # 2. + 3. timing ----------------------------------------------------------------------
        t = timing(paths, groups, size=args.size, batch_size=args.batch, repeats=args.repeats,
                   tmp=tmp, fps=fps, skip_peer=args.skip_peer)
        log.info("median: ours (extract_items) %.2fs, backbone forward alone %.2fs, peer %.2fs; "
                 "%d windows (%.1f ms/window ours)", t["ours"], t["forward"], t["peer"],
                 t["windows"], 1e3 * t["ours"] / t["windows"])
        r2 = t["ours"] / t["forward"]
        ok &= report("data pipeline hidden (extract_items time / backbone forward alone)",
                     f"{r2:.3f}", "<= 1.10", r2 <= 1.10)
        if args.skip_peer:
            ok &= report("faster than the usual way (peer skipped)", "nan", ">= 1.5", False)
        else:
            r3 = t["peer"] / t["ours"]
            same = t["peer_windows"] == t["windows"]
            if not same:
                log.info("peer produced %d windows, ours %d", t["peer_windows"], t["windows"])
            ok &= report(f"faster than the usual way ({t['peer_name']} time / ours)",
                         f"{r3:.2f}x (peer {t['peer']:.2f}s, ours {t['ours']:.2f}s"
                         f"{'' if same else ', WINDOW COUNTS DIFFER'})", ">= 1.5",
                         r3 >= 1.5 and same)

        # 4. bounded memory -------------------------------------------------------------------
        probe = tmp / "probe.mp4"
        n_probe = 500
        g_probe = write_long_videos([(probe, n_probe)])
        m_probe = measure_rss(probe, tail, timeout=120)
        per_frame = (g_probe + m_probe["secs"]) / n_probe
        overhead = 20.0                            # interpreter starts, imports and model builds
        # the long video, plus the short one (written in the same pass, decoded separately)
        fits = int((args.rss_budget - overhead) / (per_frame * 1.1))
        n_long = min(args.long_frames, fits)
        n_long -= n_long % 25
        n_short = max(n_long // 10, 250)
        log.info("probe: 500 frames at %dx%d written in %.2fs, extracted in %.2fs (peak "
                 "RSS %.0f MiB); %d frames fit in %.0fs -> long video %d frames (%.1f min), "
                 "short %d frames", LONG_W, LONG_H, g_probe, m_probe["secs"],
                 m_probe["rss"] / 2 ** 20, fits, args.rss_budget, n_long,
                 n_long / LONG_FPS / 60, n_short)
        probe.unlink()
        long_p, short_p = tmp / "long.mp4", tmp / "short.mp4"
        g_long = write_long_videos([(long_p, n_long), (short_p, n_short)])
        log.info("generated both in %.1fs (%.0f MiB on disk)", g_long,
                 long_p.stat().st_size / 2 ** 20)
        m_short = measure_rss(short_p, tail, timeout=600)
        m_long = measure_rss(long_p, tail, timeout=600)
        whole = n_long * LONG_H * LONG_W * 3
        log.info("short: %d frames decoded, %d windows, %.1fs, peak RSS %.1f MiB; long: %d frames "
                 "decoded, %d windows, %.1fs, peak RSS %.1f MiB; the whole long video decoded "
                 "into memory would need %.2f GiB", m_short["decoded"], m_short["windows"],
                 m_short["secs"], m_short["rss"] / 2 ** 20, m_long["decoded"], m_long["windows"],
                 m_long["secs"], m_long["rss"] / 2 ** 20, whole / GIB)
        full = n_long >= args.long_frames
        counts_ok = m_long["decoded"] == n_long and m_short["decoded"] == n_short
        ok &= report(f"bounded memory: peak RSS of stage 1 on {n_long} frames {LONG_W}x{LONG_H}"
                     f" ({n_long / LONG_FPS / 60:.1f} min"
                     f"{'' if full else f', SHORTER than the asked {args.long_frames}'})",
                     f"{m_long['rss'] / GIB:.3f} GiB (whole video in memory: "
                     f"{whole / GIB:.2f} GiB{'' if counts_ok else ', FRAME COUNT MISMATCH'})",
                     "< 3 GiB", m_long["rss"] < 3 * GIB and counts_ok)
        growth = m_long["rss"] / m_short["rss"]
        ok &= report(f"bounded memory: RSS growth ({n_long} / {n_short} frames)",
                     f"{growth:.3f} ({m_long['rss'] / 2 ** 20:.0f} / "
                     f"{m_short['rss'] / 2 ** 20:.0f} MiB)", "<= 1.2", growth <= 1.2)
    log.info("total wall time %.0fs", time.perf_counter() - t_start)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
