"""A one-off check for a user with a CUDA GPU (issue "Stage 1 at the paper's scale"): stage 1 on real
clips of ../shared/data/videos/arid6 with device=cuda, exact windows (trunk=off) and trunk=on,
in fp32 and with bf16 autocast; every window's features compared with the CPU run (cosine >= 0.999
per window in fp32; bf16 printed), and windows/s and videos/s of each on the device.
Run `python tests/bench/gpu_check.py [--device cuda] [--clips 4] [--windows hmdb51|quality]
[--weights hub|none] [--size 0]`. With --device cpu (or no GPU) it runs the same plumbing on the
CPU, says so, and compares the CPU with itself. Nothing in the project depends on a GPU; this is
not collected by pytest. One line per check; exit status 1 if an fp32 check fails.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.core.settings import parse_overrides  # noqa: E402
from pipeline.extract.features import extract_features  # noqa: E402
from pipeline.extract.settings import PRESETS, ExtractConfig  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos" / "arid6"
WINDOWS = {"hmdb51": PRESETS["hmdb51"],
           "quality": dict(lengths=(16, 32), strides=(16, 32), steps=((1, 2), (1,)))}
TARGET = 0.999       # cosine of every fp32 window, device against CPU


def clip_root(n: int, folder: Path) -> Path:
    """A folder dataset of symlinks to the first n clips of arid6, one class after another."""
    by_class = [sorted(p.glob("*.mp4")) for p in sorted(VIDEOS.iterdir()) if p.is_dir()]
    clips = [c for k in range(max(map(len, by_class))) for cls in by_class for c in cls[k:k + 1]][:n]
    for clip in clips:
        (folder / clip.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / clip.parent.name / clip.name).symlink_to(clip)
    return folder


def stage1(root: Path, cache: Path, args, *, device: str, trunk: str, precision: str):
    """(seconds, folder, windows) of stage 1 on the clips of `root`."""
    cfg, = parse_overrides([f"root={str(root)!r}", "dataset=folder", "dataset_options={'folds': 0}",
                            f"cache_root={str(cache)!r}", f"device={device!r}", f"trunk={trunk!r}",
                            f"precision={precision!r}", f"weights={args.weights!r}",
                            f"size={args.size}", "layer=('logits', 'pool')",
                            *[f"{k}={v!r}" for k, v in WINDOWS[args.windows].items()]], ExtractConfig)
    start = time.perf_counter()
    result = extract_features(cfg)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"stage 1 ({device}, trunk={trunk}, {precision}) failed: {result.failures}")
    windows = 0
    for path in (result.folder / "items").rglob("*.h5"):
        with h5py.File(path, "r") as f:
            windows += sum(len(ds) for ds in f["rgb/logits/mean"].values())
    return seconds, result.folder, windows


def cosines(a: Path, b: Path) -> np.ndarray:
    """Cosine of every window's features (all layers and pools), folder b against folder a."""
    out = []
    for path in sorted((a / "items").rglob("*.h5")):
        with h5py.File(path, "r") as f, h5py.File(b / path.relative_to(a), "r") as g:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    x, y = obj[()], g[name][()]
                    out.append((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30))
            f.visititems(visit)
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--windows", choices=sorted(WINDOWS), default="hmdb51")
    parser.add_argument("--weights", default="hub", help="hub (real Kinetics-400) or none")
    parser.add_argument("--size", type=int, default=0, help="0: the backbone's 224 px")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    if not VIDEOS.is_dir():
        print(f"gpu_check: SKIPPED: the real clips are not at {VIDEOS}")
        return 0
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: device={device} asked but no CUDA device is visible; running on the CPU")
        device = "cpu"
    on_cpu = device == "cpu"
    if on_cpu:
        print("gpu_check: device=cpu: a plumbing run on the CPU (the CPU compared with itself); "
              "run with --device cuda on a machine with a GPU for the real check")
    else:
        print(f"gpu_check: {torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        root = clip_root(args.clips, tmp / "clips")
        for trunk in ("off", "on"):
            cpu_seconds, reference, cpu_windows = stage1(root, tmp / "cpu", args, device="cpu",
                                                         trunk=trunk, precision="fp32")
            for precision in ("fp32", "bf16"):
                if on_cpu and precision == "fp32":
                    folder, seconds, windows = reference, cpu_seconds, cpu_windows
                else:
                    seconds, folder, windows = stage1(root, tmp / f"{device}-{precision}", args,
                                                      device=device, trunk=trunk, precision=precision)
                cos = cosines(reference, folder)
                name = f"trunk={trunk} {precision} {device} vs cpu fp32"
                if precision == "fp32":
                    passed = bool(cos.min() >= TARGET)
                    ok &= passed
                    print(f"{name:<40s} cosine min {cos.min():.6f} mean {cos.mean():.6f}  target "
                          f">= {TARGET} per window  {'PASS' if passed else 'FAIL'}")
                else:
                    print(f"{name:<40s} cosine min {cos.min():.6f} mean {cos.mean():.6f}  (information)")
                if seconds is not None:
                    print(f"{'':<40s} {windows / seconds:9.1f} windows/s  {args.clips / seconds:7.2f} "
                          f"videos/s  ({windows} windows, {seconds:.1f} s with model loading)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
