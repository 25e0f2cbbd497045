"""Levenberg-Marquardt for problems with per-frame unknowns, shared unknowns and a time chain.

The unknowns are ``x_frames`` (T, P) (one block per frame) and ``x_shared`` (S,) (identity, focal).
The data term is a robust sum over frames whose Gauss-Newton normal equations the caller
assembles per frame (``NormalBlocks``): frame t couples only its own block and the shared one.
The solver adds quadratic terms of its own:

    sum_p prior_frames[p] * x[t, p]^2  +  sum_s prior_shared[s] * x_shared[s]^2
    + sum_p smooth[p] * sum_t (x[t+1, p] - 2 x[t, p] + x[t-1, p])^2

and solves each damped step exactly, in float64: the frames' system is block-banded in time
(second differences reach two frames), so a block-tridiagonal Cholesky over pairs of frames
eliminates them, and the shared unknowns come from their Schur complement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("toonsplat")


@dataclass
class NormalBlocks:
    """Gauss-Newton normal equations of the data term at one point (IRLS weights applied).

    With J_t the frame's Jacobian by its own unknowns and K_t by the shared ones:
    ``frames = J_t' W J_t``, ``coupling = J_t' W K_t``, ``shared = sum_t K_t' W K_t`` and the
    gradients ``J_t' W r_t``, ``sum_t K_t' W r_t``.
    """

    loss: float                    # the (robust) data loss at this point
    frames: torch.Tensor           # (T, P, P)
    coupling: torch.Tensor         # (T, P, S)
    shared: torch.Tensor           # (S, S)
    gradient_frames: torch.Tensor  # (T, P)
    gradient_shared: torch.Tensor  # (S,)


@dataclass
class Regularizer:
    """The solver's quadratic terms (see the module docstring) and which unknowns move."""

    prior_frames: torch.Tensor     # (P,)
    prior_shared: torch.Tensor     # (S,)
    smooth: torch.Tensor           # (P,) weight of squared second differences in time
    free_frames: torch.Tensor      # (P,) 1 = optimised, 0 = held
    free_shared: torch.Tensor      # (S,)

    def loss(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> float:
        total = (self.prior_frames * x_frames ** 2).sum() + (self.prior_shared * x_shared ** 2).sum()
        if x_frames.shape[0] >= 3:
            total = total + (self.smooth * _second_difference(x_frames) ** 2).sum()
        return float(total)

    def gradient(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> tuple:
        return (2 * self.prior_frames * x_frames + self.chain(x_frames),
                2 * self.prior_shared * x_shared)

    def chain(self, x_frames: torch.Tensor) -> torch.Tensor:
        """The smoothness Hessian times ``x_frames``: 2 smooth D'D x. (T, P) -> (T, P)."""
        if x_frames.shape[0] < 3:
            return torch.zeros_like(x_frames)
        second = _second_difference(x_frames) * self.smooth
        out = torch.zeros_like(x_frames)
        out[:-2] += second
        out[1:-1] -= 2 * second
        out[2:] += second
        return 2 * out

    def chain_off_diagonals(self, frames: int) -> tuple:
        """Off-diagonals of the smoothness Hessian: frames t, t+1 (T-1, P) and t, t+2 (T-2, P)."""
        near = torch.zeros(max(frames - 1, 0), dtype=torch.float64)
        far = torch.zeros(max(frames - 2, 0), dtype=torch.float64)
        if frames >= 3:
            near[:-1] -= 2
            near[1:] -= 2
            far += 1
        return 2 * near[:, None] * self.smooth, 2 * far[:, None] * self.smooth

    def chain_diagonal(self, frames: int) -> torch.Tensor:
        """Diagonal of the smoothness Hessian. Returns (T, P)."""
        count = torch.zeros(frames, dtype=torch.float64)
        if frames >= 3:
            count[:-2] += 1
            count[1:-1] += 4
            count[2:] += 1
        return 2 * count[:, None] * self.smooth


def _second_difference(x: torch.Tensor) -> torch.Tensor:
    return x[2:] - 2 * x[1:-1] + x[:-2]


class LevenbergMarquardt:
    """Minimise data + regulariser over (x_frames, x_shared).

    Args:
        linearize: ``(x_frames, x_shared) -> NormalBlocks`` of the data term.
        regularizer: the quadratic terms.
    """

    def __init__(self, linearize, regularizer: Regularizer, evaluate=None):
        self.linearize, self.reg = linearize, regularizer
        self.evaluate = evaluate or (lambda x_frames, x_shared: linearize(x_frames, x_shared).loss)

    def run(self, x_frames: torch.Tensor, x_shared: torch.Tensor, iterations: int,
            tolerance: float = 1e-3, callback=None) -> tuple:
        """Iterate from the given point until the loss falls by less than ``tolerance``
        (relative) in a step. Returns (x_frames, x_shared, loss, steps taken).

        Candidates are judged by ``evaluate`` (the loss alone); the damping follows the ratio
        of actual to predicted decrease (Nielsen's rule).
        """
        x_frames, x_shared = x_frames.double(), x_shared.double()
        blocks = self.linearize(x_frames, x_shared)
        loss = blocks.loss + self.reg.loss(x_frames, x_shared)
        damping, growth, steps = 1e-3, 2.0, 0
        for _ in range(iterations):
            accepted = False
            for _attempt in range(10):
                step_frames, step_shared, predicted = self.solve(blocks, x_frames, x_shared, damping)
                new_frames, new_shared = x_frames + step_frames, x_shared + step_shared
                new_loss = self.evaluate(new_frames, new_shared) + self.reg.loss(new_frames, new_shared)
                if new_loss < loss:
                    gain = (loss - new_loss) / max(predicted, 1e-30)
                    damping = max(damping * max(1 / 3, 1 - (2 * min(gain, 1.0) - 1) ** 3), 1e-9)
                    accepted, growth = True, 2.0
                    break
                damping, growth = damping * growth, growth * 2
            if not accepted:
                break
            steps += 1
            decrease = loss - new_loss
            x_frames, x_shared, loss = new_frames, new_shared, new_loss
            if callback is not None:
                callback(steps, loss)
            if decrease <= tolerance * max(loss, 1e-12):
                break
            blocks = self.linearize(x_frames, x_shared)
        log.debug("Levenberg-Marquardt: %d steps, loss %.6f", steps, loss)
        return x_frames, x_shared, loss, steps

    def solve(self, blocks: NormalBlocks, x_frames: torch.Tensor, x_shared: torch.Tensor,
              damping: float) -> tuple:
        """One damped Gauss-Newton step, solved exactly.

        Returns:
            step_frames (T, P), step_shared (S,), and the decrease the quadratic model predicts.
        """
        reg, frames = self.reg, x_frames.shape[0]
        free_f, free_s = reg.free_frames.double(), reg.free_shared.double()
        grad_f, grad_s = reg.gradient(x_frames, x_shared)
        rhs_f = -(blocks.gradient_frames.double() + grad_f) * free_f
        rhs_s = -(blocks.gradient_shared.double() + grad_s) * free_s
        # Diagonal parts: priors, the chain's diagonal, Marquardt damping (scaled by the
        # curvature, with a floor so that unknowns without data stay put).
        a, c = blocks.frames.double(), blocks.shared.double()
        chain = reg.chain_diagonal(frames)
        diag_f = 2 * reg.prior_frames + chain + torch.diagonal(a, dim1=1, dim2=2)
        diag_s = 2 * reg.prior_shared + torch.diagonal(c)
        damp_f = damping * (diag_f + 1e-6 * diag_f.mean() + 1e-9) * free_f
        damp_s = damping * (diag_s + 1e-6 * diag_s.mean().clamp_min(1e-6) + 1e-9) * free_s
        extra_f = 2 * reg.prior_frames + chain + damp_f
        extra_s = 2 * reg.prior_shared + damp_s
        # Held unknowns: rows and columns removed (identity in their place).
        a = a * (free_f[:, None] * free_f[None, :]) + torch.diag_embed(
            (1 - free_f).expand(frames, -1) + extra_f * free_f)
        b = blocks.coupling.double() * free_f[:, None] * free_s[None, :]
        c = c * (free_s[:, None] * free_s[None, :]) + torch.diag(1 - free_s + extra_s * free_s)
        near, far = reg.chain_off_diagonals(frames)
        step_f, step_s = _Schur(a, b, c, near * free_f, far * free_f)(rhs_f, rhs_s)
        # Model decrease: -g.d - d'Hd/2 with (H + damping) d = -g.
        predicted = 0.5 * float((rhs_f * step_f).sum() + (rhs_s * step_s).sum()
                                + (damp_f * step_f ** 2).sum() + (damp_s * step_s ** 2).sum())
        return step_f, step_s, predicted


class _Schur:
    """Exact solve of the step's system: frame blocks A_t, their time coupling (banded: frames
    t +- 1 and t +- 2, through diagonal P x P blocks ``near`` and ``far``), shared block C and
    coupling B, by eliminating the frames (block-tridiagonal Cholesky over pairs of frames) and
    solving the Schur complement of the shared unknowns."""

    def __init__(self, a, b, c, near, far):
        self.chain = _PairChain(a, near, far)
        self.b = b
        self.a_inv_b = self.chain.solve(b)                                    # (T, P, S)
        schur = c - torch.einsum("tps,tpq->sq", b, self.a_inv_b)
        self.schur_factor = _cholesky(schur[None])[0] if schur.numel() else schur

    def __call__(self, r_f: torch.Tensor, r_s: torch.Tensor) -> tuple:
        a_inv_r = self.chain.solve(r_f[..., None])[..., 0]
        if not r_s.numel():
            return a_inv_r, r_s
        rhs = r_s - torch.einsum("tps,tp->s", self.b, a_inv_r)
        z_s = torch.cholesky_solve(rhs[:, None], self.schur_factor)[:, 0]
        return a_inv_r - (self.a_inv_b @ z_s[:, None])[..., 0], z_s


class _PairChain:
    """Cholesky of a block-banded matrix: diagonal blocks A_t (T, P, P); diagonal couplings
    ``near`` (T-1, P) between frames t and t+1 and ``far`` (T-2, P) between t and t+2.

    Pairs of frames make it block-tridiagonal (blocks of 2P), factored in one sequential sweep;
    without couplings all frames are factored at once.
    """

    def __init__(self, a, near, far):
        frames, p = a.shape[:2]
        self.frames, self.p = frames, p
        self.banded = bool(near.abs().sum() + far.abs().sum() > 0)
        if not self.banded:
            self.factor = _cholesky(a)
            return
        pairs = (frames + 1) // 2
        pad = 2 * pairs - frames
        a = torch.cat([a, torch.eye(p, dtype=a.dtype).expand(pad, p, p)])
        near = torch.cat([near, near.new_zeros(2 * pairs - 1 - len(near), p)])
        far = torch.cat([far, far.new_zeros(2 * pairs - 2 - len(far), p)]) if pairs > 1 else far
        diagonal = torch.zeros(pairs, 2 * p, 2 * p, dtype=a.dtype)
        diagonal[:, :p, :p], diagonal[:, p:, p:] = a[0::2], a[1::2]
        diagonal[:, :p, p:] = torch.diag_embed(near[0::2])
        diagonal[:, p:, :p] = diagonal[:, :p, p:]
        upper = torch.zeros(max(pairs - 1, 0), 2 * p, 2 * p, dtype=a.dtype)
        if pairs > 1:
            upper[:, :p, :p] = torch.diag_embed(far[0::2])
            upper[:, p:, :p] = torch.diag_embed(near[1::2])
            upper[:, p:, p:] = torch.diag_embed(far[1::2])
        self.factors, self.links = [], []      # L_k and W_k = L_k^-1 E_k
        current = diagonal[0]
        for k in range(pairs):
            factor = _cholesky(current[None])[0]
            self.factors.append(factor)
            if k + 1 < pairs:
                link = torch.linalg.solve_triangular(factor, upper[k], upper=False)
                self.links.append(link)
                current = diagonal[k + 1] - link.T @ link

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """A^-1 rhs for rhs (T, P, R)."""
        if not self.banded:
            return torch.cholesky_solve(rhs, self.factor)
        frames, p = self.frames, self.p
        pairs = len(self.factors)
        padded = torch.cat([rhs, rhs.new_zeros(2 * pairs - frames, *rhs.shape[1:])])
        padded = padded.reshape(pairs, 2 * p, -1)
        forward = []
        for k in range(pairs):
            value = padded[k] if k == 0 else padded[k] - self.links[k - 1].T @ forward[-1]
            forward.append(torch.linalg.solve_triangular(self.factors[k], value, upper=False))
        out = [None] * pairs
        for k in reversed(range(pairs)):
            value = forward[k] if k == pairs - 1 else forward[k] - self.links[k] @ out[k + 1]
            out[k] = torch.linalg.solve_triangular(self.factors[k].T, value, upper=True)
        return torch.stack(out).reshape(2 * pairs, p, -1)[:frames]


def _cholesky(matrices: torch.Tensor) -> torch.Tensor:
    """Cholesky factors, adding a growing multiple of the mean diagonal where one fails."""
    factor, info = torch.linalg.cholesky_ex(matrices)
    jitter = 1e-10
    while bool((info > 0).any()) and jitter < 1.0:
        scale = torch.diagonal(matrices, dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1e-12)
        eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype)
        factor, info = torch.linalg.cholesky_ex(matrices + jitter * scale[:, None, None] * eye)
        jitter *= 100.0
    return factor
