"""Plotting style and helpers shared by every experiment's ``figures``.

Figures are drawn from results tables only, with a fixed style, size and fonts, and
saved as PNG (for the README) and PDF (for papers). Every band is a 95% t-interval
across seeds, and captions say how many seeds it covers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from toolkit.stats import mean_ci_by_group  # noqa: E402

PALETTE = "colorblind"
BAND_NOTE = "mean ± 95% CI across seeds"


def style() -> None:
    """The one plotting style (deterministic: no date stamps, fixed DPI and fonts)."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font="DejaVu Sans")
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "svg.hashsalt": "toolkit",
            "pdf.compression": 6,
        }
    )


def save(fig: plt.Figure, out_dir: Path, name: str) -> Path:
    """Write ``name``.png and ``name``.pdf (no timestamps in the PDF); return the PNG."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    if fig.get_layout_engine() is None:  # figures with colorbars use constrained layout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
    fig.savefig(png, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(
        out_dir / f"{name}.pdf",
        bbox_inches="tight",
        metadata={"CreationDate": None, "Creator": None},
    )
    plt.close(fig)
    return png


def band(
    ax: plt.Axes,
    frame: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    label_format: str = "{}",
    **line_kwargs,
) -> None:
    """Mean line and 95% band across seeds of ``y`` against ``x``, one line per ``hue``."""
    groups = [hue, x] if hue else [x]
    stats = mean_ci_by_group(frame, groups, y)
    hue_values = stats[hue].drop_duplicates().tolist() if hue else [None]
    fixed_color = line_kwargs.pop("color", None)
    fixed_label = line_kwargs.pop("label", None)
    colors = sns.color_palette(PALETTE, max(len(hue_values), 1))
    for color, value in zip(colors, hue_values):
        color = fixed_color or color
        part = stats if hue is None else stats[stats[hue] == value]
        label = label_format.format(value) if hue else fixed_label
        ax.plot(part[x], part["mean"], color=color, label=label, **line_kwargs)
        ax.fill_between(part[x], part["ci_low"], part["ci_high"], color=color, alpha=0.2, lw=0)


def contour(ax: plt.Axes, frame: pd.DataFrame, levels) -> matplotlib.contour.QuadContourSet:
    """Filled contours of ``loss`` over a 2-D slice table (columns alpha, beta, loss)."""
    grid = frame.pivot_table(index="beta", columns="alpha", values="loss")
    shown = ax.contourf(grid.columns, grid.index, grid.to_numpy(), levels=levels, extend="max")
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    return shown


def n_seeds(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique()) if "seed" in frame else 0
