"""Benchmark of stage 1 with trunk=on against exact per-window extraction (trunk=off), issue
"Stage 1 at the paper's scale", on real clips of ../shared/data/videos/ with the HMDB51
window preset (lengths 24/32/48/64, strides 6/8/8/8, steps 1-4) and the real Kinetics-400
Inception I3D:
- backbone FLOPs per video, trunk / exact (torch's flop counter), over every clip of arid6 and
  arid_train: target <= 0.10 (and per clip length, printed: the ratio falls as clips grow);
- wall time of stage 1, trunk / exact (the same clips, a fresh cache each): target <= 0.20;
- cosine of trunk and exact window features per layer (mean, 5th percentile), printed;
- peak RSS of stage 1 with trunk=on on a generated 640x480 video of --rss-minutes (default 10):
  target < 3 GiB.
`--arid` adds the paired recognition comparison on ../shared/data/videos/arid_train (the quality
benchmark's protocol and windows; exact McNemar test and Wilson intervals); see docs/stage1.md.
Run `python tests/bench/bench_trunk.py [--clips N] [--rss-minutes M | --no-rss] [--arid
--cache-root DIR]`. One line per check (name, value, target, PASS/FAIL); exit status 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.core.settings import parse_overrides  # noqa: E402
from pipeline.extract.settings import PRESETS, ExtractConfig  # noqa: E402
from pipeline.extract.video import VideoReader, WindowGroup, window_starts  # noqa: E402

log = logging.getLogger("bench_trunk")
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
LAYERS = ("mixed_4f", "mixed_5c", "pool", "logits")
TARGETS = {"flops": 0.10, "wall": 0.20, "rss_gib": 3.0}
WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)")


def report(name: str, value: float, target: str, ok: bool | None) -> bool:
    verdict = "(information)" if ok is None else "PASS" if ok else "FAIL"
    print(f"{name:<64s} {value:10.3f}  target {target:<8s} {verdict}", flush=True)
    return ok is not False


def pick_clips(n: int) -> list[Path]:
    """n clips of arid6, one class after another (sorted: the same clips every run)."""
    by_class = [sorted(p.glob("*.mp4")) for p in sorted((VIDEOS / "arid6").iterdir()) if p.is_dir()]
    clips = [c for k in range(max(map(len, by_class))) for cls in by_class for c in cls[k:k + 1]]
    return clips[:n]


def clip_root(clips: list[Path], folder: Path) -> Path:
    """A folder dataset of symlinks (class/clip.mp4) to `clips`."""
    root = folder / "clips"
    for clip in clips:
        (root / clip.parent.name).mkdir(parents=True, exist_ok=True)
        link = root / clip.parent.name / clip.name
        if not link.exists():
            link.symlink_to(clip)
    return root


def hmdb_groups() -> list[WindowGroup]:
    p = PRESETS["hmdb51"]
    return [WindowGroup(L, S, s) for L, S, steps in zip(p["lengths"], p["strides"], p["steps"]) for s in steps]


def flops_per_video(lengths: list[int], chunk: int) -> tuple[float, float]:
    """(exact, trunk) backbone FLOPs per video, averaged over videos of `lengths` frames, counted
    by torch's flop counter on the Inception I3D forward at 224 px (on the meta device: shapes
    only, nothing computed; memoised per input length); the trunk runs the rates the windows
    need (trunk.window_rate)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from pipeline.extract.backbones import build_backbone
    from pipeline.extract.trunk import MARGIN, window_rate
    model, _ = build_backbone("inception_i3d", weights="none")
    model = model.to("meta")
    memo: dict[tuple[str, int], int] = {}

    def count(kind: str, frames: int) -> int:
        if (kind, frames) not in memo:
            x = torch.zeros(1, 3, max(frames, model.spec.min_frames), 224, 224, device="meta")
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                if kind == "exact":
                    model.forward_layers(x, LAYERS)
                else:
                    model.trunk_sources(x, ("mixed_4f", "mixed_5c"))
            memo[kind, frames] = counter.get_total_flops()
        return memo[kind, frames]

    exact = trunk = 0.0
    for frames in lengths:
        for g in hmdb_groups():
            exact += len(window_starts(frames, g)) * count("exact", g.length)
        rates = tuple(sorted({g.step for g in hmdb_groups()}))
        for s in sorted({window_rate(frames, g, rates) for g in hmdb_groups()}):   # those needed
            sub, done = math.ceil(frames / s), 0
            while sub - done > chunk:              # RateTrunk's chunk schedule
                trunk += count("trunk", chunk)
                done += chunk - 2 * MARGIN
            trunk += count("trunk", sub - done)
    return exact / len(lengths), trunk / len(lengths)


def stage1(root: Path, cache: Path, trunk: str) -> tuple[float, Path]:
    """Wall seconds of stage 1 (models built, clips decoded, windows written) and its folder."""
    from pipeline.extract.features import extract_features
    cfg, = parse_overrides([f"root={str(root)!r}", "dataset=folder", "dataset_options={'folds': 0}",
                            f"cache_root={str(cache)!r}", f"layer={LAYERS!r}", f"trunk={trunk!r}",
                            *[f"{k}={v!r}" for k, v in PRESETS["hmdb51"].items()]], ExtractConfig)
    start = time.perf_counter()
    result = extract_features(cfg)
    if not result.ok:
        raise RuntimeError(f"stage 1 trunk={trunk} failed: {result.failures}")
    return time.perf_counter() - start, result.folder


def cosines(exact: Path, trunk: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer -> (cosine of every window's mean-pooled feature, trunk against exact; whether the
    window is a regular one, not a video shorter than its span (evenly spaced repeats))."""
    out: dict[str, list] = {layer: [] for layer in LAYERS}
    regular: dict[str, list] = {layer: [] for layer in LAYERS}
    for path in sorted((exact / "items").rglob("*.h5")):
        with h5py.File(path, "r") as f, h5py.File(trunk / path.relative_to(exact), "r") as g:
            frames = int(f.attrs["num_frames"])
            for layer in LAYERS:
                for name, ds in f[f"rgb/{layer}/mean"].items():
                    a, b = ds[()], g[f"rgb/{layer}/mean/{name}"][()]
                    out[layer].append((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
                    span = (int(ds.attrs["length"]) - 1) * int(ds.attrs["step"]) + 1
                    regular[layer].append(np.full(len(a), span <= frames))
    return {k: (np.concatenate(out[k]), np.concatenate(regular[k])) for k in LAYERS}


def long_video(path: Path, minutes: float, fps: int = 30) -> Path:
    """A 640x480 MJPG video of `minutes` (a textured pattern drifting): for peak memory."""
    import cv2
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (480 + 64, 640 + 64, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for f in range(int(minutes * 60 * fps)):
        dy, dx = (f // 3) % 64, f % 64
        writer.write(np.ascontiguousarray(texture[dy:dy + 480, dx:dx + 640]))
    writer.release()
    return path


def peak_rss(video: Path, folder: Path) -> float:
    """Peak RSS (bytes) of `python -m stages.extract trunk=on` (HMDB51 preset) on the one video."""
    root = folder / "long"
    (root / "long").mkdir(parents=True, exist_ok=True)
    link = root / "long" / video.name
    if not link.exists():
        link.symlink_to(video)
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "stages.extract", f"root={str(root)!r}",
           "dataset=folder", "dataset_options={'folds': 0, 'strict': False}", "trunk=on",
           f"cache_root={str(folder / 'cache-long')!r}", "layer=('logits',)",
           *[f"{k}={v!r}" for k, v in PRESETS["hmdb51"].items()]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"stage 1 on {video} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- arid_train, paired

def arid_predictions(cache_root: str, trunk: str, seeds: list[int]) -> dict[str, dict]:
    """method -> {(seed, video id): (true, predicted)} for the quality benchmark's first-order
    and default rows (stages/grids/arid_quality.json), with trunk=off or on."""
    from pipeline.idt.settings import IDTConfig
    from pipeline.learn.evaluate import evaluate
    from pipeline.learn.settings import EvaluateConfig
    from pipeline.pooling.descriptors import compute_descriptors
    from pipeline.pooling.settings import DescriptorConfig
    from pipeline.results.sweep import as_token, read_grid
    base, rows = read_grid(ROOT / "stages" / "grids" / "arid_quality.json")
    out: dict[str, dict] = {}
    for row in rows[:2]:                                  # first-order, default configuration
        for seed in seeds:
            tokens = ([as_token(k, v) for k, v in base.items() if k != "dataset_options"]
                      + [f"root={str(VIDEOS / 'arid_train')!r}", f"cache_root={cache_root!r}",
                         f"trunk={trunk!r}", as_token("dataset_options", {"folds": 5, "seed": seed})]
                      + [as_token(k, v) for k, v in row.items() if k != "name"])
            e, d, v, i = parse_overrides(tokens, ExtractConfig, DescriptorConfig, EvaluateConfig, IDTConfig)
            compute_descriptors(e, d)
            folder, _ = evaluate(e, d, v, i)
            for split in sorted((folder / "splits").glob("*.json")):
                for p in json.loads(split.read_text())["predictions"]:
                    out.setdefault(row["name"], {})[seed, p["id"]] = (p["true"][0], p["pred"])
    return out


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95%) of a proportion k / n."""
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_table(exact: dict, trunk: dict) -> str:
    """Markdown: per method, accuracy of each with its Wilson interval, the discordant pairs
    (b: exact right / trunk wrong, c: the reverse) and the exact McNemar p (binomial on b + c)."""
    from scipy.stats import binomtest
    lines = ["| method | exact % [95% CI] | trunk % [95% CI] | b (exact only) | c (trunk only) | McNemar p |",
             "|---|---|---|---|---|---|"]
    for method in exact:
        keys = sorted(exact[method])
        a = np.array([exact[method][k][0] == exact[method][k][1] for k in keys])
        t = np.array([trunk[method][k][0] == trunk[method][k][1] for k in keys])
        b, c, n = int((a & ~t).sum()), int((~a & t).sum()), len(keys)
        p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        ci = lambda x: "[{:.1f}, {:.1f}]".format(*(100 * v for v in wilson(int(x.sum()), n)))  # noqa: E731
        lines.append(f"| {method} | {100 * a.mean():.2f} {ci(a)} | {100 * t.mean():.2f} {ci(t)} | "
                     f"{b} | {c} | {p:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3, help="arid6 clips for FLOPs, wall, cosine")
    parser.add_argument("--rss-minutes", type=float, default=10.0)
    parser.add_argument("--no-rss", action="store_true", help="skip the long-video memory check")
    parser.add_argument("--arid", action="store_true", help="the paired arid_train comparison")
    parser.add_argument("--cache-root", default=None, help="--arid: a cache root holding (or to "
                        "hold) the quality benchmark's stage-1 features")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (VIDEOS / "arid6").is_dir():
        print(f"bench_trunk: SKIPPED: the real clips are not at {VIDEOS} (only in the project's workspace)")
        return 0
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-trunk-") as tmp:
        tmp = Path(tmp)
        clips = pick_clips(args.clips)
        chunk = ExtractConfig().trunk_chunk
        every = pick_clips(10 ** 6) + sorted((VIDEOS / "arid_train").rglob("*.mp4"))
        lengths = [VideoReader(c).metadata()["frame_count"] for c in every]
        exact_flops, trunk_flops = flops_per_video(lengths, chunk)
        print(f"HMDB51 preset, Inception I3D 224 px, {', '.join(LAYERS)} from one pass; FLOPs over "
              f"the {len(every)} real clips of arid6 and arid_train (median "
              f"{int(np.median(lengths))} frames), wall and cosine on {len(clips)} of arid6")
        report("GFLOPs per video, exact windows", exact_flops / 1e9, "", None)
        report("GFLOPs per video, trunk", trunk_flops / 1e9, "", None)
        ok &= report("FLOPs per video, trunk / exact", trunk_flops / exact_flops,
                     f"<= {TARGETS['flops']}", trunk_flops / exact_flops <= TARGETS["flops"])
        for frames in (40, 50, 60, 69, 75, 90, 150, 300):      # the ratio falls with the clip's length
            e, t = flops_per_video([frames], chunk)
            report(f"FLOPs, trunk / exact, a {frames}-frame clip", t / e, "", None)
        root = clip_root(clips, tmp)
        wall_trunk, trunk_folder = stage1(root, tmp / "cache-trunk", "on")
        wall_exact, exact_folder = stage1(root, tmp / "cache-exact", "off")
        report("stage 1 seconds per video, exact", wall_exact / len(clips), "", None)
        report("stage 1 seconds per video, trunk", wall_trunk / len(clips), "", None)
        ok &= report("stage 1 wall, trunk / exact", wall_trunk / wall_exact, f"<= {TARGETS['wall']}",
                     wall_trunk / wall_exact <= TARGETS["wall"])
        for layer, (cos, regular) in cosines(exact_folder, trunk_folder).items():
            for what, c in (("all", cos), ("regular", cos[regular]),
                            ("longer than the clip", cos[~regular])):
                if len(c):
                    report(f"cosine {layer}, {what} {len(c)} windows: mean", float(c.mean()), "", None)
                    report(f"cosine {layer}, {what} {len(c)} windows: 5th percentile",
                           float(np.percentile(c, 5)), "", None)
        if not args.no_rss:
            video = long_video(tmp / "long.avi", args.rss_minutes)
            rss = peak_rss(video, tmp) / 2 ** 30
            ok &= report(f"peak RSS GiB, trunk=on, {args.rss_minutes:g}-min 640x480 video", rss,
                         f"< {TARGETS['rss_gib']}", rss < TARGETS["rss_gib"])
    if args.arid:
        if not args.cache_root:
            parser.error("--arid needs --cache-root (stage 1 of 150 clips is cached there)")
        seeds = [int(s) for s in args.seeds.split(",")]
        exact = arid_predictions(args.cache_root, "off", seeds)
        trunk = arid_predictions(args.cache_root, "on", seeds)
        print(f"\n## arid_train, 150 clips, stratified 5-fold x seeds {seeds}: trunk=on vs trunk=off, "
              f"paired per (seed, video)\n")
        print(paired_table(exact, trunk))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
