"""Fixtures the launch tests share with the unit tests of the same modules (trained runs, sources, weights)."""

from tests.unit.test_ema_sample import trained, trained_cond, trained_sg  # noqa: F401
from tests.unit.test_inception import weights  # noqa: F401
from tests.unit.test_mnist import wheel_mnist  # noqa: F401
from tests.unit.test_warmstart import source  # noqa: F401
