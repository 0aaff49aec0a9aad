"""The README's Python tour runs as written and prints what it says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_tour() -> None:
    assert len(_python_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _python_blocks()[index]
    namespace: dict[str, object] = {"__name__": "readme_tour"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    # the divergence of the exactly divergence-free field is round-off, not "small"
    div = namespace["div"]
    assert float(div.detach().abs().max()) < 1e-12  # type: ignore[union-attr]
    # the steady-state gradient is the implicit one: compare with central finite differences
    import torch

    from flowfields.quantum import expect, kerr_cavity, steady_state

    n = torch.diag(torch.arange(8.0)).to(torch.complex128)
    h = 1e-6
    f = [float(expect(n, steady_state(kerr_cavity(8, kappa=1.0 + s * h)))) for s in (1, -1)]
    fd = (f[0] - f[1]) / (2 * h)
    grad = float(namespace["kappa"].grad)  # type: ignore[union-attr]
    assert abs(grad - fd) <= 1e-6 * max(1.0, abs(fd))
    # the tour's flow-matching model beats a standard normal by a wide margin (NLL in nats)
    nll = float(namespace["nll"])  # type: ignore[arg-type]
    assert 3.466 < nll < 5.5, nll
    assert len(out) == 3
