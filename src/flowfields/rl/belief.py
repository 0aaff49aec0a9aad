"""A small recurrent filter for partially observed tasks: its state is the belief SMAC
marginalizes.

Zhang et al., "Latent State Marginalization as a Low-cost Approach for Improving Exploration"
(arXiv:2210.00999, Section 4.2): in a POMDP the latent of the policy is a belief over a recurrent
state, ``q(s_t | o_{<=t}, a_{<t})``, and SMAC marginalizes the policy over it. Here a GRU reads
the window of the last ``L`` steps ``(o_t, a_{t-1}, valid)`` built by
:class:`~flowfields.rl.pomdp.HistoryObservation`, from a zero state, so training on replayed
windows and acting on the live window compute the same belief. :class:`~flowfields.rl.LatentPolicy`
with this trunk puts its Gaussian ``q(s | h_L) = N(mu_s(h_L), sigma_s(h_L)^2)`` on the filter's
state: the belief that its K + 1 particles sample. The filter is trained end to end by the
actor's loss, optionally plus a next-observation prediction loss
(``AgentConfig.filter_aux``, :meth:`~flowfields.rl.SAC.prediction_loss`).

Why a window recomputed at every step and not a hidden state carried across environment steps
(true filtering): a carried state ``h_t`` depends on the filter's weights at every earlier
step, so the states met while acting go stale as the weights change. Training on them needs
either storing them in the replay buffer (stale: the belief trained on is not the current
filter's) or replaying whole sequences with a burn-in (R2D2, Kapturowski et al. 2019), which
turns the one-transition buffer, the update and its cost measurement into sequence versions.
The window keeps every transition self-contained: the belief of a replayed transition is
exactly what the current filter computes on it, and a checkpoint holds no recurrent state (the
window lives in the pickled environment wrapper). The price is a memory of ``L`` steps; on
velocity-free Pendulum two consecutive angles and the action determine the velocity, so a
short window suffices (the filter recovers it from 4 steps with R^2 >= 0.9, tested), and
with flicker the window should exceed the longest expected run of dropped frames.
"""

from __future__ import annotations

from torch import Tensor, nn

from flowfields.errors import check
from flowfields.rl.nets import relu_mlp

__all__ = ["BeliefFilter", "recurrent_trunk"]


class BeliefFilter(nn.Module):
    """``h_t = h_{t-1} + m_t (GRU(x_t, h_{t-1}) - h_{t-1})`` over a window, ``h_0 = 0``.

    ``m_t`` is the step's validity flag (its last entry): padding before an episode's first
    step leaves the state unchanged, so a window holding k valid steps gives the state of the
    GRU run on those k steps alone.

    Args:
        step_dim: numbers per step (``obs_dim + act_dim + 1``). window: steps per window.
        hidden: size of the GRU state.

    Shapes:
        ``forward(x)``: (..., window * step_dim) -> (..., hidden), the state after the newest
        step.
    """

    def __init__(self, step_dim: int, window: int, hidden: int = 64) -> None:
        super().__init__()
        for name, v in (("step_dim", step_dim), ("window", window), ("hidden", hidden)):
            check(isinstance(v, int) and v >= 1, name, v, "a positive integer")
        self.step_dim, self.window, self.hidden = step_dim, window, hidden
        self.cell = nn.GRUCell(step_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        n = self.window * self.step_dim
        check(x.shape[-1] == n, "x", tuple(x.shape), f"(..., window * step_dim = {n})")
        lead = x.shape[:-1]
        steps = x.reshape(-1, self.window, self.step_dim)
        h = steps.new_zeros(steps.shape[0], self.hidden)
        for t in range(self.window):
            m = steps[:, t, -1:]
            h = h + m * (self.cell(steps[:, t], h) - h)
        return h.reshape(*lead, self.hidden)


def recurrent_trunk(
    obs_dim: int, window: int, filter_hidden: int, hidden: int, depth: int
) -> nn.Sequential:
    """``BeliefFilter`` then a ReLU MLP to ``hidden`` units: a policy trunk on windows of
    ``obs_dim = window * step_dim`` numbers. Shapes (..., obs_dim) -> (..., hidden)."""
    check(
        isinstance(window, int) and window >= 1 and obs_dim % window == 0,
        "filter_window",
        window,
        f"a positive divisor of the observation size {obs_dim}",
    )
    return nn.Sequential(
        BeliefFilter(obs_dim // window, window, filter_hidden),
        relu_mlp(filter_hidden, None, hidden, depth),
    )
