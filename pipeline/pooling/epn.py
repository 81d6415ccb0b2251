"""Eigenvalue power normalisation (EPN) of pooled second- and third-order tensors (HoT, PN).
Spectral functions g of PN (TPAMI 2021) on the eigenvalues (SO) or the super-symmetric HOSVD core
(TO), in numpy and differentiably in PyTorch (Daleckii-Krein backward, stable differences)."""
from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "EPN", "EpnSpec", "SpectralFunction", "make_epn", "resolve_epn",
    "SPECTRUM_NORMS", "spectrum_scale", "snap_tol", "apply_spectral",
    "divided_differences", "epn_so", "hosvd_sym", "epn_to",
    "sym_matrix_function", "stable_eigh", "epn_so_torch", "epn_to_torch",
]

# --------------------------------------------------------------------------------------------
# array-namespace shim: the same formula runs on numpy arrays and torch tensors
# --------------------------------------------------------------------------------------------
_NP = SimpleNamespace(abs=np.abs, sign=np.sign, where=np.where, exp=np.exp, log=np.log,
                      asinh=np.arcsinh, tanh=np.tanh, sqrt=np.sqrt, clip=np.clip)
_TORCH = SimpleNamespace(abs=torch.abs, sign=torch.sign, where=torch.where, exp=torch.exp,
                         log=torch.log, asinh=torch.asinh, tanh=torch.tanh, sqrt=torch.sqrt,
                         clip=torch.clamp)


def _xp(x: Any) -> SimpleNamespace:
    return _TORCH if isinstance(x, torch.Tensor) else _NP


def _eps(x: Any) -> float:
    """Machine epsilon of x's floating dtype (numpy array or torch tensor)."""
    if isinstance(x, torch.Tensor):
        return float(torch.finfo(x.dtype).eps)
    return float(np.finfo(np.asarray(x).dtype).eps)


# --------------------------------------------------------------------------------------------
# the registry of spectral functions (PN, TPAMI 2021; docs/method.md "Stage 2" table)
# Each f acts on x = |lambda| >= 0; SpectralFunction keeps the sign of lambda.
# --------------------------------------------------------------------------------------------
def _f_none(x, p, xp):
    return x


def _df_none(x, p, xp):
    return x * 0 + 1


def _f_gamma(x, p, xp):
    return x ** p["gamma"]


def _df_gamma(x, p, xp):
    return p["gamma"] * x ** (p["gamma"] - 1.0)


def _f_maxexp(x, p, xp):
    # 1 - (1 - x)^eta; clipped at x = 1, where the probability of "at least one event" is 1 (ours).
    return 1.0 - (1.0 - xp.clip(x, 0.0, 1.0)) ** p["eta"]


def _df_maxexp(x, p, xp):
    inside = x < 1.0
    return xp.where(inside, p["eta"] * (1.0 - xp.clip(x, 0.0, 1.0)) ** (p["eta"] - 1.0), x * 0)


def _f_asinhe(x, p, xp):
    return xp.asinh(p["gamma"] * x)


def _df_asinhe(x, p, xp):
    return p["gamma"] / xp.sqrt(1.0 + (p["gamma"] * x) ** 2)


def _f_sigme(x, p, xp):
    # 2 / (1 + exp(-eta x)) - 1 == tanh(eta x / 2), the overflow-free form.
    return xp.tanh(0.5 * p["eta"] * x)


def _df_sigme(x, p, xp):
    return 0.5 * p["eta"] * (1.0 - xp.tanh(0.5 * p["eta"] * x) ** 2)


def _f_hdp(x, p, xp):
    pos = x > 0
    return xp.where(pos, xp.exp(-p["t"] / xp.where(pos, x, 1.0)), x * 0)


def _df_hdp(x, p, xp):
    # t / x^2 * exp(-t / x), evaluated in the log domain so that tiny x gives 0, not inf * 0.
    pos = x > 0
    xs = xp.where(pos, x, 1.0)
    return xp.where(pos, xp.exp(math.log(p["t"]) - 2.0 * xp.log(xs) - p["t"] / xs), x * 0)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclasses.dataclass(frozen=True)
class EpnSpec:
    """One spectral function g of the EPN table: formula, derivative, parameters and their ranges.

    f(x, params, xp) and df(x, params, xp) act on x = |lambda| >= 0. slope0(params) is
    lim_{x->0+} f'(x) when finite, else 0 (used below the numerical-zero threshold, see snap_tol).
    checks: parameter -> (predicate on the value, the requirement as text for error messages).
    """

    title: str
    f: Callable
    df: Callable
    slope0: Callable[[Mapping[str, float]], float]
    defaults: Mapping[str, Any]
    checks: Mapping[str, tuple[Callable[[Any], bool], str]]


EPN: dict[str, EpnSpec] = {
    "none": EpnSpec("None", _f_none, _df_none, lambda p: 1.0, {}, {}),
    "gamma": EpnSpec(
        "Gamma", _f_gamma, _df_gamma,
        lambda p: 1.0 if p["gamma"] == 1 else 0.0,
        {"gamma": 0.1},  # the best of 0.1, 0.25, 0.5 on real video (docs/results.md; none beats MaxExp)
        {"gamma": (lambda v: _is_real(v) and 0 < v <= 1, "0 < gamma <= 1")}),
    "maxexp": EpnSpec(
        "MaxExp", _f_maxexp, _df_maxexp, lambda p: float(p["eta"]),
        {"eta": "N"},  # HoT slides: eta = N, the number of windows pooled; no fixed eta did
                       # better with p < 0.05 (docs/statistics.md); N grows with the video
        {"eta": (lambda v: v == "N" or (_is_real(v) and v >= 1), "eta >= 1 or eta='N'")}),
    "asinhe": EpnSpec(
        "AsinhE", _f_asinhe, _df_asinhe, lambda p: float(p["gamma"]),
        {"gamma": 1000.0},  # the best of 10, 100, 1000 (docs/results.md; sum-normalised spectra
                            # have entries ~1/rank: gamma' = 1 would leave them nearly linear)
        {"gamma": (lambda v: _is_real(v) and v > 0, "gamma > 0")}),
    "sigme": EpnSpec(
        "SigmE", _f_sigme, _df_sigme, lambda p: 0.5 * float(p["eta"]),
        {"eta": 100.0},  # the best of 10, 100, 1000 (docs/results.md; eta' >= 1 in PN; 1 is
                         # nearly linear on sum-normalised spectra)
        {"eta": (lambda v: _is_real(v) and v >= 1, "eta >= 1")}),
    "hdp": EpnSpec(
        "HDP", _f_hdp, _df_hdp, lambda p: 0.0,
        {"t": 1e-2},  # the best of 1e-4, 1e-3, 1e-2 (docs/results.md); PN: t > 0
        {"t": (lambda v: _is_real(v) and v > 0, "t > 0")}),
}


@dataclasses.dataclass(frozen=True)
class SpectralFunction:
    """g(lambda) = sign(lambda) * f(|lambda|) for one EPN entry with validated parameters.

    Build it with make_epn. If MaxExp has eta='N', call resolve(n_windows) before evaluating.
    Calling with tol > 0 treats |lambda| <= tol as numerically zero: there g is replaced by its
    tangent at 0, slope0 * lambda (0 for Gamma with gamma < 1 and for HDP) (ours), so rounding noise
    in a rank-deficient spectrum is not inflated (e.g. (1e-17)^0.1 = 0.02) and stays differentiable.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> EpnSpec:
        return EPN[self.name]

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def needs_n_windows(self) -> bool:
        return any(v == "N" for _, v in self.params)

    def resolve(self, n_windows: int | None) -> "SpectralFunction":
        """Replace eta='N' by the number of windows pooled; a no-op for concrete parameters."""
        if not self.needs_n_windows:
            return self
        if n_windows is None or not _is_real(n_windows) or n_windows < 1:
            raise ValueError(f"n_windows={n_windows!r}: {self.spec.title} with eta='N' needs the "
                             "number of pooled windows N >= 1")
        return SpectralFunction(self.name, tuple((k, float(n_windows) if v == "N" else v)
                                                 for k, v in self.params))

    def _concrete(self) -> dict[str, float]:
        if self.needs_n_windows:
            raise ValueError(f"{self.spec.title} with eta='N' is unresolved: pass n_windows "
                             "(the number of pooled windows N) or call resolve(N) first")
        return {k: float(v) for k, v in self.params}

    def __call__(self, lam, tol=0.0):
        """g applied entry-wise; lam: any shape (numpy or torch), tol broadcastable to lam."""
        p, xp = self._concrete(), _xp(lam)
        x = xp.abs(lam)
        big = x > tol
        fx = self.spec.f(xp.where(big, x, 1.0), p, xp)
        return xp.where(big, xp.sign(lam) * fx, self.spec.slope0(p) * lam)

    def derivative(self, lam, tol=0.0):
        """dg/dlambda = f'(|lambda|) entry-wise (g is odd, so g' is even); slope0 below tol."""
        p, xp = self._concrete(), _xp(lam)
        x = xp.abs(lam)
        big = x > tol
        dfx = self.spec.df(xp.where(big, x, 1.0), p, xp)
        return xp.where(big, dfx, x * 0 + self.spec.slope0(p))


def make_epn(name: str, **params: Any) -> SpectralFunction:
    """The spectral function `name` of the EPN registry with `params` validated (PN ranges).

    make_epn("gamma", gamma=0.5); make_epn("maxexp", eta="N"); unknown names, unknown parameters
    and out-of-range values raise ValueError naming them.
    """
    if name not in EPN:
        raise ValueError(f"epn={name!r} is unknown; known: {', '.join(EPN)}")
    spec = EPN[name]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for epn={name!r}; "
                         f"known: {sorted(spec.defaults) or 'none'}")
    merged = {**spec.defaults, **params}
    for key, value in merged.items():
        ok, requirement = spec.checks[key]
        if not ok(value):
            raise ValueError(f"{key}={value!r}: {spec.title} needs {requirement}")
    return SpectralFunction(name, tuple(sorted(merged.items())))


def resolve_epn(g: str | SpectralFunction, params: Mapping[str, Any] | None = None,
                n_windows: int | None = None) -> SpectralFunction:
    """A concrete SpectralFunction from a name (+ params) or an instance, eta='N' -> n_windows."""
    if isinstance(g, SpectralFunction):
        if params:
            raise ValueError("epn_params must be empty when epn is already a SpectralFunction")
        fn = g
    elif isinstance(g, str):
        fn = make_epn(g, **dict(params or {}))
    else:
        raise ValueError(f"epn={g!r} must be a name ({', '.join(EPN)}) or a SpectralFunction")
    return fn.resolve(n_windows) if fn.needs_n_windows else fn


# --------------------------------------------------------------------------------------------
# spectrum normalisation and numerical zero
# --------------------------------------------------------------------------------------------
def _axes_sum(x, n_axes: int):
    axes = tuple(range(-n_axes, 0))
    if isinstance(x, torch.Tensor):
        return x.sum(dim=axes, keepdim=True)
    return x.sum(axis=axes, keepdims=True)


def snap_tol(values, n_axes: int = 1, *, multiplicity=None, side: int | None = None):
    """Numerical-zero threshold 8 eps(dtype) sqrt(d) ||values||_F over the last n_axes axes (ours).

    values: (..., *core) -> (..., 1, ..., 1), broadcasting against values; d = side (default
    values.shape[-1], the side of the matrix or tensor). Rounding noise in eigenvalues and HOSVD
    core entries is a few eps sqrt(d) ||X||; the factor 8 is a margin. multiplicity: (n,) when
    values are packed (..., n) so that the norm is the full tensor's. Constant for autograd.
    """
    v = values.detach() if isinstance(values, torch.Tensor) else values
    sq = v * v if multiplicity is None else v * v * multiplicity
    side = v.shape[-1] if side is None else side
    return 8.0 * _eps(v) * math.sqrt(side) * _axes_sum(sq, n_axes) ** 0.5


def _scale_sum(values, order, n_axes, multiplicity, side, unit):
    """sum |values| (HoT supplement), whatever their unit; torch: subgradient 0 where the sign is
    rounding noise."""
    a = _xp(values).abs(values)
    if isinstance(a, torch.Tensor):
        noise = a.detach() <= snap_tol(values, n_axes, multiplicity=multiplicity, side=side)
        a = torch.where(noise, a.detach(), a)
    s = _axes_sum(a if multiplicity is None else a * multiplicity, n_axes)
    return s + (s == 0)  # all-zero spectrum: scale 1, output 0


def _scale_kappa(values, order, n_axes, multiplicity, side, unit):
    """kappa = (1/sqrt(r))^r, the largest value a unit vector reaches (HoT slides)."""
    return (1.0 / math.sqrt(order)) ** order * unit


def _scale_none(values, order, n_axes, multiplicity, side, unit):
    return unit


SPECTRUM_NORMS: dict[str, Callable] = {"sum": _scale_sum, "kappa": _scale_kappa,
                                        "none": _scale_none}


def spectrum_scale(values, spectrum_norm: str, order: int, n_axes: int = 1, *,
                   multiplicity=None, side: int | None = None, unit=1.0):
    """The divisor of the spectrum: values (..., *core) -> (..., 1, ..., 1) (or a float).

    unit: what one unit of values is worth, a float or broadcastable to the divisor (values of
    windows scaled by c hold the spectrum times c^r, so unit = c^r): "sum" does not depend on
    it, "kappa" and "none" divide it out.

    "sum": sum |values| over the last n_axes axes (weighted by multiplicity for packed values);
    for torch its gradient takes the subgradient 0 for entries below snap_tol, whose sign is
    rounding noise; an all-zero spectrum gets scale 1. "kappa": (1/sqrt(order))^order.
    "none": 1.
    """
    if spectrum_norm not in SPECTRUM_NORMS:
        raise ValueError(f"spectrum_norm={spectrum_norm!r} is unknown; known: "
                         f"{', '.join(SPECTRUM_NORMS)}")
    return SPECTRUM_NORMS[spectrum_norm](values, order, n_axes, multiplicity, side, unit)


def apply_spectral(values, fn: SpectralFunction, spectrum_norm: str, order: int, n_axes: int = 1,
                   *, multiplicity=None, side: int | None = None, unit=1.0):
    """g(values / scale) with the numerical-zero snap; values (..., *core), same shape out.

    multiplicity (n,) marks values as packed unique entries (..., n) of a symmetric tensor of
    side `side`: norms and sums then count every entry as often as it occurs in the full tensor.
    unit: see spectrum_scale.
    """
    y = values / spectrum_scale(values, spectrum_norm, order, n_axes,
                                multiplicity=multiplicity, side=side, unit=unit)
    return fn(y, snap_tol(y, n_axes, multiplicity=multiplicity, side=side))


# --------------------------------------------------------------------------------------------
# numpy: SO via eigh, TO via the super-symmetric HOSVD
# --------------------------------------------------------------------------------------------
def epn_so(X, g: str | SpectralFunction = "maxexp", spectrum_norm: str = "sum", *,
           n_windows: int | None = None):
    """SO EPN: X = U diag(lambda) U^T -> U diag(g(lambda / scale)) U^T (HoT eq. for SO; PN).

    X: (..., d, d) symmetric, numpy or torch (torch: differentiable, Daleckii-Krein backward).
    g: EPN name (default parameters) or a SpectralFunction; n_windows resolves eta='N'.
    Returns the same shape and type as X.
    """
    fn = resolve_epn(g, None, n_windows)
    if isinstance(X, torch.Tensor):
        return epn_so_torch(X, fn, spectrum_norm)
    X = np.asarray(X)
    _check_square(X, 2)
    lam, U = np.linalg.eigh(X)
    lam_hat = apply_spectral(lam, fn, spectrum_norm, order=2)
    return (U * lam_hat[..., None, :]) @ np.swapaxes(U, -1, -2)


def _check_square(X, order: int) -> None:
    if X.ndim < order or len(set(X.shape[-order:])) != 1:
        raise ValueError(f"X has shape {tuple(X.shape)}; expected (..., d{', d' * (order - 1)})")


def _mode_products(T, U, transpose: bool):
    """T (d,d,d) x1 M x2 M x3 M with M = U^T (transpose) or U; numpy tensordot."""
    M = U.T if transpose else U
    for _ in range(3):  # contracting axis 0 and appending the new one cycles the modes
        T = np.tensordot(T, M, axes=([0], [1]))
    return T


def hosvd_sym(X):
    """HOSVD of a super-symmetric X (d, d, d): one factor U for all modes (HoT, TO EPN).

    U (d, d): eigenvectors of X_(1) X_(1)^T in descending eigenvalue order (orthogonal);
    core (d, d, d) = X x1 U^T x2 U^T x3 U^T; mu (d,): the eigenvalues (squared singular values
    of the unfolding). X = core x1 U x2 U x3 U exactly.
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"X has shape {X.shape}; hosvd_sym expects (d, d, d)")
    _check_square(X, 3)
    d = X.shape[0]
    X1 = X.reshape(d, d * d)
    mu, U = np.linalg.eigh(X1 @ X1.T)
    mu, U = mu[::-1], np.ascontiguousarray(U[:, ::-1])
    return U, _mode_products(X, U, transpose=True), mu


def epn_to(X, g: str | SpectralFunction = "maxexp", spectrum_norm: str = "sum", *,
           n_windows: int | None = None):
    """TO EPN by the super-symmetric HOSVD: g on the core entries, then reconstruct (HoT).

    X: (d, d, d) super-symmetric numpy (or (..., d, d, d) torch, differentiable).
    G(X) = g(core / scale) x1 U x2 U x3 U with U, core from hosvd_sym. Same shape out.
    This is the plain O(d^4) route; tensor_pool.hot_descriptor is the fast one from phi.
    """
    fn = resolve_epn(g, None, n_windows)
    if isinstance(X, torch.Tensor):
        return epn_to_torch(X, fn, spectrum_norm)
    U, core, _ = hosvd_sym(X)
    core_hat = apply_spectral(core, fn, spectrum_norm, order=3, n_axes=3)
    return _mode_products(core_hat, U, transpose=False)


# --------------------------------------------------------------------------------------------
# torch: differentiable EPN
# --------------------------------------------------------------------------------------------
def divided_differences(lam, fn: SpectralFunction, tol=0.0):
    """Daleckii-Krein kernel K_ij = (g(l_i) - g(l_j)) / (l_i - l_j), K_ii = g'(l_i).

    lam: (..., d) -> K (..., d, d). Stable: where |l_i - l_j| <= eps^(1/3) max(|l_i|, |l_j|) the
    quotient is replaced by g'((l_i + l_j) / 2) (error O(delta^2) instead of eps / delta), so an
    identity-like spectrum gives no NaN or Inf. tol: numerical-zero threshold, (..., 1).
    """
    xp = _xp(lam)
    gl = fn(lam, tol)
    li, lj = lam[..., :, None], lam[..., None, :]
    tol2 = tol[..., None] if hasattr(tol, "shape") and getattr(tol, "ndim", 0) else tol
    diff = li - lj
    scale = xp.where(xp.abs(li) > xp.abs(lj), xp.abs(li), xp.abs(lj))
    close = xp.abs(diff) <= _eps(lam) ** (1.0 / 3.0) * scale
    quotient = (gl[..., :, None] - gl[..., None, :]) / xp.where(close, 1.0, diff)
    return xp.where(close, fn.derivative(0.5 * (li + lj), tol2), quotient)


class _SymMatrixFunction(torch.autograd.Function):
    """F(X) = U diag(g(lambda)) U^T for symmetric X (..., d, d); Daleckii-Krein backward."""

    @staticmethod
    def forward(ctx, X, fn, tol):
        lam, U = torch.linalg.eigh(X)
        tol = snap_tol(lam) if tol is None else tol
        ctx.fn, ctx.tol = fn, tol
        ctx.save_for_backward(lam, U)
        return (U * fn(lam, tol).unsqueeze(-2)) @ U.mT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        lam, U = ctx.saved_tensors
        K = divided_differences(lam, ctx.fn, ctx.tol)
        inner = U.mT @ grad @ U
        inner = 0.5 * (inner + inner.mT)
        return U @ (K * inner) @ U.mT, None, None


def sym_matrix_function(X: torch.Tensor, fn: SpectralFunction, tol=None) -> torch.Tensor:
    """g applied to the spectrum of (X + X^T)/2; X (..., d, d) -> (..., d, d), differentiable.

    Backward: dF = U (K o U^T dX U) U^T with K from divided_differences (stable for repeated
    eigenvalues). tol: numerical-zero threshold, default snap_tol of the eigenvalues.
    """
    return _SymMatrixFunction.apply(0.5 * (X + X.mT), fn, tol)


class _StableEigh(torch.autograd.Function):
    """eigh with a backward that drops the 1/(l_j - l_i) terms of (nearly) equal eigenvalues."""

    @staticmethod
    def forward(ctx, A):
        lam, U = torch.linalg.eigh(A)
        ctx.save_for_backward(lam, U)
        return lam, U

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lam, g_U):
        lam, U = ctx.saved_tensors
        inner = torch.zeros_like(U)
        if g_U is not None:
            diff = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # [i, j] = l_j - l_i
            thresh = math.sqrt(_eps(lam)) * lam.abs().amax(dim=-1, keepdim=True).unsqueeze(-1)
            far = diff.abs() > thresh
            F = torch.where(far, 1.0 / torch.where(far, diff, torch.ones_like(diff)),
                            torch.zeros_like(diff))
            inner = F * (U.mT @ g_U)
        if g_lam is not None:
            inner = inner + torch.diag_embed(g_lam)
        gA = U @ inner @ U.mT
        return 0.5 * (gA + gA.mT)


def stable_eigh(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda (..., d) descending, U (..., d, d)) of symmetric A, with a stable backward.

    Backward is the usual eigh formula gA = U (diag(g_lambda) + F o U^T g_U) U^T with
    F_ij = 1/(l_j - l_i), except F_ij = 0 where |l_j - l_i| <= sqrt(eps) max|l| (ours): exact for
    distinct eigenvalues, and exact for losses that do not depend on the basis chosen inside a
    degenerate eigenspace (e.g. the null space of X_(1) X_(1)^T when N < d); finite always.
    """
    lam, U = _StableEigh.apply(A)
    return lam.flip(-1), U.flip(-1)


def epn_so_torch(X: torch.Tensor, fn: SpectralFunction, spectrum_norm: str = "sum") -> torch.Tensor:
    """Differentiable SO EPN: X (..., d, d) -> U g(lambda/scale) U^T. fn must be resolved."""
    _check_square(X, 2)
    Xs = 0.5 * (X + X.mT)
    if spectrum_norm == "sum":
        # sum |lambda| is differentiable through eigvalsh (its backward needs no eigen-gaps)
        scale = spectrum_scale(torch.linalg.eigvalsh(Xs), "sum", 2).unsqueeze(-1)
    else:
        scale = spectrum_scale(Xs, spectrum_norm, 2)
    return sym_matrix_function(Xs / scale, fn)


def _sym3(X: torch.Tensor) -> torch.Tensor:
    """Super-symmetric part of X (..., d, d, d): the mean over the 6 permutations of the axes."""
    n = X.ndim
    a, b, c = n - 3, n - 2, n - 1
    perms = [(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)]
    lead = tuple(range(n - 3))
    return sum(X.permute(*lead, *p) for p in perms) / 6.0


def core_apply_reconstruct(core, U, fn, spectrum_norm):
    core_hat = _ElementwiseG.apply(core / spectrum_scale(core, spectrum_norm, 3, n_axes=3), fn)
    return torch.einsum("...ijk,...ai,...bj,...ck->...abc", core_hat, U, U, U)


class _ElementwiseG(torch.autograd.Function):
    """y = g(x) entry-wise with the numerical-zero snap; backward multiplies by g'(x)."""

    @staticmethod
    def forward(ctx, x, fn):
        tol = snap_tol(x, n_axes=3)
        ctx.fn, ctx.tol = fn, tol
        ctx.save_for_backward(x)
        return fn(x, tol)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.fn.derivative(x, ctx.tol), None


def epn_to_torch(X: torch.Tensor, fn: SpectralFunction, spectrum_norm: str = "sum") -> torch.Tensor:
    """Differentiable TO EPN of X (..., d, d, d) (gradient w.r.t. its super-symmetric part).

    U from stable_eigh(X_(1) X_(1)^T); core = X x1 U^T x2 U^T x3 U^T; g entry-wise; reconstruct.
    Where X_(1) X_(1)^T has a repeated non-zero eigenvalue the TO EPN itself depends on the basis
    chosen in that eigenspace, so no gradient exists; stable_eigh then returns a finite one.
    """
    _check_square(X, 3)
    Xs = _sym3(X)
    d = Xs.shape[-1]
    X1 = Xs.reshape(*Xs.shape[:-3], d, d * d)
    _, U = stable_eigh(X1 @ X1.mT)
    core = torch.einsum("...abc,...ai,...bj,...ck->...ijk", Xs, U, U, U)
    return core_apply_reconstruct(core, U, fn, spectrum_norm)
