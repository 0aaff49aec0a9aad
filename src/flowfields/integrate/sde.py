"""Front door for solving SDEs: :func:`sdeint`, a thin layer over ``torchsde.sdeint``.

It validates the input like :func:`~flowfields.integrate.odeint` (times through
:func:`~flowfields.integrate.as_times`, handed to torchsde in float64; the SDE's methods get
``t`` in the state's dtype, as odeint's fields do), counts the evaluations of the drift
(``nfe``) and of the diffusion (``extra["nfe_diffusion"]``), and returns the same
:class:`~flowfields.integrate.Solution` record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from flowfields.errors import FlowfieldsError, check, check_finite, describe
from flowfields.integrate.grid import as_times, grid_dtype
from flowfields.integrate.ode import Solution

__all__ = ["SDE_METHODS", "TORCHSDE_NAMES", "sdeint"]

#: torchsde's solvers by name (which noise types and SDE types each supports is torchsde's).
SDE_METHODS: tuple[str, ...] = (
    "euler",
    "milstein",
    "srk",
    "midpoint",
    "heun",
    "log_ode",
    "euler_heun",
    "reversible_heun",
)


def _check_method_fits(method: str | None, sde: Any) -> None:
    """Refuse a method torchsde would reject for the SDE's ``sde_type`` / ``noise_type``.

    Uses torchsde's own table (each solver class declares the SDE type and noise types it
    solves), so the message names the argument before torchsde's bare ``ValueError``.
    """
    if method is None:
        return
    try:
        from torchsde._core.methods import select
    except ImportError:  # a torchsde without the table: torchsde checks it itself
        return
    sde_type, noise_type = getattr(sde, "sde_type", None), getattr(sde, "noise_type", None)
    solver = select(method, sde_type)
    check(
        getattr(solver, "sde_type", sde_type) == sde_type,
        "method",
        method,
        f"a method for {sde_type} SDEs (the SDE's sde_type); {method!r} solves "
        f"{getattr(solver, 'sde_type', '?')} SDEs",
    )
    allowed = getattr(solver, "noise_types", None)
    check(
        allowed is None or noise_type in allowed,
        "method",
        method,
        f"a method for noise_type {noise_type!r}; {method!r} takes {sorted(allowed or [])}",
    )


_METHOD_NAMES = ("f", "g", "h", "f_and_g", "g_prod", "f_and_g_prod")
_DRIFT = {"f", "f_and_g", "f_and_g_prod"}

#: torchsde's own keys of ``names`` and the method each renames.
TORCHSDE_NAMES: dict[str, str] = {
    "drift": "f",
    "diffusion": "g",
    "prior_drift": "h",
    "drift_and_diffusion": "f_and_g",
    "diffusion_prod": "g_prod",
    "drift_and_diffusion_prod": "f_and_g_prod",
}


def _method_names(sde: Any, names: dict[str, str] | None) -> dict[str, str]:
    """``names`` in either form (torchsde's ``{"drift": "foo"}`` or ``{"f": "foo"}``), as
    ``{method: attribute of sde}``, validated."""
    if names is None:
        return {}
    check(isinstance(names, dict), "names", names, "a dict such as {'drift': 'my_drift'}")
    out: dict[str, str] = {}
    for key, target in names.items():
        method = TORCHSDE_NAMES.get(key, key)
        check(
            method in _METHOD_NAMES,
            f"names[{key!r}]",
            key,
            f"a key among {', '.join(TORCHSDE_NAMES)} (torchsde's) or {', '.join(_METHOD_NAMES)}",
        )
        check(method not in out, f"names[{key!r}]", key, f"{method!r} renamed only once")
        check(
            isinstance(target, str) and callable(getattr(sde, target, None)),
            f"names[{key!r}]",
            target,
            "the name of a method of the SDE object",
        )
        out[method] = target
    return out


class _CountedSDE(nn.Module):
    """Forwards torchsde's method names to the user's SDE, counting drift/diffusion calls."""

    def __init__(self, sde: Any, names: dict[str, str], dtype: Any) -> None:
        super().__init__()
        self.dtype = dtype
        if isinstance(sde, nn.Module):
            self.sde = sde
        else:
            object.__setattr__(self, "sde", sde)
        self.noise_type = sde.noise_type
        self.sde_type = sde.sde_type
        self.nfe = 0
        self.nfe_diffusion = 0
        for name in _METHOD_NAMES:
            target = names.get(name, name)
            fn = getattr(sde, target, None)
            if callable(fn):
                object.__setattr__(self, name, self._counting(name, fn))

    def _counting(self, name: str, fn: Any) -> Any:
        drift = name in _DRIFT
        diffusion = name != "f" and name != "h"

        def call(t: Any, *args: Any, **kwargs: Any) -> Any:
            if drift:
                self.nfe += 1
            if diffusion:
                self.nfe_diffusion += 1
            if isinstance(t, Tensor) and t.dtype != self.dtype:
                t = t.to(self.dtype)  # torchsde steps in float64; fields get the state's dtype
            return fn(t, *args, **kwargs)

        return call


def sdeint(
    sde: Any,
    x_0: Tensor,
    t: Tensor | Sequence[float],
    *,
    method: str | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    bm: Any = None,
    adjoint: bool = False,
    adjoint_params: Iterable[Tensor] | None = None,
    logqp: bool = False,
    names: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
) -> Solution:
    """Solve the SDE ``dx = f(t, x) dt + g(t, x) dW`` with torchsde.

    Args:
        sde: an object with ``noise_type`` ("diagonal", "additive", "scalar", "general"),
            ``sde_type`` ("ito" or "stratonovich") and methods ``f(t, x)`` and ``g(t, x)``
            (and ``h`` for ``logqp``), as torchsde expects; ``names`` renames them.
        x_0: initial state, shape ``(B, d)``.
        t: increasing times, shape ``(T,)``.
        method: a torchsde method (:data:`SDE_METHODS`); None lets torchsde choose.
        dt: step size (initial step size when ``adaptive``).
        adaptive, rtol, atol: torchsde's adaptive stepping.
        bm: a torchsde Brownian motion (e.g. ``torchsde.BrownianInterval``) to fix the noise.
        adjoint: use ``torchsde.sdeint_adjoint``; ``adjoint_params`` defaults to the SDE's
            parameters when it is an ``nn.Module``.
        logqp: also return the KL log-ratio (needs ``h``), in ``Solution.extra["log_ratio"]``
            with shape ``(T - 1, B)``.
        names: renames the SDE's methods, in torchsde's form (``{"drift": "my_f",
            "diffusion": "my_g"}``, keys :data:`TORCHSDE_NAMES`) or by method
            (``{"f": "my_f"}``).
        options: passed to torchsde.

    Returns:
        :class:`~flowfields.integrate.Solution` with ``x`` of shape ``(T, B, d)``, ``nfe`` the
        drift evaluations and ``extra["nfe_diffusion"]`` the diffusion evaluations (both
        include the one call torchsde makes at ``t[0]`` to check shapes).

    Raises:
        FlowfieldsError: unknown method, bad ``x_0`` (not (batch, d), empty, not finite) or
            ``t``, an SDE object missing its parts, bad ``names``.
    """
    import torchsde

    check(
        method is None or method in SDE_METHODS,
        "method",
        method,
        f"None or one of: {', '.join(SDE_METHODS)}",
    )
    for attr in ("noise_type", "sde_type"):
        if not hasattr(sde, attr):
            raise FlowfieldsError(
                f"sde: got {describe(sde)} without attribute {attr!r}, expected an object with "
                "noise_type, sde_type and methods f(t, x), g(t, x) as torchsde requires."
            )
    check(isinstance(x_0, Tensor), "x_0", x_0, "a tensor of shape (batch, d)")
    check(x_0.ndim == 2, "x_0", x_0, "a tensor of shape (batch, d)")
    check(x_0.is_floating_point(), "x_0", x_0, "a floating-point tensor")
    check(x_0.numel() > 0, "x_0", x_0, "a non-empty batch (an empty batch has nothing to solve)")
    check_finite(x_0, "x_0")
    t_user = t
    t = as_times(t)
    check(bool(t[1] > t[0]), "t", t, "increasing times (torchsde integrates forward only)")
    check(isinstance(dt, (int, float)) and dt > 0, "dt", dt, "a positive float")

    _check_method_fits(method, sde)
    counted = _CountedSDE(sde, _method_names(sde, names), x_0.dtype)
    kwargs: dict[str, Any] = dict(
        bm=bm,
        method=method,
        dt=dt,
        adaptive=adaptive,
        rtol=rtol,
        atol=atol,
        options=options,
        logqp=logqp,
    )
    ts = t.to(device=x_0.device, dtype=grid_dtype(x_0.device))
    if adjoint:
        if adjoint_params is None:
            adjoint_params = tuple(sde.parameters()) if isinstance(sde, nn.Module) else ()
        out = torchsde.sdeint_adjoint(
            counted, x_0, ts, adjoint_params=tuple(adjoint_params), **kwargs
        )
    else:
        out = torchsde.sdeint(counted, x_0, ts, **kwargs)
    extra: dict[str, Any] = {"nfe_diffusion": counted.nfe_diffusion}
    if logqp:
        xs, log_ratio = out
        extra["log_ratio"] = log_ratio
    else:
        xs = out
    return Solution(
        t=t_user if isinstance(t_user, Tensor) else t,
        x=xs,
        nfe=counted.nfe,
        method=method or "default",
        extra=extra,
        backend="torchsde",
    )
