"""`signoff` under tracemalloc, for bench_approvals.py --tracemalloc: where the memory of held calls goes.

Run as `python bench/traced_signoff.py OUT --config FILE serve ...` (after OUT, the same arguments as
`python -m integrations.cli`). Each SIGUSR1 takes a snapshot: the first is kept as the baseline, and every
later one writes, to OUT, the growth since the baseline grouped by file and by line, and the largest
growths with their call stacks. Tracing slows signoff and adds its own memory, so
RSS is measured in a run without it.
"""

import linecache
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = 8
baseline: list[tracemalloc.Snapshot] = []
out_path: list[Path] = []


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot()  # filter_traces is pure Python and takes minutes on millions of traces


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _write(snapshot: tracemalloc.Snapshot, out: Path, count: str) -> None:
    before = baseline[0]
    lines = [f"tracemalloc growth since the baseline snapshot ({count})", ""]
    total = sum(s.size_diff for s in snapshot.compare_to(before, "filename"))
    traced = tracemalloc.get_traced_memory()[0]
    lines.append(f"total traced growth: {total / 2**20:.1f} MiB (traced now {traced / 2**20:.1f} MiB)")
    lines += ["", "by file: growth MiB, blocks growth"]
    for stat in snapshot.compare_to(before, "filename")[:30]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size_diff / 2**20:8.2f}  {stat.count_diff:+8d}  {_short(frame.filename)}")
    lines += ["", "by line: growth KiB, blocks growth"]
    for stat in snapshot.compare_to(before, "lineno")[:60]:
        frame = stat.traceback[0]
        text = linecache.getline(frame.filename, frame.lineno).strip()[:90]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        lines.append(f"{stat.size_diff / 1024:9.0f}  {stat.count_diff:+8d}  {where}  {text}")
    lines += ["", "largest growths with their stacks (innermost last)"]
    for stat in snapshot.compare_to(before, "traceback")[:25]:
        lines.append(f"\n{stat.size_diff / 1024:9.0f} KiB  {stat.count_diff:+8d} blocks")
        lines += ["    " + line.strip() for line in stat.traceback.format(most_recent_first=False)[-2 * FRAMES :]]
    out.write_text("\n".join(lines) + "\n")


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    snapshot = _snapshot()
    if not baseline:
        baseline.append(snapshot)
        return
    _write(snapshot, out_path[0], f"snapshot {len(baseline)}")
    baseline.append(snapshot)  # only [0] is compared against


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    out_path.append(Path(sys.argv[1]))
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, _on_signal)
    from integrations.cli import main

    sys.exit(main(sys.argv[2:]))
