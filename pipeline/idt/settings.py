"""Settings of improved dense trajectories and their Fisher-vector encoding (docs/method.md, IDT and
fusion). Every key starts with `idt_` so it can join the project's flat key namespace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

IDT_FLOWS = ("farneback", "dis")        # see trajectories.FLOW_ESTIMATORS


@dataclass(frozen=True)
class IDTConfig:
    """Improved dense trajectories (Wang & Schmid, ICCV 2013) + Fisher vectors."""

    # sampling and tracking
    idt_stride: int = 5                 # dense grid step in px (W = 5 in the paper; min_distance)
    idt_scales: int = 8                 # at most 8 spatial scales; fewer when the frame is small
                                        # (a scale exists only while its short side >= idt_patch)
    idt_scale_factor: float = 1 / math.sqrt(2)  # scale step 1/sqrt(2) between pyramid levels
    idt_length: int = 15                # L = 15 frames: longer tracks drift (the paper, Fig. 4)
    idt_quality: float = 0.001          # keep a grid point where the min eigenvalue of its 3x3
                                        # structure tensor > quality * the frame's maximum
                                        # (DenseTrackStab's `quality`)
    idt_median: int = 3                 # median filter (px) on the flow used to move points
    idt_flow: str = "farneback"         # Farneback (2003) as the original; "dis" is faster
    # pruning (DenseTrackStab's IsValid / IsCameraMotion)
    idt_min_var: float = math.sqrt(3)   # static: std of x and of y both below this (px)
    idt_max_var: float = 50.0           # erratic: std of x or y above this (px)
    idt_max_dis: float = 20.0           # erratic: one step > 20 px and > 70% of the track length
    idt_min_motion: float = 1.0         # camera motion: largest compensated step <= 1 px
    # camera motion
    idt_camera_motion: bool = True      # homography between frames (RANSAC) removed from the flow
                                        # before HOF, MBH and the trajectory shape (the "improved")
    idt_orb_features: int = 500         # ORB keypoints matched across frames, merged with flow
                                        # correspondences (the original merges SURF; SURF is
                                        # non-free); 0 = flow correspondences only
    # descriptors (the 32x32x15 tube of 2x2x3 cells)
    idt_patch: int = 32                 # N = 32 px side of the tube, at each scale
    idt_xy_cells: int = 2               # n_sigma = 2 cells along x and y
    idt_t_cells: int = 3                # n_tau = 3 cells along time (5 frames each for L = 15)
    idt_min_flow: float = 0.4           # HOF: flow below 0.4 px goes to the extra zero bin
    idt_epsilon: float = 0.05           # added to every bin before the per-frame root-L1 norm
    # Fisher-vector encoding
    idt_gmm_components: int = 256       # K = 256 diagonal Gaussians per descriptor type
    idt_pca_ratio: float = 0.5          # PCA keeps half the dimensions (decorrelates for the
                                        # diagonal GMM)
    idt_gmm_samples: int = 256_000      # descriptors sampled per type to fit PCA and the GMM
                                        # (256,000 as Wang & Schmid)
    idt_seed: int = 0                   # seeds the sample, PCA and GMM initialisation
    # source
    idt_import: str | None = None       # a folder of DenseTrackStab text output, <item id>.txt
                                        # or .txt.gz, to import instead of extracting (stages.idt);
                                        # where it lives keys nothing: each item keeps its file's
                                        # identity

    def __post_init__(self):
        ints = {"idt_stride": (self.idt_stride, 1), "idt_scales": (self.idt_scales, 1),
                "idt_length": (self.idt_length, 2), "idt_median": (self.idt_median, 1),
                "idt_orb_features": (self.idt_orb_features, 0),
                "idt_patch": (self.idt_patch, 2), "idt_xy_cells": (self.idt_xy_cells, 1),
                "idt_t_cells": (self.idt_t_cells, 1),
                "idt_gmm_components": (self.idt_gmm_components, 1),
                "idt_gmm_samples": (self.idt_gmm_samples, 1), "idt_seed": (self.idt_seed, 0)}
        for key, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key}={value!r} must be an integer")
            if value < low:
                raise ValueError(f"{key}={value} must be >= {low}")
        if self.idt_median % 2 == 0:
            raise ValueError(f"idt_median={self.idt_median} must be odd (1 = no filtering)")
        if not 0 < self.idt_scale_factor < 1:
            raise ValueError(f"idt_scale_factor={self.idt_scale_factor} must be in (0, 1)")
        if not 0 <= self.idt_quality < 1:
            raise ValueError(f"idt_quality={self.idt_quality} must be in [0, 1)")
        if self.idt_patch % self.idt_xy_cells:
            raise ValueError(f"idt_patch={self.idt_patch} must be a multiple of "
                             f"idt_xy_cells={self.idt_xy_cells}")
        if self.idt_length < self.idt_t_cells:
            raise ValueError(f"idt_length={self.idt_length} must be >= "
                             f"idt_t_cells={self.idt_t_cells} (at least one frame per cell)")
        for key in ("idt_min_var", "idt_max_var", "idt_max_dis", "idt_min_motion",
                    "idt_min_flow", "idt_epsilon"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 0")
        if self.idt_max_var <= self.idt_min_var:
            raise ValueError(f"idt_max_var={self.idt_max_var} must be > "
                             f"idt_min_var={self.idt_min_var}")
        if not 0 < self.idt_pca_ratio <= 1:
            raise ValueError(f"idt_pca_ratio={self.idt_pca_ratio} must be in (0, 1]")
        if self.idt_flow not in IDT_FLOWS:
            raise ValueError(f"idt_flow={self.idt_flow!r}: choose one of {list(IDT_FLOWS)}")
        if self.idt_import is not None and not isinstance(self.idt_import, str):
            raise ValueError(f"idt_import={self.idt_import!r} must be a folder path or None")
        if not isinstance(self.idt_camera_motion, bool):
            raise ValueError(f"idt_camera_motion={self.idt_camera_motion!r} must be True or False")

    @property
    def t_stride(self) -> int:
        """Frames per temporal cell (5 for L = 15, 3 cells); frames past nt * stride are unused,
        as in DenseTrackStab."""
        return self.idt_length // self.idt_t_cells

    def dims(self) -> dict[str, int]:
        """Length of each part of one trajectory's output: header, traj, hog, hof, mbhx, mbhy."""
        cells = self.idt_xy_cells ** 2 * self.idt_t_cells
        return {"header": 10, "traj": 2 * self.idt_length, "hog": 8 * cells, "hof": 9 * cells,
                "mbhx": 8 * cells, "mbhy": 8 * cells}
