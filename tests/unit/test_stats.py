"""Named statistics in one process: device and host values, means and totals, nothing read back early."""

from __future__ import annotations

import math

import torch

from distgan.utils.stats import Stats


def test_means_totals_and_reset() -> None:
    s = Stats()
    for v in (1.0, 2.0, 3.0):
        s.report("loss", torch.tensor(v))  # device values: summed where they are
        s.report("wait_s", v / 10)  # host values: Python numbers
    s.report("norm", torch.tensor([3.0, 4.0]), count=2)  # a vector is its sum, counted as 2 reports
    c = s.local()
    assert c.mean("loss") == 2.0 and c.total("loss") == 6.0
    assert math.isclose(c.total("wait_s"), 0.6) and c.mean("norm") == 3.5
    assert c.mean("absent", default=-1.0) == -1.0 and "absent" not in c
    assert s.collect().mean("loss") == 2.0  # one process: collect needs no process group
    assert s.names() == []  # reset by collect


def test_a_non_finite_value_stays_in_the_sum() -> None:
    s = Stats()
    s.report("loss_d", torch.tensor(1.0))
    s.report("loss_d", torch.tensor(float("nan")))
    s.report("loss_d", torch.tensor(2.0))
    assert math.isnan(s.local().total("loss_d"))


def test_reporting_keeps_the_tensor_it_was_given_untouched() -> None:
    s = Stats()
    x = torch.tensor(5.0, requires_grad=True) * 1
    s.report("x", x)
    s.report("x", x)
    assert x.item() == 5.0 and s.local().total("x") == 10.0
