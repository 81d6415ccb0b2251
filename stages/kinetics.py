"""Kinetics-400 top-k from the command line: `python -m stages.kinetics videos=<folder or file>
[top_k=5] [frames=250] [backbone=inception_i3d weights=hub device=auto]` prints each video's
classes by the backbone's own Kinetics classifier: proof that the real weights are installed and
work (`make kinetics VIDEOS=...`). Writes nothing."""
from __future__ import annotations

import logging
import sys

from pipeline.core.devices import resolve_device
from pipeline.extract.backbones import build_backbone
from pipeline.extract.kinetics import MAX_FRAMES, classify
from pipeline.extract.settings import ExtractConfig
from pipeline.extract.video import VideoError
from pipeline.learn.predict import VideoSet
from pipeline.learn.settings import TrainConfig
from stages.common import EXIT_FAILED_ITEMS, EXIT_OK, own_options, run

log = logging.getLogger("stages")
OPTIONS = {"frames": f"frames read from each video's start (default {MAX_FRAMES}: 10 s at 25 fps)"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, rest = own_options(argv, OPTIONS)
    if any(a in ("-h", "--help") for a in argv):
        print(f"kinetics: videos=<folder or files> top_k=5 frames={MAX_FRAMES} ({OPTIONS['frames']}); "
              f"backbone=, weights=, device= as for make extract")
        return EXIT_OK

    def body(ecfg: ExtractConfig, dcfg, vcfg, icfg, tcfg: TrainConfig) -> int:
        if ecfg.weights == "none":
            raise ValueError("weights=none: random weights classify nothing; kinetics needs the "
                             "real weights (weights=hub, or a checkpoint path)")
        frames = int(own.get("frames", MAX_FRAMES))
        items = VideoSet(tcfg.videos).items()
        model, info = build_backbone(ecfg.backbone, weights=ecfg.weights, seed=ecfg.seed)
        device = resolve_device(ecfg.device)
        print(f"Kinetics-400 top-{tcfg.top_k} by {ecfg.backbone} ({info.source}: {info.file}), "
              f"first {frames} frames of each video")
        failed = 0
        for item in items:
            try:
                top = classify(item.path, model, top_k=tcfg.top_k, max_frames=frames, device=device)
            except VideoError as exc:
                log.error("%s", exc)
                failed += 1
                continue
            print(f"{item.id}: " + ", ".join(f"{name} {p:.2f}" for name, p in top), flush=True)
        return EXIT_FAILED_ITEMS if failed else EXIT_OK

    return run(rest, 5, body, writes=False)


if __name__ == "__main__":
    sys.exit(main())
