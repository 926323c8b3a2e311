"""Charts as SVG, drawn by pygal on the server: no script or font from a CDN, readable on a
projector (big type, high contrast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pygal
from pygal.style import Style

from services.reporting.live import LiveView

PROJECTOR = Style(
    background="white",
    plot_background="white",
    foreground="#111111",
    foreground_strong="#000000",
    foreground_subtle="#555555",
    colors=("#0b5394", "#cc0000", "#38761d"),
    font_family="sans-serif",
    title_font_size=28,
    label_font_size=20,
    major_label_font_size=20,
    value_font_size=22,
    legend_font_size=20,
)


def waiting_chart(view: LiveView) -> bytes:
    chart = pygal.HorizontalBar(
        style=PROJECTOR,
        js=[],  # pygal links its tooltip script from a CDN by default
        width=900,
        height=max(240, 70 * len(view.lines) + 120),
        show_legend=False,
        print_values=True,
        title="Menunggu per layanan / Waiting per service",
        disable_xml_declaration=False,
    )
    top = max([line.waiting for line in view.lines] + [1])
    chart.y_labels = list(range(0, top + 1, max(1, top // 8)))  # whole people, not 0.2
    chart.x_labels = [line.service for line in view.lines]
    chart.add("menunggu", [line.waiting for line in view.lines])
    svg: bytes = chart.render()
    return svg


def bars(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    horizontal: bool = False,
    width: int = 1100,
    height: int | None = None,
) -> str:
    """A bar chart as inline SVG for the history pages: no script from anywhere (`js=[]`), the
    projector style, one bar group per label and one colour per series (with a legend)."""
    kind = pygal.HorizontalBar if horizontal else pygal.Bar
    chart = kind(
        style=PROJECTOR,
        js=[],
        width=width,
        height=height or (max(300, 50 * len(labels) + 160) if horizontal else 480),
        title=title,
        show_legend=len(series) > 1,
        legend_at_bottom=True,
        print_values=len(labels) * len(series) <= 24,
        x_label_rotation=0 if horizontal or len(labels) <= 8 else 40,
        disable_xml_declaration=True,
        no_data_text="Belum ada data / No data",
    )
    # pygal draws horizontal bars bottom up: reverse them so the chart reads like the table.
    order = (lambda xs: list(reversed(xs))) if horizontal else list
    chart.x_labels = order(list(labels))
    for name, values in series.items():
        chart.add(name, order(list(values)))
    svg: str = chart.render(is_unicode=True)
    return svg
