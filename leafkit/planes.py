"""Two plane fields in ``R^3`` that a reader can picture: one involutive, one not.

A plane field ``D = span{X, Y}`` with ``X = d/dx + a d/dz`` and ``Y = d/dy + b d/dz`` is
involutive exactly where ``da/dy = db/dx``; then it has leaves (the Frobenius theorem), otherwise a
loop drawn tangent to the planes does not close. :class:`PlaneField` computes the bracket, the
involutivity residual and the lift of a plane curve; :data:`PLANE_FIELDS` holds the two examples
of the foliation chapter (drawn by :func:`leafkit.plots.plot_plane_fields`).

Paper: Section 3 (distributions, involutivity (3.4), the Frobenius theorem).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vmap

from .checks import quiet_forward_mode

__all__ = ["PLANE_FIELDS", "PlaneField", "circle"]


@dataclass(frozen=True)
class PlaneField:
    """The plane field ``D = span{X, Y}`` on ``R^3`` with ``X = d/dx + a(x, y) d/dz`` and
    ``Y = d/dy + b(x, y) d/dz``: at each point the plane of the 1-form ``dz - a dx - b dy``.

    ``[X, Y] = (db/dx - da/dy) d/dz``, so ``D`` is involutive exactly where ``da/dy = db/dx``
    (the 1-form is closed and the leaves are the graphs ``z = f(x, y) + c`` with
    ``df = a dx + b dy``). Otherwise a loop drawn tangent to the planes does not close: it climbs
    by the integral of ``db/dx - da/dy`` over the area it encircles (Stokes).

    Attributes:
        name: a short label.
        a, b: functions of two tensors ``(x, y)`` returning a tensor of their shape.
    """

    name: str
    a: Callable[[Tensor, Tensor], Tensor]
    b: Callable[[Tensor, Tensor], Tensor]

    def X(self, p: Tensor) -> Tensor:
        """The field ``X`` at points ``p`` ``(P, 3)``, shape ``(P, 3)``."""
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        return torch.stack([one, zero, self.a(p[:, 0], p[:, 1])], -1)

    def Y(self, p: Tensor) -> Tensor:
        """The field ``Y`` at points ``p`` ``(P, 3)``, shape ``(P, 3)``."""
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        return torch.stack([zero, one, self.b(p[:, 0], p[:, 1])], -1)

    def bracket(self, p: Tensor) -> Tensor:
        """The Lie bracket ``[X, Y] = (DY) X - (DX) Y`` at points ``p`` ``(P, 3)``, by forward-mode
        derivatives (no finite differences), shape ``(P, 3)``."""
        def one(q: Tensor) -> Tensor:
            X = lambda r: self.X(r.unsqueeze(0))[0]
            Y = lambda r: self.Y(r.unsqueeze(0))[0]
            return jvp(Y, (q,), (X(q),))[1] - jvp(X, (q,), (Y(q),))[1]
        with quiet_forward_mode():
            return vmap(one)(p)

    def residual(self, p: Tensor) -> Tensor:
        """``||(I - P_D) [X, Y]|| / ||[X, Y]||`` at points ``p`` ``(P, 3)`` (0 where the bracket
        vanishes): 0 everywhere iff ``D`` is involutive. Shape ``(P,)``."""
        Q = torch.linalg.qr(torch.stack([self.X(p), self.Y(p)], -1)).Q  # (P, 3, 2)
        br = self.bracket(p)
        outside = br - (Q @ (Q.mT @ br.unsqueeze(-1))).squeeze(-1)
        norm = br.norm(dim=-1)
        return torch.where(norm > 0, outside.norm(dim=-1) / norm.clamp_min(1e-300), 0.0)

    def lift(self, xy: Tensor, z0: float = 0.0) -> Tensor:
        """The curve tangent to ``D`` above a plane curve ``xy`` ``(T, 2)``, starting at height
        ``z0``: ``z' = a x' + b y'`` integrated by the trapezoid rule. Shape ``(T, 3)``."""
        a, b = self.a(xy[:, 0], xy[:, 1]), self.b(xy[:, 0], xy[:, 1])
        dx, dy = xy[1:, 0] - xy[:-1, 0], xy[1:, 1] - xy[:-1, 1]
        dz = 0.5 * (a[1:] + a[:-1]) * dx + 0.5 * (b[1:] + b[:-1]) * dy
        z = z0 + torch.cat([torch.zeros_like(dz[:1]), dz.cumsum(0)])
        return torch.cat([xy, z.unsqueeze(-1)], -1)


#: Two plane fields that differ in one coefficient: the planes of ``dz - y dx - x dy = d(z - xy)``
#: (involutive, leaves ``z = xy + c``) and of ``dz - y dx`` (the standard contact structure, as far
#: from involutive as a plane field in ``R^3`` can be).
PLANE_FIELDS: dict[str, PlaneField] = {
    "involutive": PlaneField("involutive: dz = y dx + x dy", a=lambda x, y: y, b=lambda x, y: x),
    "contact": PlaneField("not involutive: dz = y dx", a=lambda x, y: y,
                          b=lambda x, y: torch.zeros_like(x)),
}


def circle(radius: float = 1.0, steps: int = 400, dtype: torch.dtype = torch.float64) -> Tensor:
    """A counter-clockwise circle in the plane, ``(steps + 1, 2)``, closed (last = first)."""
    t = torch.linspace(0, 2 * math.pi, steps + 1, dtype=dtype)
    return radius * torch.stack([t.cos(), t.sin()], -1)
