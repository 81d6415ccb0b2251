"""Improved dense trajectories (pipeline.idt): tracking, camera motion, descriptors, settings and
the video entry point, on small synthetic frames and (when present) real ARID clips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.idt import IDTConfig, extract_idt, extract_idt_video
from pipeline.idt.descriptors import (CHANNELS, cell_histograms, frame_channels,
                                      frame_descriptors, integral_histogram, orientation_histogram)
from pipeline.idt.trajectories import compensate_flow, pyramid_scales

DIMS = {"header": 10, "traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}
HOF_AT = CHANNELS["hog"]                        # first HOF channel in frame_channels
MBH_AT = CHANNELS["hog"] + CHANNELS["hof"]      # first MBHx channel


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (H, W, 3) uint8 (Gaussian-blurred noise, full range)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    t = (t - t.min()) / (t.max() - t.min()) * 255
    return np.repeat(t.astype(np.uint8)[..., None], 3, axis=2)


def panned(n: int, size: int, step: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """n frames size x size of a static texture seen by a camera moving `step` px per frame:
    the content moves by -step per frame."""
    tex = texture(size + step[1] * n, size + step[0] * n, seed)
    return [tex[t * step[1]:t * step[1] + size, t * step[0]:t * step[0] + size]
            for t in range(n)]


@pytest.fixture(scope="module")
def pan_frames() -> list[np.ndarray]:
    return panned(18, 80, (2, 1))


@pytest.fixture(scope="module")
def pan_tracks(pan_frames) -> dict[str, np.ndarray]:
    return extract_idt(pan_frames, IDTConfig(idt_camera_motion=False), return_points=True)


# --- tracking and camera motion ---------------------------------------------------------------

def test_trajectories_follow_a_translation(pan_tracks):
    pts = pan_tracks["points"]                                     # (n, 16, 2)
    assert len(pts) > 100
    np.testing.assert_allclose(pts[:, -1] - pts[:, 0], np.broadcast_to([-30, -15], (len(pts), 2)),
                               atol=1.0)                           # 15 steps of (-2, -1)
    scales = [s for s, _, _ in pyramid_scales(80, 80, IDTConfig())]    # 1, sqrt(2), 2
    np.testing.assert_allclose(np.unique(pan_tracks["header"][:, 6]), scales, rtol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"idt_orb_features": 0}, {"idt_flow": "dis"}])
def test_camera_motion_compensation_removes_a_pan(pan_frames, pan_tracks, kw):
    compensated = extract_idt(pan_frames, IDTConfig(**kw))
    assert len(pan_tracks["header"]) > 100
    assert len(compensated["header"]) <= 0.05 * len(pan_tracks["header"])


def test_dis_flow_follows_a_translation_too(pan_frames):
    pts = extract_idt(pan_frames, IDTConfig(idt_camera_motion=False, idt_flow="dis"),
                      return_points=True)["points"]
    assert len(pts) > 100
    np.testing.assert_allclose(pts[:, -1] - pts[:, 0], np.broadcast_to([-30, -15], (len(pts), 2)),
                               atol=1.0)


def test_compensation_keeps_an_object_moving_against_the_background():
    """A textured square moving right over a static textured background: the homography follows
    the background, so only trajectories in the square's path survive; those that start on the
    square follow it."""
    bg, obj = texture(96, 96, seed=1), texture(28, 28, seed=2)
    frames = []
    for t in range(18):
        f = bg.copy()
        f[34:62, 10 + 3 * t:38 + 3 * t] = obj                      # x from 10 to 61 + 28
        frames.append(f)
    out = extract_idt(frames, IDTConfig(), return_points=True)
    start, steps = out["points"][:, 0], out["points"][:, -1] - out["points"][:, 0]
    assert np.all((start[:, 1] > 28) & (start[:, 1] < 68))          # none on the background alone
    on_object = ((out["header"][:, 0] == 15) & (out["header"][:, 6] == 1)   # finest scale
                 & (start[:, 0] > 13) & (start[:, 0] < 35)
                 & (start[:, 1] > 37) & (start[:, 1] < 59))
    assert on_object.sum() >= 10
    error = np.linalg.norm(steps[on_object] - [45, 0], axis=1)      # 15 steps of 3 px
    assert np.median(error) < 0.5 and np.mean(error < 1.5) > 0.75   # the edges may lag


def test_homography_compensation_of_a_known_flow():
    """compensate_flow removes exactly the motion of the homography it is given."""
    h, w = 20, 30
    H = np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -2.0], [1e-4, 0, 1]])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    moved = cv2.perspectiveTransform(np.stack([xs, ys], -1).reshape(-1, 1, 2), H).reshape(h, w, 2)
    flow = (moved - np.stack([xs, ys], -1)).astype(np.float32)
    np.testing.assert_allclose(compensate_flow(flow, H), 0, atol=1e-3)
    np.testing.assert_allclose(compensate_flow(flow + 1.5, H)[..., 0].mean(), 1.5, atol=0.1)


def test_static_scene_gives_no_trajectories():
    frames = [texture(64, 64)] * 18
    assert len(extract_idt(frames, IDTConfig(idt_camera_motion=False))["header"]) == 0


def test_frames_smaller_than_the_tube_are_refused():
    with pytest.raises(ValueError, match="idt_patch=32"):
        extract_idt([texture(24, 40)] * 3)


# --- descriptors ------------------------------------------------------------------------------

def test_output_dimensions_and_normalisation(pan_tracks):
    n = len(pan_tracks["header"])
    for key, d in DIMS.items():
        assert pan_tracks[key].shape == (n, d) and pan_tracks[key].dtype == np.float32
    header = pan_tracks["header"]
    assert np.all(header[:, 0] >= 15) and np.all(header[:, 0] <= 17)   # last frame of the track
    np.testing.assert_allclose(header[:, 7], header[:, 1] / 80, rtol=1e-5)  # x_pos = mean_x / W
    np.testing.assert_allclose(header[:, 1:3], pan_tracks["points"].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(header[:, 3:5], pan_tracks["points"].std(axis=1), rtol=1e-4)
    traj = pan_tracks["traj"].reshape(n, 15, 2)
    np.testing.assert_allclose(np.linalg.norm(traj, axis=2).sum(axis=1), 1, rtol=1e-5)
    for key, bins in (("hog", 8), ("hof", 9), ("mbhx", 8), ("mbhy", 8)):
        cells = pan_tracks[key].reshape(n, 3, 4 * bins)            # 3 temporal cells
        assert np.all(cells > 0)
        norms = np.linalg.norm(cells, axis=2)                      # means of unit vectors
        assert np.all(norms <= 1 + 1e-5) and np.all(norms > 0.5)


def test_frame_descriptors_are_root_l1_normalised():
    rng = np.random.default_rng(0)
    grey = texture(48, 64)[..., 0]
    flow = rng.normal(0, 2, (48, 64, 2)).astype(np.float32)
    desc = frame_descriptors(grey, flow, rng.uniform(0, 64, (7, 2)), IDTConfig())
    assert desc.shape == (7, 32 + 36 + 32 + 32)
    for block in np.split(desc, [32, 68, 100], axis=1):
        np.testing.assert_allclose((block ** 2).sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("flow, bin_", [((2.0, 0.0), 0), ((0.0, 2.0), 2), ((-2.0, 0.0), 4),
                                        ((1.0, -1.0), 7), ((0.1, 0.2), 8)])
def test_hof_of_a_uniform_flow_falls_in_its_bin(flow, bin_):
    """Bins of 45 degrees from +x, y pointing down; flow below 0.4 px in the zero bin (8)."""
    grey = np.zeros((40, 40), np.uint8)
    field = np.broadcast_to(np.float32(flow), (40, 40, 2)).copy()
    sums = cell_histograms(integral_histogram(frame_channels(grey, field, IDTConfig())),
                           np.array([[20.0, 20.0]]), 32, 2)[..., HOF_AT:HOF_AT + 9]
    expected = np.zeros(9, np.float32)
    expected[bin_] = 256 * (np.hypot(*flow) if bin_ < 8 else 1)   # 16 x 16 pixels per cell
    np.testing.assert_allclose(sums.reshape(4, 9), np.tile(expected, (4, 1)), rtol=1e-3,
                               atol=0.5)                  # OpenCV angles: ~0.3 degrees


def test_cells_are_x_major_as_densetrackstab():
    """Motion only right of and above the centre lands in cell (x=1, y=0) of (n, x, y, bins)."""
    field = np.zeros((40, 40, 2), np.float32)
    field[:20, 20:] = (2.0, 0.0)
    sums = cell_histograms(integral_histogram(frame_channels(np.zeros((40, 40), np.uint8), field,
                                                             IDTConfig())),
                           np.array([[20.0, 20.0]]), 32, 2)[0, ..., HOF_AT]
    np.testing.assert_allclose(sums, [[0, 0], [512, 0]], atol=0.5)


def test_orientation_split_between_neighbouring_bins():
    h = orientation_histogram(np.array([[np.cos(np.pi / 8)]]), np.array([[np.sin(np.pi / 8)]]), 8)
    np.testing.assert_allclose(h[0, 0], [0.5, 0.5, 0, 0, 0, 0, 0, 0], atol=1e-3)


def test_mbh_is_zero_for_a_uniform_flow_and_not_for_a_motion_boundary():
    grey = texture(40, 40)[..., 0]
    cfg = IDTConfig()
    uniform = np.broadcast_to(np.float32([3.0, -1.0]), (40, 40, 2)).copy()
    mbh = cell_histograms(integral_histogram(frame_channels(grey, uniform, cfg)),
                          np.array([[20.0, 20.0]]), 32, 2)[..., MBH_AT:]
    assert np.all(mbh == 0)
    desc = frame_descriptors(grey, uniform, np.array([[20.0, 20.0]]), cfg)
    np.testing.assert_allclose(desc[0, 68:100], np.sqrt(1 / 32), rtol=1e-5)  # eps only
    boundary = uniform.copy()
    boundary[:, 20:, 0] = -3.0                                   # x-flow changes along x
    mbh = cell_histograms(integral_histogram(frame_channels(grey, boundary, cfg)),
                          np.array([[20.0, 20.0]]), 32, 2)[..., MBH_AT:]
    assert mbh[..., :8].sum() > 0 and mbh[..., 8:].sum() == 0   # MBHx only


# --- settings and the video entry point --------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"idt_length": 0}, "idt_length=0 must be >= 2"),
    ({"idt_stride": 0}, "idt_stride=0 must be >= 1"),
    ({"idt_median": 4}, "idt_median=4 must be odd"),
    ({"idt_flow": "tvl1"}, "idt_flow='tvl1'"),
    ({"idt_scale_factor": 1.5}, "idt_scale_factor=1.5"),
    ({"idt_patch": 33}, "idt_patch=33 must be a multiple"),
    ({"idt_max_var": 1.0}, "idt_max_var=1.0 must be >"),
])
def test_config_validation_names_the_key(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        IDTConfig(**kw)


def test_every_flow_setting_has_an_estimator():
    from pipeline.idt.settings import IDT_FLOWS
    from pipeline.idt.trajectories import FLOW_ESTIMATORS
    assert set(IDT_FLOWS) == set(FLOW_ESTIMATORS)


def test_pyramid_is_capped_by_the_frame_size():
    assert len(pyramid_scales(320, 240, IDTConfig())) == 6       # 240 / sqrt(2)^5 = 42 >= 32
    assert len(pyramid_scales(1920, 1080, IDTConfig())) == 8
    assert len(pyramid_scales(320, 240, IDTConfig(idt_scales=2))) == 2


def test_video_segment_matches_the_frames(tmp_path, pan_frames):
    path = tmp_path / "pan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (80, 80))
    for f in pan_frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cfg = IDTConfig(idt_camera_motion=False)
    from_file = extract_idt_video(path, cfg, frames=(1, 18))
    in_memory = extract_idt(pan_frames[1:18], cfg, start_frame=1)
    assert len(from_file["header"]) > 0
    assert np.all(from_file["header"][:, 0] >= 16)               # absolute frame numbers
    for key in DIMS:
        np.testing.assert_array_equal(from_file[key], in_memory[key])


@pytest.mark.shared_data
def test_real_clip_gives_trajectories_and_descriptors(shared_data):
    clips = sorted((shared_data / "videos/arid6/Jump").glob("*.mp4"))
    if not clips:
        pytest.skip("no ARID Jump clips in the shared data")
    out = extract_idt_video(clips[0], frames=(0, 40))
    n = len(out["header"])
    assert n > 50
    for key, d in DIMS.items():
        assert out[key].shape == (n, d) and np.isfinite(out[key]).all()
    assert np.all((out["header"][:, 0] >= 15) & (out["header"][:, 0] <= 39))
    assert np.all((out["header"][:, 7:] >= 0) & (out["header"][:, 7:] < 1))
    np.testing.assert_allclose(np.linalg.norm(out["traj"].reshape(n, 15, 2), axis=2).sum(1), 1,
                               rtol=1e-4)
