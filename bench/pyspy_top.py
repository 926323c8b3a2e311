"""Top frames of a py-spy profile (`py-spy record --format raw`): own and inclusive share.

    .venv/bin/python bench/pyspy_top.py /tmp/prof/store.txt [--top 15] [--match giliran/]

Own time: samples whose innermost frame is the function. Inclusive: samples with the function
anywhere in the stack (counted once per sample). Idle samples (py-spy's --idle is off, so a
process waiting in epoll is mostly not sampled) are not in the file.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` → `func (pkg/mod.py)`: lines merged."""
    found = FRAME.match(frame)
    if found is None:
        return frame
    path = found["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/wt-perf/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['func']} ({path})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--match", default="", help="inclusive table: only frames whose file contains this"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # | head is fine
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        frames = [short(f) for f in stack.split(";")]
        # py-spy puts the thread name first: "process 123:..." / "thread (0x..)"; skip non-frames.
        frames = [f for f in frames if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{args.profile}: {total} samples")
    print("  own time")
    for frame, n in own.most_common(args.top):
        print(f"    {100 * n / total:5.1f}%  {frame}")
    print("  inclusive" + (f" (frames in {args.match})" if args.match else ""))
    shown = [(f, n) for f, n in inclusive.most_common() if args.match in f]
    for frame, n in shown[: args.top]:
        print(f"    {100 * n / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
