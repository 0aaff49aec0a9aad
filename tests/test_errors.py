"""The error helpers name the argument, what was given and what was expected."""

from __future__ import annotations

import pytest
import torch

from flowfields.errors import (
    FlowfieldsError,
    NonFiniteLossError,
    check,
    check_finite,
    check_shape,
    describe,
)


def test_check_message_names_argument_given_and_expected() -> None:
    with pytest.raises(FlowfieldsError, match=r"steps: got -3, expected a positive integer"):
        check(False, "steps", -3, "a positive integer")
    check(True, "steps", 3, "a positive integer")


def test_describe_tensor_mentions_shape_and_dtype() -> None:
    text = describe(torch.zeros(2, 3, dtype=torch.float64))
    assert "(2, 3)" in text and "float64" in text


def test_check_shape_and_finite() -> None:
    x = torch.zeros(4, 2)
    check_shape(x, "x", ndim=2, last=2)
    with pytest.raises(FlowfieldsError, match="last dimension of size 3"):
        check_shape(x, "x", last=3)
    with pytest.raises(FlowfieldsError, match="2 dimensions"):
        check_shape(torch.zeros(3), "x", ndim=2)
    x[1, 0] = float("nan")
    x[2, 1] = float("inf")
    with pytest.raises(FlowfieldsError, match="2 non-finite"):
        check_finite(x, "x")


def test_error_types_are_value_errors() -> None:
    err = NonFiniteLossError("nan", step=7, recent_losses=[1.0], last_checkpoint="c.pt")
    assert isinstance(err, ValueError) and isinstance(err, FlowfieldsError)
    assert err.step == 7 and err.recent_losses == [1.0] and err.last_checkpoint == "c.pt"
