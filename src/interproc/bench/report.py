"""Markdown tables of medians, ratios and targets."""
from __future__ import annotations

import statistics

from .cases import Case
from .runner import Series, Settings

__all__ = ["section"]

Results = list[tuple[Case, list[Series]]]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _comparisons(case: Case, series: list[Series]) -> list[list[str]]:
    """Rows of interproc against each peer, then interproc's own targets."""
    by_key = {s.key: s for s in series}
    ours = by_key.get("interproc")
    ours_value = ours.median if ours else None
    ours_text = case.metric.format(ours_value) if ours_value is not None else "n/a"
    rows = []
    targets = {t.peer: t for t in case.targets}
    for peer in series:
        if peer.key == "interproc" or not case.compare:
            continue
        target = targets.get(peer.key)
        peer_value = peer.median
        if peer.skipped:
            ratio, verdict = "skipped", "n/a" if target else "—"
        elif ours_value is None or peer_value is None or peer_value <= 0:
            ratio, verdict = "n/a", "n/a" if target else "—"
        else:
            value = ours_value / peer_value
            ratio = case.metric.ratio_text(value)
            verdict = ("met" if target.met(value, case.metric) else "missed") if target else "—"
        rows.append([
            case.title, ours_text, peer.label,
            case.metric.format(peer_value) if peer_value is not None else "n/a",
            ratio, target.text if target else "—", verdict,
        ])
    own = targets.get(None)
    if own:
        verdict = "n/a" if ours_value is None else (
            "met" if own.met(ours_value, case.metric) else "missed")
        rows.append([case.title, ours_text, "—", "—", "—", own.text, verdict])
    return rows


def _measurements(case: Case, series: list[Series]) -> list[list[str]]:
    rows = []
    for s in series:
        if s.skipped:
            rows.append([case.title, s.label, "skipped", "—", "0", "—"])
        elif s.values:
            # The case's own figure, then any further ones from the same trials.
            for metric, values in zip((case.metric, *case.more), (s.values, *s.more)):
                fmt = metric.format
                spread = f"{fmt(min(values))} … {fmt(max(values))}" if len(values) > 1 else "—"
                rows.append([case.title, s.label, fmt(statistics.median(values)), spread,
                             str(len(values)), f"{s.n:,}" if s.n else "—"])
        else:
            rows.append([case.title, s.label, "failed" if s.error else "n/a", "—", "0", "—"])
    return rows


def _notes(results: Results) -> list[str]:
    skipped: dict[str, list[str]] = {}
    notes = []
    for case, series in results:
        for s in series:
            if s.skipped:
                skipped.setdefault(s.skipped, []).append(case.title)
            elif s.error:
                last = s.error.strip().splitlines()[-1]
                notes.append(f"{case.title}: {s.label} failed: {last}")
    # One line per missing implementation, not one per case it sits out.
    notes[:0] = [f"skipped {reason} (in: {', '.join(titles)})" for reason, titles in skipped.items()]
    return notes


def section(title: str, facts: list[str], results: Results, settings: Settings) -> str:
    """One self-contained markdown section for the terminal and for RESULTS.md."""
    lines = [f"## {title}", ""]
    lines += [f"- {fact}" for fact in facts]
    lines.append(
        f"- method: fork; every trial in fresh processes; {settings.trials} trial(s) per "
        f"implementation, alternating; medians shown; ratios are interproc/peer"
    )
    if settings.quick:
        lines.append("- **quick smoke run**: tiny sizes and one trial; not a measurement")
    lines += ["", "### Targets", ""]
    rows = [row for case, series in results for row in _comparisons(case, series)]
    lines += _table(["case", "interproc", "peer", "peer value", "interproc/peer", "target",
                     "result"], rows)
    lines += ["", "### Measurements", ""]
    rows = [row for case, series in results for row in _measurements(case, series)]
    lines += _table(["case", "implementation", "median", "min … max", "trials", "N per trial"],
                    rows)
    notes = _notes(results)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
