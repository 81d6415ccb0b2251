"""Numerical faults through stage 2 (issue 12): all-zero features, a single window, rank-deficient
feature matrices, identical eigenvalues and values near float limits, for orders 1, 2 and 3 and
every EPN, give a finite descriptor (with a logged warning where something degenerate happened)
or a clear per-item error; never a silent NaN and never a silent all-zero descriptor.

Unit cases call tensor_pool.hot_descriptors against the dense pool -> epn_so / epn_to -> pack
route; stage cases edit stage-1 items of the tiny dataset (resealed) and run compute_descriptors.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.core.cache import item_path, seal
from pipeline.pooling.settings import DescriptorConfig
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.pooling.descriptors import compute_descriptors, read_parts
from pipeline.pooling.epn import EPN, epn_so, epn_to
from pipeline.extract.features import extract_features
from pipeline.pooling.packing import pack, unpack
from pipeline.pooling.tensor_pool import hot_descriptors, pool
from tests.conftest import TINY

EPNS = tuple(EPN)                       # none, gamma, maxexp, asinhe, sigme, hdp
ORDERS = (2, 3)
D = 6

def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def windows(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def exact(phi: np.ndarray, order: int, epn: str) -> np.ndarray:
    """The reference: the dense pool -> epn_so / epn_to route in the r-dimensional row space of
    phi (orthonormal basis Q (d, r) from its SVD, r its numerical rank), lifted back by Q. EPN
    maps null directions to exact zeros, which the dense route in d dimensions only approximates
    (its rounding noise there, raised to the power 0.1 by Gamma, is ~5%)."""
    phi = phi.astype(np.float64)
    _, s, vt = np.linalg.svd(phi, full_matrices=False)
    Q = vt[: int((s > 1e-10 * s[0]).sum())].T
    X = pool(phi @ Q, order)
    if order == 2:
        return pack(Q @ epn_so(X, epn, n_windows=len(phi)) @ Q.T)
    return pack(np.einsum("abc,ia,jb,kc->ijk", epn_to(X, epn, n_windows=len(phi)), Q, Q, Q))


def rotated(packed: np.ndarray, R: np.ndarray, order: int) -> np.ndarray:
    """pack(X x1 R x2 R [x3 R]) for X = unpack(packed)."""
    X = unpack(packed, R.shape[0], order)
    return pack(np.einsum("ab,ia,jb->ij", X, R, R) if order == 2
                else np.einsum("abc,ia,jb,kc->ijk", X, R, R, R))


def warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("pipeline")]


def finite_or_clear_error(phi: np.ndarray, order: int, epn: str, caplog, *, center: bool = False,
                          degenerate: bool = False, error: str = r".") -> np.ndarray | None:
    """hot_descriptors of one video: either a ValueError matching `error` (None is returned), or
    a finite descriptor, which must be nonzero or come with a logged warning (and with one in any
    case when the input is `degenerate`)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            out = hot_descriptors([phi], order=order, epn=epn, center=center)[0]
        except ValueError as exc:
            assert re.search(error, str(exc)), exc
            return None
    assert np.isfinite(out).all(), f"a silent NaN or Inf: {out}"
    if degenerate or not np.any(out):
        assert warned(caplog), "a degenerate input gave a descriptor and no warning"
    return out


def nonzero_and_exact(phi: np.ndarray, order: int, epn: str, caplog) -> np.ndarray:
    """finite_or_clear_error that must give a nonzero descriptor equal to the exact one."""
    out = finite_or_clear_error(phi, order, epn, caplog)
    assert out is not None and np.any(out)
    np.testing.assert_allclose(out, exact(phi, order, epn), atol=1e-6 * np.abs(out).max())
    return out


# ================================================================ unit: hot_descriptors + epn

@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(8, 2), (12, 2), (8, 4), (3, 3)],
                         ids=["N8-rank2", "N12-rank2", "N8-rank4", "N3-under-d"])
def test_rank_deficient_windows_match_the_exact_descriptor(order, epn, shape, caplog):
    """Rank-deficient (N, d = 6) window matrices, N >= d, and N = 3 < d windows (the
    range-basis route)."""
    n, rank = shape
    rng = np.random.default_rng(1)
    phi = unit(rng.standard_normal((n, rank)) @ rng.standard_normal((rank, D)))
    assert np.linalg.matrix_rank(phi) == rank
    nonzero_and_exact(phi, order, epn, caplog)


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
def test_a_single_window(order, epn, caplog):
    phi = windows(1)
    nonzero_and_exact(phi, order, epn, caplog)


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
def test_identical_windows(order, epn, caplog):
    """N copies of one window: X has rank 1 and d - 1 equal (zero) eigenvalues."""
    phi = np.repeat(windows(1, seed=3), 5, axis=0)
    nonzero_and_exact(phi, order, epn, caplog)


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", ["zeros", "centred single window", "centred identical windows"])
def test_all_zero_pooled_input_warns_or_fails(order, epn, case, caplog):
    """Nothing to pool: zero windows, or windows that centring makes zero."""
    phi, center = {"zeros": (np.zeros((5, D)), False),
                   "centred single window": (windows(1), True),
                   "centred identical windows": (np.repeat(windows(1), 4, axis=0), True)}[case]
    out = finite_or_clear_error(phi, order, epn, caplog, center=center, degenerate=True,
                                error="zero")
    assert out is None or np.isfinite(out).all()


ROTATION = np.linalg.qr(np.random.default_rng(5).standard_normal((D, D)))[0]
TIED = {"4 orthonormal windows": np.eye(D)[:4], "6 orthonormal windows": np.eye(D),
        "8 windows, 2 repeated": np.vstack([np.eye(D), np.eye(D)[:2]])}


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
def test_generic_windows_rotate_with_the_descriptor(order, epn, caplog):
    """The oracle of the next two tests: EPN commutes with rotations of the feature space,
    G(X x R) = G(X) x R, for windows in general position."""
    phi = windows(5)
    out = finite_or_clear_error(phi @ ROTATION.T, order, epn, caplog)
    want = rotated(hot_descriptors([phi], order=order, epn=epn)[0], ROTATION, order)
    np.testing.assert_allclose(out, want, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("case", TIED)
def test_identical_eigenvalues_so(case, epn, caplog):
    """Orthonormal windows: equal eigenvalues, eigenvectors any basis of their space; SO EPN
    does not depend on the basis eigh returns, so it rotates with the windows."""
    phi = TIED[case]
    out = nonzero_and_exact(phi @ ROTATION.T, 2, epn, caplog)
    np.testing.assert_allclose(out, rotated(hot_descriptors([phi], order=2, epn=epn)[0], ROTATION, 2),
                               atol=1e-9 * np.abs(out).max())


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("case", TIED)
def test_identical_eigenvalues_to_rotate_with_the_windows_or_warn(case, epn, caplog):
    """TO EPN acts entry-wise on the HOSVD core, which depends on the basis chosen in a tied
    eigenspace (its spectrum sum too, so even epn='none'): the result must rotate with the
    windows, or the tie be reported."""
    phi = TIED[case]
    out = finite_or_clear_error(phi @ ROTATION.T, 3, epn, caplog)
    assert out is not None and np.any(out)
    if not warned(caplog):
        want = rotated(hot_descriptors([phi], order=3, epn=epn)[0], ROTATION, 3)
        np.testing.assert_allclose(out, want, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_float64_values_near_float_limits_give_the_unscaled_descriptor(order, epn, scale, caplog):
    """The spectrum is sum-normalised, so scaling every window leaves the descriptor as it is."""
    phi = windows(5)
    out = finite_or_clear_error(scale * phi, order, epn, caplog)
    assert out is not None
    want = hot_descriptors([phi], order=order, epn=epn)[0]
    np.testing.assert_allclose(out, want, atol=1e-9 * np.abs(want).max())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("epn", EPNS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_float32_values_near_float_limits(order, epn, scale, caplog):
    """float32 windows are pooled in float32: their 2nd to 6th powers leave its range. The
    result must be the unscaled descriptor or a clear error naming the range."""
    phi = windows(5).astype(np.float32)
    out = finite_or_clear_error(phi * np.float32(scale), order, epn, caplog,
                                error="float32|range|overflow|underflow")
    if out is not None:
        want = hot_descriptors([phi], order=order, epn=epn)[0]
        np.testing.assert_allclose(out, want, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("order", ORDERS)
def test_nan_or_inf_windows_are_a_clear_error(order):
    for bad in (np.nan, np.inf):
        phi = windows(4)
        phi[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            hot_descriptors([phi], order=order)


# ================================================================ stage 2: compute_descriptors

STAGE = ["backbone='fake_counting'", "layer='stats'", "weights='none'", "streams=('rgb',)",
         "size=32", f"dataset_options={TINY!r}"]
MULTI = ["lengths=(4, 8)", "strides=(2, 4)", "steps=((1, 2), (1,))"]      # 11 windows per video
SINGLE = ["lengths=(12,)", "strides=(12,)", "steps=(1,)"]                 # 1 window per video
# One edited video per fault, the others left as they are (one batch: a fault fails its video only)
FAULTS = {"zeros": lambda x: np.zeros_like(x),
          "identical windows": lambda x: np.repeat(x[:1], len(x), axis=0),
          "rank 2": lambda x: (x[:, :2] @ np.random.default_rng(0).standard_normal((2, x.shape[1])))
          .astype(x.dtype),
          # 2^±100 ~ 1.3e30, 7.9e-31: exact in floating point, so invariance is an exact oracle
          "1e30": lambda x: x * np.float32(2.0 ** 100),
          "1e-30": lambda x: x * np.float32(2.0 ** -100)}
CONFIGS = ([("order=1", f"first_order={f!r}") for f in ("mean", "meanmax")]
           + [(f"order={o}", f"epn={e!r}") for o in ORDERS for e in EPNS])


def config_id(config: tuple[str, ...]) -> str:
    return "-".join(c.split("=")[1].strip("'") for c in config)


def edit_item(path: Path, fault) -> None:
    """Apply `fault` to every window group of every part (as one (N, D) matrix per part), and
    reseal the file so that stage 2 takes it for good."""
    with h5py.File(path, "r+") as f:
        parts = {}
        f.visititems(lambda name, obj: parts.setdefault(name.rsplit("/", 1)[0], []).append(name)
                     if isinstance(obj, h5py.Dataset) else None)
        for names in parts.values():
            stacked = np.concatenate([f[n][()] for n in names])
            edited, start = fault(stacked), 0
            for n in names:
                rows = f[n].shape[0]
                f[n][...] = edited[start:start + rows]
                start += rows
    seal(path)


@pytest.fixture(scope="module")
def stage1(tiny_root, tmp_path_factory):
    """{"clean" | "faulty": (ExtractConfig for MULTI windows, ids), "single": ...}: stage 1 of
    the tiny dataset extracted once; "faulty" is a copy with one video per FAULTS entry edited."""
    base = tmp_path_factory.mktemp("numerics")

    def config(name: str, windows_args: list[str]) -> ExtractConfig:
        return parse_overrides([f"root={str(tiny_root)!r}", f"cache_root={str(base / name)!r}",
                                *STAGE, *windows_args], ExtractConfig)[0]

    out = {}
    for name, windows_args in (("clean", MULTI), ("single", SINGLE)):
        result = extract_features(config(name, windows_args))
        assert result.ok
        ids = sorted(str(p.relative_to(result.folder / "items"))[:-3]
                     for p in (result.folder / "items").rglob("*.h5"))
        out[name] = (config(name, windows_args), ids, result.folder)
    _, ids, folder = out["clean"]
    shutil.copytree(base / "clean", base / "faulty")
    copy = base / "faulty" / folder.relative_to(base / "clean")
    edited = {}
    for item_id, (fault_name, fault) in zip(ids, FAULTS.items()):
        edit_item(item_path(copy, item_id), fault)
        edited[fault_name] = item_id
    out["faulty"] = (config("faulty", MULTI), ids, edited)
    zeros, _ = read_parts(item_path(copy, edited["zeros"]), ["rgb/stats/mean"])
    huge, _ = read_parts(item_path(copy, edited["1e30"]), ["rgb/stats/mean"])
    assert not np.any(zeros[0]) and np.abs(huge[0]).max() > 1e28          # the edits are there
    return out


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        if record.name.startswith("pipeline"):
            self.messages.append(record.getMessage())


def run_stage2(ecfg: ExtractConfig, config: tuple[str, ...], *extra: str):
    """(StageResult, {id: stored descriptor}, warning messages logged) of one stage-2 run."""
    dcfg, = parse_overrides([*config, "sketch_dim=4", *extra], DescriptorConfig)
    capture = Capture()
    logger = logging.getLogger("pipeline")
    logger.addHandler(capture)
    try:
        result = compute_descriptors(ecfg, dcfg)
    finally:
        logger.removeHandler(capture)
    stored = {}
    for path in (result.folder / "items").rglob("*.h5"):
        with h5py.File(path, "r") as f:
            stored[str(f.attrs["id"])] = f["descriptor"][()]
    return result, stored, capture.messages


@pytest.fixture(scope="module", params=CONFIGS, ids=config_id)
def faulty_run(request, stage1):
    """The clean and the faulty stage-2 runs of one configuration."""
    clean_cfg, ids, _ = stage1["clean"]
    faulty_cfg, _, edited = stage1["faulty"]
    clean = run_stage2(clean_cfg, request.param)
    assert clean[0].ok and len(clean[1]) == len(ids)
    return request.param, clean, run_stage2(faulty_cfg, request.param), edited


def check_item(item_id: str, run, *, degenerate: bool) -> np.ndarray | None:
    """The stage-2 contract for one item: a failure recorded under its id (no file), or a finite
    stored descriptor, nonzero or warned about (in the manifest or the log), and warned about
    when `degenerate`."""
    result, stored, messages = run
    if item_id in result.failures:
        assert item_id not in stored and str(result.failures[item_id]).strip()
        return None
    assert item_id in stored, f"{item_id}: neither stored nor failed"
    desc = stored[item_id]
    assert np.isfinite(desc).all(), f"{item_id}: a NaN or Inf descriptor was stored"
    is_warned = item_id in result.warnings or any(item_id in m for m in messages)
    if degenerate or np.linalg.norm(desc) < 1e-6:
        assert is_warned, (f"{item_id}: a {'degenerate' if degenerate else 'zero'} descriptor "
                           f"(norm {np.linalg.norm(desc):.3g}) with no warning")
    return desc


def test_stage2_other_videos_of_the_batch_are_untouched(faulty_run):
    config, clean, faulty, edited = faulty_run
    others = sorted(set(clean[1]) - set(edited.values()))
    assert others and not set(others) & set(faulty[0].failures)
    for item_id in others:
        np.testing.assert_allclose(faulty[1][item_id], clean[1][item_id], rtol=1e-5, atol=1e-6)


def test_stage2_all_zero_features_warn_or_fail(faulty_run):
    config, clean, faulty, edited = faulty_run
    check_item(edited["zeros"], faulty, degenerate=True)


@pytest.mark.parametrize("fault", ["identical windows", "rank 2"])
def test_stage2_rank_deficient_features_give_a_finite_nonzero_descriptor(faulty_run, fault):
    config, clean, faulty, edited = faulty_run
    desc = check_item(edited[fault], faulty, degenerate=False)
    assert desc is not None and np.linalg.norm(desc) > 1e-3
    assert not np.allclose(desc, clean[1][edited[fault]])      # the edit reached stage 2


@pytest.mark.parametrize("fault", ["1e30", "1e-30"])
def test_stage2_values_near_float_limits_give_the_unscaled_descriptor(faulty_run, fault):
    """Windows are l2-normalised (HoT), so a video's features times 2^100 or 2^-100 (exact
    scalings) give its own descriptor, or a failure / a warning; never a changed descriptor
    without a word."""
    config, clean, faulty, edited = faulty_run
    item_id = edited[fault]
    desc = check_item(item_id, faulty, degenerate=False)
    if desc is not None and item_id not in faulty[0].warnings:
        want = clean[1][item_id]
        np.testing.assert_allclose(desc, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_stage2_a_single_window_per_video(stage1, config):
    """Videos no longer than one window: N = 1 for every video."""
    ecfg, ids, _ = stage1["single"]
    run = run_stage2(ecfg, config)
    assert run[0].ok and sorted(run[1]) == ids
    for item_id in ids:
        desc = check_item(item_id, run, degenerate=False)
        assert desc is not None and np.linalg.norm(desc) > 1e-3


@pytest.mark.parametrize("config", CONFIGS[2:], ids=config_id)
def test_stage2_a_centred_single_window_warns_or_fails(stage1, config):
    ecfg, ids, _ = stage1["single"]
    run = run_stage2(ecfg, config, "center=True")
    for item_id in ids:
        check_item(item_id, run, degenerate=True)


def test_warnings_name_the_videos(caplog):
    """Stage 2 passes its item ids: a tie or a zero descriptor is reported by video, not by its
    position in a batch."""
    with caplog.at_level(logging.WARNING):
        hot_descriptors([windows(5), np.eye(D)[:4]], order=3, epn="none",
                        names=["Run/clip_1.mp4", "Jump/tied.mp4"])
        hot_descriptors([np.zeros((3, D))], order=2, epn="none", names=["Sit/zero.mp4"])
    text = " ".join(warned(caplog))
    assert "Jump/tied.mp4" in text and "Run/clip_1.mp4" not in text and "Sit/zero.mp4" in text
