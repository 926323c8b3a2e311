"""A reader of ESC/POS byte streams for tests: it interprets each command the way a printer does
(styles, alignment, raster images, feeds, the cut) and draws the paper's pictures, so a test
checks what a printer would print, not the bytes' spelling. An unknown command is an error."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from PIL import Image

ESC, GS, LF, CR = 0x1B, 0x1D, 0x0A, 0x0D


class UnknownCommand(ValueError):
    pass


@dataclass(frozen=True)
class Style:
    align: str = "left"
    bold: bool = False
    underline: int = 0
    width: int = 1  # character magnification
    height: int = 1
    invert: bool = False
    font: int = 0
    upside_down: bool = False


@dataclass
class Line:
    text: str
    style: Style


@dataclass
class Picture:
    image: Image.Image  # 1 bit: 0 black (ink), 255 white
    style: Style


@dataclass
class Printout:
    items: list[Line | Picture] = field(default_factory=list)
    initialised: bool = False
    code_pages: list[int] = field(default_factory=list)
    fed_lines: int = 0
    cut: bool = False

    @property
    def lines(self) -> list[Line]:
        return [i for i in self.items if isinstance(i, Line)]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def pictures(self) -> list[Picture]:
        return [i for i in self.items if isinstance(i, Picture)]

    def paper(self, dots: int, line_height: int = 30) -> Image.Image:
        """The roll as printed, pictures in place (text lines as blank space): white paper."""
        height = sum(
            i.image.height if isinstance(i, Picture) else line_height * i.style.height
            for i in self.items
        )
        paper = Image.new("L", (dots, height + 2 * line_height), 255)
        y = line_height
        for item in self.items:
            if isinstance(item, Picture):
                free = dots - item.image.width
                x = {"left": 0, "center": free // 2, "right": free}[item.style.align]
                paper.paste(item.image.convert("L"), (x, y))
                y += item.image.height
            else:
                y += line_height * item.style.height
        return paper


def _raster(data: bytes, at: int) -> tuple[Image.Image, int]:
    """GS v 0 m xL xH yL yH d1...dk: width in bytes, height in dots, MSB leftmost, 1 = ink."""
    mode = data[at]
    if mode not in (0, 48):
        raise UnknownCommand(f"GS v 0 with scaling mode {mode} (only normal is emitted)")
    width_bytes = data[at + 1] | data[at + 2] << 8
    height = data[at + 3] | data[at + 4] << 8
    start, end = at + 5, at + 5 + width_bytes * height
    if end > len(data):
        raise UnknownCommand("GS v 0 image runs past the end of the stream")
    image = Image.new("1", (width_bytes * 8, height), 1)
    pixels = image.load()
    assert pixels is not None
    for row in range(height):
        for col in range(width_bytes):
            byte = data[start + row * width_bytes + col]
            for bit in range(8):
                if byte & (0x80 >> bit):
                    pixels[col * 8 + bit, row] = 0
    return image, end


def read(data: bytes) -> Printout:
    out = Printout()
    style = Style()
    text = bytearray()
    i = 0

    def end_line() -> None:
        out.items.append(Line(text.decode("ascii"), style))
        text.clear()

    while i < len(data):
        b = data[i]
        if b == LF:
            end_line()
            i += 1
        elif b == CR:
            i += 1
        elif b == ESC:
            cmd, arg = data[i + 1], data[i + 2] if i + 2 < len(data) else None
            if cmd == 0x40:  # ESC @ initialise
                out.initialised, style, i = True, Style(), i + 2
                continue
            if arg is None:
                raise UnknownCommand(f"ESC {cmd:#x} without its argument")
            if cmd == 0x21:  # ESC ! print mode
                style = replace(
                    style,
                    font=arg & 1,
                    bold=bool(arg & 0x08),
                    height=2 if arg & 0x10 else 1,
                    width=2 if arg & 0x20 else 1,
                    underline=1 if arg & 0x80 else 0,
                )
            elif cmd == 0x45:  # ESC E emphasised
                style = replace(style, bold=bool(arg & 1))
            elif cmd == 0x2D:  # ESC - underline
                style = replace(style, underline=arg % 48 if arg >= 48 else arg)
            elif cmd == 0x4D:  # ESC M font
                style = replace(style, font=arg % 48 if arg >= 48 else arg)
            elif cmd == 0x61:  # ESC a justification
                style = replace(
                    style, align=("left", "center", "right")[arg % 48 if arg >= 48 else arg]
                )
            elif cmd == 0x74:  # ESC t code page
                out.code_pages.append(arg)
            elif cmd == 0x7B:  # ESC { upside down
                style = replace(style, upside_down=bool(arg & 1))
            elif cmd == 0x64:  # ESC d feed n lines
                out.fed_lines += arg
            else:
                raise UnknownCommand(f"ESC {cmd:#x}")
            i += 3
        elif b == GS:
            cmd = data[i + 1]
            if cmd == 0x21:  # GS ! character size
                arg = data[i + 2]
                style = replace(style, width=(arg >> 4) + 1, height=(arg & 0x0F) + 1)
                i += 3
            elif cmd == 0x42:  # GS B reverse (white on black)
                style = replace(style, invert=bool(data[i + 2] & 1))
                i += 3
            elif cmd == 0x62:  # GS b smoothing
                i += 3
            elif cmd == 0x76 and data[i + 2] == 0x30:  # GS v 0 raster bit image
                if text:
                    raise UnknownCommand("raster image in the middle of a text line")
                image, i = _raster(data, i + 3)
                out.items.append(Picture(image, style))
            elif cmd == 0x56:  # GS V cut
                mode = data[i + 2]
                out.cut = True
                i += 4 if mode in (65, 66) else 3
            else:
                raise UnknownCommand(f"GS {cmd:#x}")
        elif b < 0x20 or b > 0x7E:
            raise UnknownCommand(f"byte {b:#x} outside a command")
        else:
            text.append(b)
            i += 1
    if text:
        end_line()
    return out
