"""IDT descriptors in the 32x32x15 tube around a trajectory (Wang & Schmid, ICCV 2013): HOG, HOF
(with the zero-motion bin), MBHx, MBHy from integral histograms, vectorised over all trajectories
of a frame, and the trajectory-shape descriptor; plus the assembly of DenseTrackStab's records.

Per frame and per trajectory the 2x2 spatial cells of each descriptor are root-L1 normalised
(sqrt of the L1-normalised histogram + epsilon, as DenseTrackStab); the output averages them over
the frames of each of the 3 temporal cells: (cells_t, cells_x, cells_y, bins) flattened.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.idt.settings import IDTConfig

HOG_BINS, HOF_BINS, MBH_BINS = 8, 9, 8          # HOF: 8 orientations + the zero-motion bin
KINDS = ("hog", "hof", "mbhx", "mbhy")           # order of the channels and of the output
CHANNELS = {"hog": HOG_BINS, "hof": HOF_BINS, "mbhx": MBH_BINS, "mbhy": MBH_BINS}
OUTPUT_KEYS = ("header", "traj", "hog", "hof", "mbhx", "mbhy")
HEADER = ("frame", "mean_x", "mean_y", "var_x", "var_y", "length", "scale", "x_pos", "y_pos",
          "t_pos")                               # DenseTrackStab's 10 header values


def _orientation_bins(dx: np.ndarray, dy: np.ndarray, bins: int, zero_threshold: float | None
                      ) -> tuple[np.ndarray, ...]:
    """(first bin, its weight, second bin, its weight), each (H, W); see orientation_histogram."""
    n_orient = bins - 1 if zero_threshold is not None else bins
    mag, ang = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    fbin = ang * np.float32(n_orient / 360.0)
    b0 = fbin.astype(np.int32)                  # angles are >= 0: truncation is floor
    w1 = (fbin - b0) * mag
    w0 = mag - w1
    b0[b0 >= n_orient] -= n_orient              # an angle rounded up to 360
    b1 = b0 + 1
    b1[b1 == n_orient] = 0
    if zero_threshold is not None:              # HOF: slow pixels vote 1 for the last bin
        still = mag <= zero_threshold
        b0[still], w0[still], w1[still] = n_orient, 1.0, 0.0
    return b0, w0, b1, w1


def _scatter(out: np.ndarray, offset: int, dx: np.ndarray, dy: np.ndarray, bins: int,
             zero_threshold: float | None = None) -> None:
    """Write the orientation histogram of (dx, dy) into channels offset.. of out (H, W, C)."""
    h, w, c = out.shape
    b0, w0, b1, w1 = _orientation_bins(np.ascontiguousarray(dx, dtype=np.float32),
                                       np.ascontiguousarray(dy, dtype=np.float32),
                                       bins, zero_threshold)
    base = np.arange(offset, h * w * c, c, dtype=np.int64).reshape(h, w)
    flat = out.reshape(-1)
    np.put(flat, base + b1, w1)                 # b0 != b1 for every pixel: plain writes;
    np.put(flat, base + b0, w0)                 # a zero-bin pixel writes w1 = 0, then its 1


def orientation_histogram(dx: np.ndarray, dy: np.ndarray, bins: int,
                          zero_threshold: float | None = None) -> np.ndarray:
    """Per-pixel orientation histogram of a vector field, (H, W) x 2 -> (H, W, bins) float32.

    A vector at angle a (degrees, y pointing down, as DenseTrackStab) adds its magnitude to bins
    floor(f) and floor(f) + 1 (mod the orientation bins), f = a * orientation_bins / 360, split
    linearly: all of it lands in bin k at a = k * 360 / orientation_bins. With `zero_threshold`,
    the last bin is HOF's zero-motion bin: a vector of magnitude <= zero_threshold adds 1 to it
    and nothing to the orientation bins.
    """
    out = np.zeros(np.shape(dx) + (bins,), dtype=np.float32)
    _scatter(out, 0, dx, dy, bins, zero_threshold)
    return out


def frame_channels(grey: np.ndarray, flow: np.ndarray, config: IDTConfig) -> np.ndarray:
    """Orientation channels of one frame, (H, W) uint8 grey + (H, W, 2) flow -> (H, W, 33):
    HOG of the image gradient | HOF of the flow | MBHx of grad(flow_x) | MBHy of grad(flow_y).
    Derivatives are [-1, 0, 1] (Sobel, ksize=1), as DenseTrackStab."""
    d = lambda img, ox, oy: cv2.Sobel(img, cv2.CV_32F, ox, oy, ksize=1)  # noqa: E731
    fx = np.ascontiguousarray(flow[..., 0], dtype=np.float32)
    fy = np.ascontiguousarray(flow[..., 1], dtype=np.float32)
    out = np.zeros(grey.shape[:2] + (sum(CHANNELS.values()),), dtype=np.float32)
    _scatter(out, 0, d(grey, 1, 0), d(grey, 0, 1), HOG_BINS)
    _scatter(out, HOG_BINS, fx, fy, HOF_BINS, zero_threshold=config.idt_min_flow)
    _scatter(out, HOG_BINS + HOF_BINS, d(fx, 1, 0), d(fx, 0, 1), MBH_BINS)
    _scatter(out, HOG_BINS + HOF_BINS + MBH_BINS, d(fy, 1, 0), d(fy, 0, 1), MBH_BINS)
    return out


def integral_histogram(channels: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 -> (H + 1, W + 1, C) float32 with I[y, x] = sum of channels[:y, :x]
    (float32 as DenseTrackStab; OpenCV's integral, numpy past its 512-channel limit)."""
    h, w, c = channels.shape
    if c <= 512:
        return cv2.integral(np.ascontiguousarray(channels, dtype=np.float32),
                            sdepth=cv2.CV_32F).reshape(h + 1, w + 1, c)
    out = np.zeros((h + 1, w + 1, c), np.float32)
    np.cumsum(np.cumsum(channels, axis=0, dtype=np.float32), axis=1, out=out[1:, 1:])
    return out


def patch_corners(points: np.ndarray, width: int, height: int, patch: int) -> np.ndarray:
    """Top-left corner (n, 2) int of the patch x patch box centred on each point (n, 2),
    shifted to lie inside the width x height frame (DenseTrackStab's GetRect)."""
    if width < patch or height < patch:
        raise ValueError(f"a {width}x{height} frame (scale) is smaller than idt_patch={patch}")
    corner = np.rint(points).astype(np.int64) - patch // 2
    return np.clip(corner, 0, [width - patch, height - patch])


def cell_histograms(integral: np.ndarray, points: np.ndarray, patch: int, cells: int
                    ) -> np.ndarray:
    """Sums of the channels over the cells x cells grid of the patch around each point.

    integral: (H + 1, W + 1, C) from integral_histogram; points: (n, 2) x, y ->
    (n, cells_x, cells_y, C) float32 (x-major, DenseTrackStab's order).
    """
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    corner = patch_corners(points, w, h, patch)
    edges = np.arange(cells + 1) * (patch // cells)
    xs = corner[:, 0, None] + edges                              # (n, cells + 1)
    ys = corner[:, 1, None] + edges
    grid = integral[ys[:, None, :], xs[:, :, None]]              # (n, x, y, C)
    sums = grid[:, 1:, 1:] - grid[:, :-1, 1:] - grid[:, 1:, :-1] + grid[:, :-1, :-1]
    return sums.astype(np.float32, copy=False)


def normalise_cells(sums: np.ndarray, epsilon: float) -> np.ndarray:
    """Root-L1 normalisation of one frame's descriptor: (n, cx, cy, B) -> (n, cx*cy*B) with
    v = sqrt((max(s, 0) + eps) / sum(max(s, 0) + eps)) over all cells and bins (Descriptors.h)."""
    v = np.maximum(sums.reshape(len(sums), -1), 0) + np.float32(epsilon)
    return np.sqrt(v / v.sum(axis=1, keepdims=True))


def frame_descriptors(grey: np.ndarray, flow: np.ndarray, points: np.ndarray,
                      config: IDTConfig) -> np.ndarray:
    """One frame's HOG | HOF | MBHx | MBHy at each point, each root-L1 normalised.

    grey: (H, W) uint8 frame t; flow: (H, W, 2) camera-compensated flow t -> t+1; points: (n, 2)
    positions in frame t -> (n, 132) float32 (32 + 36 + 32 + 32 for 2x2 cells).
    """
    sums = cell_histograms(integral_histogram(frame_channels(grey, flow, config)), points,
                           config.idt_patch, config.idt_xy_cells)
    parts, start = [], 0
    for kind in KINDS:
        parts.append(normalise_cells(sums[..., start:start + CHANNELS[kind]], config.idt_epsilon))
        start += CHANNELS[kind]
    return np.concatenate(parts, axis=1)


def frame_slices(config: IDTConfig) -> dict[str, slice]:
    """Where each descriptor lies in a frame_descriptors row."""
    out, start = {}, 0
    for kind in KINDS:
        size = CHANNELS[kind] * config.idt_xy_cells ** 2
        out[kind] = slice(start, start + size)
        start += size
    return out


def trajectory_shape(disp: np.ndarray) -> np.ndarray:
    """Trajectory descriptor: displacements (n, L, 2) -> (n, 2L) divided by the sum of their
    magnitudes (Wang et al., IJCV 2013, Eq. 1; DenseTrackStab uses the compensated flow)."""
    total = np.linalg.norm(disp, axis=2).sum(axis=1)
    return (disp / np.maximum(total, 1e-12)[:, None, None]).reshape(len(disp), -1)


def assemble(batches: list[dict], config: IDTConfig, *, width: int, height: int,
             start_frame: int, num_frames: int, return_points: bool = False
             ) -> dict[str, np.ndarray]:
    """DenseTrackStab's per-trajectory output from the tracker's finished batches.

    Each batch: frame (int, absolute index of the last point), scale (float), points (n, L+1, 2)
    and disp (n, L, 2) in full-frame pixels, acc (n, t_cells, 132) per-frame descriptor sums.
    Returns float32 {"header": (n, 10), "traj": (n, 2L), "hog", "hof", "mbhx", "mbhy"} (and
    "points": (n, L+1, 2) if asked), in the order the trajectories finished.
    """
    dims = config.dims()
    rows = [b for b in batches if len(b["points"])]
    if not rows:
        out = {k: np.zeros((0, dims[k]), np.float32) for k in OUTPUT_KEYS}
        if return_points:
            out["points"] = np.zeros((0, config.idt_length + 1, 2), np.float32)
        return out
    points = np.concatenate([b["points"] for b in rows]).astype(np.float64)
    disp = np.concatenate([b["disp"] for b in rows])
    acc = np.concatenate([b["acc"] for b in rows]) / np.float32(config.t_stride)
    frame = np.concatenate([np.full(len(b["points"]), b["frame"], np.float64) for b in rows])
    scale = np.concatenate([np.full(len(b["points"]), b["scale"], np.float64) for b in rows])
    mean = points.mean(axis=1)
    std = points.std(axis=1)
    length = np.linalg.norm(np.diff(points, axis=1), axis=2).sum(axis=1)
    t_pos = (frame - config.idt_length / 2.0 - start_frame) / max(num_frames, 1)
    header = np.column_stack([frame, mean, std, length, scale,
                              np.clip(mean[:, 0] / width, 0, 0.999),
                              np.clip(mean[:, 1] / height, 0, 0.999), np.clip(t_pos, 0, 0.999)])
    out = {"header": header.astype(np.float32), "traj": trajectory_shape(disp).astype(np.float32)}
    for kind, sl in frame_slices(config).items():
        out[kind] = np.ascontiguousarray(acc[:, :, sl].reshape(len(acc), -1), dtype=np.float32)
    if return_points:
        out["points"] = points.astype(np.float32)
    return out
