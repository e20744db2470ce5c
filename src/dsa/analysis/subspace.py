"""How much of a weight update ΔW lies in the base weight W0's principal singular subspaces.

For W0 = U S Vᵀ and a top-k slice U_k (left, output space) / V_k (right, input space):

    left energy  E_L(k) = ‖U_kᵀ ΔW‖²_F / ‖ΔW‖²_F
    right energy E_R(k) = ‖ΔW V_k‖²_F / ‖ΔW‖²_F

Both are 1 when ΔW lives inside the top-k subspace and 0 when it is orthogonal to it. A random
k-dimensional subspace of R^d captures k/d of any fixed ΔW's energy in expectation, which is the
baseline: an update "orthogonal to the base" sits below it. Principal angles compare the top-r
singular subspace of ΔW with U_k directly (cosines = singular values of U_kᵀ U_Δ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Factors:
    """A thin SVD: W = U diag(S) Vh, singular values in descending order."""

    U: torch.Tensor  # [d_out, rank]
    S: torch.Tensor  # [rank]
    Vh: torch.Tensor  # [rank, d_in]

    def top(self, r: int) -> Factors:
        return Factors(self.U[:, :r], self.S[:r], self.Vh[:r])

    @property
    def energy(self) -> float:
        return float((self.S ** 2).sum())


def svd(W: torch.Tensor) -> Factors:
    """Thin SVD of a matrix, in float64 for stable small singular directions."""
    U, S, Vh = torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False)
    return Factors(U, S, Vh)


def lowrank_svd(B: torch.Tensor, A: torch.Tensor, scale: float = 1.0) -> Factors:
    """SVD of scale·B@A (B [d_out, r], A [r, d_in]) without forming the d_out×d_in product."""
    Qb, Rb = torch.linalg.qr(B.detach().to(torch.float64))
    Qa, Ra = torch.linalg.qr(A.detach().to(torch.float64).T)
    u, s, vh = torch.linalg.svd(scale * Rb @ Ra.T)  # [r, r]
    return Factors(Qb @ u, s, vh @ Qa.T)


def energy_curve(basis: torch.Tensor, delta: Factors, side: str = "left") -> torch.Tensor:
    """E(k) for every k = 1..basis.shape[1]: the share of ΔW's energy inside the first k columns.

    Args:
        basis: orthonormal columns [d, K] (W0's U for side="left", W0's V for side="right").
        delta: SVD factors of ΔW.
    Returns:
        [K] cumulative energy shares, non-decreasing, in [0, 1].
    """
    vecs = delta.U if side == "left" else delta.Vh.T  # [d, r]
    if vecs.shape[0] != basis.shape[0]:
        raise ValueError(f"{side} dimension mismatch: basis has {basis.shape[0]} rows, ΔW has {vecs.shape[0]}")
    coeff = basis.T.to(vecs.dtype) @ (vecs * delta.S)  # [K, r]
    total = delta.energy
    if total == 0.0:
        return torch.zeros(basis.shape[1], dtype=torch.float64)
    return (coeff ** 2).sum(1).cumsum(0) / total


def projection_energy(W0: torch.Tensor, dW: torch.Tensor, k: int, side: str = "left") -> float:
    """‖P_k ΔW‖²_F / ‖ΔW‖²_F for W0's top-k left (or right) singular subspace."""
    if W0.shape != dW.shape:
        raise ValueError(f"shape mismatch: W0 {tuple(W0.shape)} vs ΔW {tuple(dW.shape)}")
    f = svd(W0)
    basis = f.U if side == "left" else f.Vh.T
    if not 1 <= k <= basis.shape[1]:
        raise ValueError(f"k={k} out of range 1..{basis.shape[1]}")
    return float(energy_curve(basis, svd(dW), side)[k - 1])


def random_basis(d: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-random orthonormal [d, k] basis; its first j columns are Haar-random too."""
    g = torch.randn(d, k, dtype=torch.float64, generator=generator)
    Q, R = torch.linalg.qr(g)
    return Q * torch.sign(torch.diagonal(R))  # sign fix makes the distribution exactly Haar


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between span(A) and span(B); columns orthonormal."""
    cos = torch.linalg.svdvals(A.T.to(torch.float64) @ B.to(torch.float64)).clamp(0.0, 1.0)
    return torch.arccos(cos)


def angle_summary(basis_k: torch.Tensor, delta_vecs: torch.Tensor) -> dict[str, float]:
    """Mean cos² of the principal angles (1 = nested, 0 = orthogonal) and the smallest angle (°)."""
    theta = principal_angles(basis_k, delta_vecs)
    return {"mean_cos2": float(torch.cos(theta).pow(2).mean()),
            "min_angle_deg": float(theta.min() * 180 / math.pi)}


def module_stats(
    w0: Factors,
    delta: Factors,
    ks: list[int],
    *,
    generator: torch.Generator | None = None,
    angles: bool = True,
) -> dict:
    """Every overlap measure of one module's ΔW (already truncated as wanted) against W0.

    Returns a dict of per-k maps (only k ≤ rank(W0)): proj_energy (left), proj_energy_right,
    random_energy (left, one Haar draw), random_baseline (k/d_out), random_baseline_right (k/d_in),
    angles ({k: {mean_cos2, min_angle_deg}} between ΔW's left singular vectors and U_k; skipped with
    angles=False, e.g. for a full-rank ΔW whose column space is all of R^d_out).
    """
    d_out, d_in = w0.U.shape[0], w0.Vh.shape[1]
    rank = w0.S.shape[0]
    ks = [k for k in ks if k <= rank]
    kmax = max(ks)
    left = energy_curve(w0.U[:, :kmax], delta, "left")
    right = energy_curve(w0.Vh[:kmax].T, delta, "right")
    rand = energy_curve(random_basis(d_out, kmax, generator), delta, "left")
    nz = delta.S > delta.S.max() * 1e-10 if delta.S.numel() else delta.S.bool()
    dvecs = delta.U[:, nz]
    out = {"d_out": d_out, "d_in": d_in, "delta_rank": int(nz.sum()), "delta_norm": math.sqrt(delta.energy),
           "w0_norm": math.sqrt(w0.energy), "proj_energy": {}, "proj_energy_right": {}, "random_energy": {},
           "random_baseline": {}, "random_baseline_right": {}, "angles": {}}
    for k in ks:
        out["proj_energy"][k] = float(left[k - 1])
        out["proj_energy_right"][k] = float(right[k - 1])
        out["random_energy"][k] = float(rand[k - 1])
        out["random_baseline"][k] = k / d_out
        out["random_baseline_right"][k] = k / d_in
        if angles and dvecs.shape[1]:
            out["angles"][k] = angle_summary(w0.U[:, :k], dvecs)
    return out
