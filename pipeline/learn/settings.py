"""Settings of the heads (EvaluateConfig) and of the learned stage 2 (TrainConfig)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.settings import nokey


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation: a head trained per split on the cached descriptors, recorded in the ledger."""

    head: str = "svm"                   # svm (the authors' classifier), logreg, linear, mlp
    C: Any = (0.1, 1.0, 10.0, 100.0)    # SVM / logreg regularisation; a tuple is a grid chosen by
                                        # cross-validation on each split's training part only
                                        # (measured: grid 94.9% vs C=1 94.0% on arid_train folds)
    C_extend: int = 3                   # a grid's winner at an end is re-tried one log step further
                                        # (x10 on this grid), up to 3 steps per end, until interior;
                                        # else a warning with the value (first order chose C=100,
                                        # the top, on real clips: docs/statistics.md)
    idt: str = "off"                    # "on": HoT fused with IDT Fisher vectors (a weighted kernel
                                        # sum, the weight cross-validated on the training part);
                                        # "only": IDT alone; needs `make idt` first
    fusion: str = "kernel"              # "kernel" (weighted sum of kernels) or "late" (of scores)
    name: str = nokey("")              # the results-table row name; "" = the paper-style name
    ledger: str = nokey("")            # results ledger (SQLite); "" = <cache_root>/ledger.sqlite

    def __post_init__(self):
        from pipeline.learn.heads import HEADS
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}: choose one of {sorted(HEADS)}")
        grid = self.C if isinstance(self.C, (tuple, list)) else (self.C,)
        if not grid or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0
                               for c in grid):
            raise ValueError(f"C={self.C!r} must be > 0, or a tuple of such values (a grid)")
        object.__setattr__(self, "C", tuple(grid) if len(grid) > 1 else float(grid[0]))
        if not isinstance(self.C_extend, int) or isinstance(self.C_extend, bool) \
                or self.C_extend < 0:
            raise ValueError(f"C_extend={self.C_extend!r} must be an integer >= 0 (log steps past "
                             f"an end of the C grid; 0 = never extend)")
        if self.idt not in ("off", "on", "only"):
            raise ValueError(f"idt={self.idt!r}: choose 'off', 'on' (fused with HoT) or 'only'")
        if self.fusion not in ("kernel", "late"):
            raise ValueError(f"fusion={self.fusion!r}: choose 'kernel' or 'late'")
        if self.idt != "off" and self.head != "svm":
            raise ValueError(f"idt={self.idt!r} fuses SVM kernels; use head=svm")



@dataclass(frozen=True)
class TrainConfig:
    """Learned stage 2 (`make train`, `make predict`): an attention pooling trained end to end per
    split on the cached sketched windows (METHOD.md "Feature matrix and attention")."""

    attention: str = "hot"              # none | hot (HoT group attention) | ap | pyramid | self;
                                        # hot is the method of the paper
    nonneg: str = "softplus"            # hot: w >= 0 by softplus (w = 1 at init), sigmoid or softmax
                                        # over a video's groups; the paper leaves it open (arid_train,
                                        # 15 folds: 92.9 / 93.1 / 92.9, within the seeds' spread)
    hidden: int = 0                     # hot: width of w's hidden layer; 0 = linear score (fewest
                                        # parameters for the few videos of a split; 64: 93.6, within
                                        # the spread)
    positions: str = "windows"          # ap, pyramid, self: attend over the sketched "windows" of a
                                        # video, or over the "cells" of the maps stage 1 stored
                                        # (pool=(..., 'map')): every window's H' x W' positions
    rank: int = 1                       # ap: rank P (P top-down x bottom-up pairs)
    bottom_up: str = "shared"           # ap: "shared" b, "per_class" b_k, or "none" (average
                                        # pooling, AP's top-down-only case)
    pyramid_fusion: str = "product"     # pyramid: fusion of the levels' scores: product (best in
                                        # STPA), sum or max; levels are the stored parts, top last
    maps: int = 4                       # pyramid: attention maps (rows of A)
    queries: int = 4                    # self: learned queries (arid_train: 4 87.1% vs 1 82.2%)
    lr: float = 1e-2                    # Adam step; the classifiers' default, stable on unit rows
                                        # (arid_train: 92.9 vs 92.2 at 1e-3)
    weight_decay: Any = (0.0, 1e-3)     # a grid chosen on the validation part carved from each
                                        # split's training part (never the test part)
    train_batch: int = 32               # videos per training step (not `batch_size`: that key is
                                        # ExtractConfig's windows per forward pass); arid_train,
                                        # 15 folds, 32 vs 16: HoT+SVM 94.9 both, softmax 92.9 vs
                                        # 93.3, others within the spread; a HoT fold trains in
                                        # 10 s instead of 18 s
    max_epochs: int = 100               # upper bound; early stopping usually ends sooner
    patience: int = 10                  # epochs without a better validation loss before stopping
    train_seed: int = 0                 # seeds initialisation, shuffling and the validation part
                                        # (not `seed`: that key is ExtractConfig's, one namespace)
    model: str = nokey("")             # predict: a trained model folder (train/.../<split>)
    videos: tuple = nokey(())          # predict: a folder of videos, or video files
    top_k: int = nokey(5)              # predict: classes listed per video, best first

    def __post_init__(self):
        from pipeline.learn.attention import ATTENTIONS
        from pipeline.learn.attention.hot import NONNEG
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        if self.nonneg not in NONNEG:
            raise ValueError(f"nonneg={self.nonneg!r}: choose one of {', '.join(NONNEG)}")
        if not isinstance(self.hidden, int) or isinstance(self.hidden, bool) or self.hidden < 0:
            raise ValueError(f"hidden={self.hidden!r} must be an integer >= 0 (0 = linear)")
        if self.positions not in ("windows", "cells"):
            raise ValueError(f"positions={self.positions!r}: choose 'windows' or 'cells'")
        if self.bottom_up not in ("shared", "per_class", "none"):
            raise ValueError(f"bottom_up={self.bottom_up!r}: choose 'shared', 'per_class' or "
                             f"'none' (average pooling)")
        from pipeline.learn.attention.pyramid import FUSIONS
        if self.pyramid_fusion not in FUSIONS:
            raise ValueError(f"pyramid_fusion={self.pyramid_fusion!r}: choose one of "
                             f"{', '.join(FUSIONS)}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ValueError(f"lr={self.lr!r} must be a number in (0, 10)")
        grid = self.weight_decay if isinstance(self.weight_decay, (tuple, list)) else (self.weight_decay,)
        if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                               for v in grid):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0, or a tuple of such "
                             f"values (a grid)")
        object.__setattr__(self, "weight_decay",
                           tuple(float(v) for v in grid) if len(grid) > 1 else float(grid[0]))
        for name in ("max_epochs", "patience", "top_k", "rank", "maps", "queries", "train_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        videos = (self.videos,) if isinstance(self.videos, str) else tuple(self.videos)
        if not all(isinstance(v, str) and v for v in videos):
            raise ValueError(f"videos={self.videos!r}: give a folder or video file paths")
        object.__setattr__(self, "videos", videos)
