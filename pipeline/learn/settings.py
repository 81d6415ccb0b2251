"""Settings of the heads (EvaluateConfig) and of the learned stage 2 (TrainConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from pipeline.core.settings import nokey


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation: a head trained per split on the cached descriptors, recorded in the ledger."""

    head: str = "svm"                   # svm (the authors' classifier), logreg, linear, mlp
    C: Any = (0.1, 1.0, 10.0, 100.0)    # SVM / logreg regularisation; a tuple is a grid chosen by
                                        # cross-validation on each split's training part only
                                        # (a grid beat C=1 on real video: docs/results.md)
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
class TrainSettings:
    """Learned stage 2 (`make train`, `make predict`): an attention type trained end to end per
    split on the cached sketched windows or stored maps (docs/method.md, "Attention"). The keys
    every type shares; each registered type adds its own (TrainConfig below)."""

    attention: str = "hot"              # a registered type (pipeline.learn.attention): hot (HoT
                                        # group attention, the method of the paper), none, ap,
                                        # ap_windows, pyramid, pyramid_windows, self, self_cells,
                                        # learned_query
    lr: float = 1e-2                    # Adam step; the classifiers' default, stable on unit rows
                                        # (1e-3 no better: docs/results.md)
    weight_decay: Any = (0.0, 1e-3)     # a grid chosen on the validation part carved from each
                                        # split's training part (never the test part)
    train_batch: int = 32               # videos per training step (not `batch_size`: that key is
                                        # ExtractConfig's windows per forward pass); 16 was no
                                        # better and trains twice as many steps (docs/results.md)
    max_epochs: int = 100               # upper bound; early stopping usually ends sooner
    patience: int = 10                  # epochs without a better validation loss before stopping
    train_seed: int = 0                 # seeds initialisation, shuffling and the validation part
                                        # (not `seed`: that key is ExtractConfig's, one namespace)
    model: str = nokey("")             # predict: a trained model folder (train/.../<split>)
    videos: tuple = nokey(())          # predict: a folder of videos, or video files
    top_k: int = nokey(5)              # predict: classes listed per video, best first

    def __post_init__(self):
        from pipeline.learn.attention import ATTENTIONS, attention_options
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        for name, option in attention_options().items():
            if option.check is not None and hasattr(self, name):
                object.__setattr__(self, name, option.check(name, getattr(self, name)))
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ValueError(f"lr={self.lr!r} must be a number in (0, 10)")
        grid = self.weight_decay if isinstance(self.weight_decay, (tuple, list)) else (self.weight_decay,)
        if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                               for v in grid):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0, or a tuple of such "
                             f"values (a grid)")
        object.__setattr__(self, "weight_decay",
                           tuple(float(v) for v in grid) if len(grid) > 1 else float(grid[0]))
        for name in ("max_epochs", "patience", "top_k", "train_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        videos = (self.videos,) if isinstance(self.videos, str) else tuple(self.videos)
        if not all(isinstance(v, str) and v for v in videos):
            raise ValueError(f"videos={self.videos!r}: give a folder or video file paths")
        object.__setattr__(self, "videos", videos)


def _train_config() -> type:
    """TrainSettings plus one field per option the registered attention types declare (their
    flat keys: `make train attention=ap rank=2`), so a new type adds its keys from its own file."""
    from pipeline.learn.attention import attention_options
    options = attention_options()
    cls = make_dataclass("TrainConfig", [(name, o.annotation, field(default=o.default))
                                         for name, o in options.items()],
                         bases=(TrainSettings,), frozen=True)
    cls.__module__, cls.__qualname__ = __name__, "TrainConfig"
    cls.__doc__ = (TrainSettings.__doc__ + "\n\n    Options of the attention types:\n"
                   + "\n".join(f"    {name}: {o.doc}" for name, o in options.items()))
    return cls


TrainConfig = _train_config()
