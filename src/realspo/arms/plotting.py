"""Figures of the proving-ground reports: a figure on a display-free backend, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from realspo.outputs import atomic_path


def new_figure(*args: Any, **kwargs: Any):
    """``plt.subplots(*args, **kwargs)`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as PNG atomically (no software stamp: reproducible bytes) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
