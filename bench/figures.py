"""One measured figure against its baseline, and the one table `python -m bench` prints of them.

Every bench module exposes `figures(quick=False, baseline=None) -> list[Figure]`; its own `main()`
keeps its fuller printout. The ratio is always ours / baseline, so "508 times smaller" reads 1/508.
A baseline that was not measured in this run (a checkout that was not given) is None: the row says
so instead of borrowing a number from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_BASELINE = "no baseline"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None  # None: not measured in this run (see `note`)
    unit: str
    baseline_name: str
    baseline: float | None  # measured in the same run; None = no baseline
    readme: str  # the README sentence this figure backs ("-" when the README quotes none)
    note: str = ""  # why a value or baseline is missing, or how the run was scaled

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline in (None, 0):
            return None
        return self.value / self.baseline


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):  # a count
        text = f"{value:,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.01 or value == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.4f}"
    return f"{text} {unit}".strip()


def ratio_text(ratio: float | None) -> str:
    """2.5× when ours is larger, 1/508 when ours is 508 times smaller."""
    if ratio is None:
        return "-"
    if ratio <= 0:
        return f"{ratio:.2f}"  # a growth that shrank: no "times" reading
    if ratio >= 1:
        return f"{ratio:.2f}×" if ratio < 100 else f"{ratio:,.0f}×"
    inverse = 1 / ratio
    return f"1/{inverse:.2f}" if inverse < 10 else f"1/{inverse:,.0f}"


HEADER = ("figure", "ours", "baseline", "ratio", "README says")


def row(figure: Figure) -> tuple[str, ...]:
    ours = number(figure.value, figure.unit) if figure.value is not None else f"- ({figure.note})"
    if figure.baseline is None:
        base = f"{NO_BASELINE} ({figure.baseline_name})" if figure.baseline_name else NO_BASELINE
    else:
        base = f"{figure.baseline_name}: {number(figure.baseline, figure.unit)}"
    name = f"{figure.name} [{figure.note}]" if figure.note and figure.value is not None else figure.name
    return (name, ours, base, ratio_text(figure.ratio), figure.readme or "-")


def table(figures: list[Figure]) -> str:
    """A Markdown table, padded so it also reads as plain text in a terminal."""
    # A "|" inside a cell would split it in Markdown.
    rows = [HEADER, *(tuple(cell.replace("|", "\\|") for cell in row(f)) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(cells) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths)) + " |"

    return "\n".join([line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows[1:])])
