"""Unit tests of leafkit.planes: the two plane fields of R^3 against their closed forms."""

import math

import pytest
import torch

from leafkit import planes

TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_plane_fields_closed_forms():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    inv, con = planes.PLANE_FIELDS["involutive"], planes.PLANE_FIELDS["contact"]
    assert inv.bracket(p).abs().max() == 0 and inv.residual(p).max() == 0
    torch.testing.assert_close(con.bracket(p), torch.tensor([0.0, 0.0, -1.0],
                                                            dtype=torch.float64).expand(50, 3))
    # the part of -d/dz outside span{(1, 0, y), (0, 1, 0)} has length 1 / sqrt(1 + y^2)
    torch.testing.assert_close(con.residual(p), 1 / (1 + p[:, 1] ** 2).sqrt(), **TOL)
    torch.testing.assert_close(inv.X(p)[:, 2], p[:, 1])  # X = d/dx + y d/dz
    torch.testing.assert_close(inv.Y(p)[:, 2], p[:, 0])  # Y = d/dy + x d/dz
    r = 0.7
    loop = planes.circle(r, steps=2000)
    assert abs(inv.lift(loop)[-1, 2]) < 1e-12
    assert abs(con.lift(loop)[-1, 2] + math.pi * r**2) < 1e-5
    torch.testing.assert_close(loop[0], loop[-1])
    torch.testing.assert_close(loop.norm(dim=1), torch.full((2001,), r, dtype=torch.float64))


def test_lift_follows_the_leaf_of_an_involutive_field():
    # leaves of dz = y dx + x dy are z = xy + c: the lift of any curve stays on one of them
    t = torch.linspace(0, 1, 501, dtype=torch.float64)
    xy = torch.stack([t, t.square()], -1)
    curve = planes.PLANE_FIELDS["involutive"].lift(xy, z0=0.25)
    torch.testing.assert_close(curve[:, 2], xy[:, 0] * xy[:, 1] + 0.25, rtol=0, atol=1e-5)


def test_a_custom_field_gains_the_curl_times_the_area():
    c = 3.0
    field = planes.PlaneField("c = 3", a=lambda x, y: y, b=lambda x, y: c * x)
    gain = field.lift(planes.circle(1.0, steps=4000))[-1, 2].item()
    assert gain == pytest.approx((c - 1) * math.pi, rel=1e-5)  # db/dx - da/dy = c - 1

