"""The transfer curve: the array cases' GB/s against item size, as a PNG.

matplotlib is in the ``bench`` extras; without it the picture is skipped
with a note, and the run is not failed for it.
"""
from __future__ import annotations

from typing import Callable

from . import arrays
from .cases import Case
from .runner import Series, Settings

__all__ = ["transfer_curve"]

_TITLES = {"queue": "Queue: put → get", "pipe": "Pipe(duplex=False): send → recv"}


def transfer_curve(results: list[tuple[Case, list[Series]]], path: str, title: str,
                   settings: Settings, log: Callable[[str], None]) -> None:
    """Draw one line per contender, GB/s (median) against item size, both
    on log scales, queue cases left and pipe cases right, into ``path``.

    Only the array cases in ``results`` are drawn; a kind none of them
    measured gets no panel.
    """
    # Per kind, per contender key: its label and its (size, median) points.
    lines: dict[str, dict[str, tuple[str, list[tuple[int, float]]]]] = {
        kind: {} for kind in arrays.KINDS}
    for case, series in results:
        point = arrays.curve_point(case.name)
        if point is None:
            continue
        kind, nbytes = point
        for s in series:
            if s.median is not None:
                _, points = lines[kind].setdefault(s.key, (s.label, []))
                points.append((arrays.sized(nbytes, settings), s.median))
    if not any(lines.values()):
        log(f"no picture: no array case measured anything to draw in {path}")
        return
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        log(f"no picture: matplotlib cannot be imported ({exc}); "
            "it comes with the bench extras: pip install 'interproc[bench]'")
        return

    kinds = [kind for kind in arrays.KINDS if lines[kind]]
    # One colour per contender in both panels; the floor dashed.
    colours: dict[str, str] = {}
    for kind in kinds:
        for key in lines[kind]:
            colours.setdefault(key, f"C{len(colours) % 10}")
    figure = Figure(figsize=(6 * len(kinds), 5), layout="constrained")
    figure.suptitle(f"float64 arrays, 1 producer → 1 consumer: {title}")
    for axes, kind in zip(figure.subplots(1, len(kinds), sharey=True, squeeze=False)[0], kinds):
        sizes = sorted({size for _, points in lines[kind].values() for size, _ in points})
        for key, (label, points) in lines[kind].items():
            points.sort()
            axes.plot([size for size, _ in points], [value for _, value in points],
                      marker="o", color=colours[key], label=label,
                      linewidth=2.5 if key == "interproc" else 1.5,
                      linestyle="--" if key == "copyto" else "-")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xticks(sizes, [arrays.size_text(size) for size in sizes])
        axes.set_title(_TITLES[kind])
        axes.set_xlabel("item size")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    figure.axes[0].set_ylabel("GB/s (median)")
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        log(f"no picture: cannot write {path}: {exc}")
        return
    log(f"drew {path}")
