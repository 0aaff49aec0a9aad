"""``python -m flowfields`` runs the command line (see :mod:`flowfields.cli`)."""

from __future__ import annotations

__all__: list[str] = []

if __name__ == "__main__":
    import sys

    from flowfields.cli import main

    sys.exit(main())
