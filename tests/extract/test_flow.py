"""Optical flow: direction and size on translated textures, I3D input scaling, streaming."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.extract.flow import FLOW_METHODS, FlowStream, compute_flow, flow_to_input, flow_to_unit

SIZE, STEP, FRAMES, MARGIN = 48, 2, 4, 10


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A smooth random texture (96, 96) uint8, seeded."""
    noise = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def translated(texture: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(FRAMES, SIZE, SIZE) gray frames; frame t shows the texture moved by (t*dx, t*dy) px."""
    y0 = x0 = 24
    return np.stack([texture[y0 - t * dy: y0 - t * dy + SIZE, x0 - t * dx: x0 - t * dx + SIZE]
                     for t in range(FRAMES)])


def median_flow(flow: np.ndarray) -> np.ndarray:
    """flow: (T-1, H, W, 2) -> (2,) median over the interior (away from borders)."""
    return np.median(flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(-1, 2), axis=0)


def test_registry():
    assert set(FLOW_METHODS) == {"tvl1", "dis", "farneback"}
    with pytest.raises(ValueError, match="choose one of"):
        compute_flow(np.zeros((2, 8, 8), np.uint8), method="lucas")


@pytest.mark.parametrize("method", sorted(FLOW_METHODS))
@pytest.mark.parametrize("dx, dy", [(STEP, 0), (0, STEP), (-STEP, 0)])
def test_translation_is_recovered(texture, method, dx, dy):
    frames = translated(texture, dx, dy)
    flow = compute_flow(frames, method)
    assert flow.shape == (FRAMES - 1, SIZE, SIZE, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(median_flow(flow), [dx, dy], atol=0.3)


def test_rgb_frames_give_the_flow_of_their_gray(texture):
    gray = translated(texture, STEP, 0)
    rgb = np.repeat(gray[..., None], 3, axis=3)
    np.testing.assert_array_equal(compute_flow(rgb, "dis"), compute_flow(gray, "dis"))


def test_input_checks():
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(np.zeros((2, 8, 8), np.float32), "dis")
    assert compute_flow(np.zeros((1, 8, 8), np.uint8), "dis").shape == (0, 8, 8, 2)


def test_flow_to_input_range():
    flow = np.array([-50.0, -20.0, -10.0, 0.0, 10.0, 20.0, 50.0]).reshape(-1, 1)
    out = flow_to_input(flow)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [-1, -1, -0.5, 0, 0.5, 1, 1])
    big = np.random.default_rng(1).normal(0, 40, (3, 5, 5, 2))
    assert flow_to_input(big).min() >= -1 and flow_to_input(big).max() <= 1
    np.testing.assert_allclose((flow_to_unit(big) - 0.5) / 0.5, flow_to_input(big), atol=1e-6)


@pytest.mark.parametrize("method", ["tvl1", "dis"])
def test_stream_matches_compute_flow(texture, method):
    frames = translated(texture, STEP, STEP)
    stream = FlowStream(method)
    assert stream.push(frames[0]) is None
    pushed = np.stack([stream.push(f) for f in frames[1:]])
    np.testing.assert_array_equal(pushed, compute_flow(frames, method))
    stream.reset()
    assert stream.push(frames[0]) is None
