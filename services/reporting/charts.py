"""Charts as SVG, drawn by pygal on the server: no script or font from a CDN, readable on a
projector (big type, high contrast)."""

from __future__ import annotations

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
