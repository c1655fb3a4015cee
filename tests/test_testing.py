"""The tolerance helper must fail on breach, on NaN and on shape mismatch."""

import pytest
import torch

from gdn2.testing import assert_close, error


def test_passes_within_tolerance():
    x = torch.ones(100, dtype=torch.float64)
    err = assert_close("x", x * (1 + 1e-7), x, 1e-6)
    assert err.rel_rms == pytest.approx(1e-7, rel=1e-3)


@pytest.mark.parametrize("bad", [lambda x: x * 1.01, lambda x: x.clone().fill_(float("nan")),
                                 lambda x: x + float("inf")])
def test_fails_on_breach_or_non_finite(bad):
    x = torch.ones(100)
    with pytest.raises(AssertionError, match="rel RMS error"):
        assert_close("x", bad(x), x, 1e-3)


def test_fails_on_max_abs_breach_and_shape_mismatch():
    x = torch.zeros(100)
    y = x.clone()
    y[0] = 1.0
    with pytest.raises(AssertionError, match="max abs"):
        assert_close("y", y, x + 1, 1.0, atol=0.5)
    with pytest.raises(AssertionError, match="shape"):
        error(torch.ones(3), torch.ones(4))


@pytest.mark.parametrize("where", ["expected", "both"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_fails_on_a_non_finite_reference(where, value):
    """A reference broken into NaN or inf fails every comparison (a NaN error compares false with
    any bound, so without the check a broken float64 reference would pass whole test files)."""
    from gdn2.testing import assert_no_worse
    x = torch.ones(100)
    broken = x.clone()
    broken[3] = value
    actual = broken if where == "both" else x
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("x", actual, broken, 1e-3)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("x", actual, broken, 1e-3, atol=1.0)
    with pytest.raises(AssertionError):
        assert_no_worse("x", actual, x * 1.001, broken)
    with pytest.raises(AssertionError):
        assert_no_worse("x", x * 5, x, broken)
