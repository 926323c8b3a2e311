"""Reads back a QR code drawn in a terminal with half blocks, through a real decoder (zxing-cpp)."""

from __future__ import annotations


def decode_terminal_qr(drawing: str) -> list[str]:
    """Rasterise the drawing (a block is lit, a space dark, as a terminal shows it) and return
    every code zxing-cpp reads in it."""
    import zxingcpp
    from PIL import Image

    rows: list[list[bool]] = []  # True: lit (light); each character holds two rows
    for line in drawing.splitlines():
        rows.append([ch in "█▀" for ch in line])
        rows.append([ch in "█▄" for ch in line])
    scale = 6
    image = Image.new("L", (len(rows[0]) * scale, len(rows) * scale))
    for y, row in enumerate(rows):
        for x, lit in enumerate(row):
            if lit:
                image.paste(255, (x * scale, y * scale, (x + 1) * scale, (y + 1) * scale))
    return [str(found.text) for found in zxingcpp.read_barcodes(image)]
