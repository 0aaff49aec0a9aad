"""Real data on S^2, offline: the US airports of the ``vega_datasets`` wheel.

``vega_datasets`` (MIT-licensed package) ships ``airports.csv`` inside its wheel: 3,376 US
airports with latitude and longitude, "a subset of the data compiled and published at
ourairports.com, in the public domain" (the package's ``dataset_info.json``). Install with
the ``ppd`` extra (``pip install flowfields[ppd]``); nothing is downloaded at run time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowfields.errors import FlowfieldsError

__all__ = ["airports_s2", "lat_lon_to_s2"]


def lat_lon_to_s2(lat_deg: Tensor, lon_deg: Tensor) -> Tensor:
    """Unit vectors (B, 3) of latitudes / longitudes in degrees."""
    lat, lon = lat_deg * (math.pi / 180), lon_deg * (math.pi / 180)
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)


def airports_s2(dtype: torch.dtype = torch.float64) -> Tensor:
    """The 3,376 airports as points on S^2, shape (3376, 3), in file order.

    Raises:
        FlowfieldsError: ``vega_datasets`` is not installed.
    """
    try:
        from vega_datasets import local_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FlowfieldsError(
            "data: got no vega_datasets package, expected it installed for the airports data "
            "(pip install 'flowfields[ppd]')"
        ) from err
    df = local_data.airports()
    lat = torch.tensor(df["latitude"].to_numpy(), dtype=torch.float64)
    lon = torch.tensor(df["longitude"].to_numpy(), dtype=torch.float64)
    return lat_lon_to_s2(lat, lon).to(dtype)
