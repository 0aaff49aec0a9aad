"""Data sets: 2-D toys with exact densities, small image sets shipped in packages, metrics.

Nothing is downloaded at run time. See :mod:`flowfields.data.toys` (checkerboard, 8gaussians,
2spirals, moons, pinwheel, rings), :mod:`flowfields.data.images` (8x8 digits, an MNIST subset,
uniform dequantization), :mod:`flowfields.data.sequences` (continuous-time jumps,
piecewise sinusoids, moving digits, renderable at any frame rate) and :mod:`flowfields.data.metrics`
(sliced Wasserstein, expected calibration error).
"""

from flowfields.data.images import (
    DIGITS_LEVELS,
    MNIST_LEVELS,
    Dequantized,
    check_levels,
    load_digits,
    load_mnist_subset,
    split_train_test,
    uniform_dequantize,
)
from flowfields.data.metrics import (
    Calibration,
    expected_calibration_error,
    sliced_wasserstein,
    wasserstein_1d,
)
from flowfields.data.sequences import (
    MovingDigit,
    PiecewiseConstant,
    PiecewiseSinusoid,
    frame_times,
    moving_digit,
    random_jumps,
    random_sinusoids,
)
from flowfields.data.toys import (
    TOYS,
    Checkerboard,
    EightGaussians,
    Moons,
    Pinwheel,
    Rings,
    Toy2D,
    TwoSpirals,
    get_toy,
    support_fraction,
)

__all__ = [
    "DIGITS_LEVELS",
    "MNIST_LEVELS",
    "TOYS",
    "Calibration",
    "Checkerboard",
    "Dequantized",
    "EightGaussians",
    "Moons",
    "MovingDigit",
    "PiecewiseConstant",
    "PiecewiseSinusoid",
    "Pinwheel",
    "Rings",
    "Toy2D",
    "TwoSpirals",
    "check_levels",
    "expected_calibration_error",
    "frame_times",
    "get_toy",
    "load_digits",
    "load_mnist_subset",
    "moving_digit",
    "random_jumps",
    "random_sinusoids",
    "sliced_wasserstein",
    "split_train_test",
    "support_fraction",
    "uniform_dequantize",
    "wasserstein_1d",
]
