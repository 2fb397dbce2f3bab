"""Where a worker's CPU goes, from py-spy's collapsed stacks (``--format raw``).

Each sample is charged to the first docpipe frame on its stack (``workers/`` or
``pipelines/``), counted once per stack, and, separately, to the leaf function, so the table
shows both which of docpipe's steps cost and which library code they spend it in. Idle samples
(threads waiting on sockets, locks or sleep) are left out: they cost no CPU.

    python bench/profile_summary.py /tmp/worker.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IDLE = re.compile(r"(select|poll|epoll|wait|acquire|sleep|recv|read_into|_recv|readinto|"
                  r"accept|futex|get \(queue|_wait_for_tstate_lock)", re.IGNORECASE)
#: py-spy names a file by its path under its package's parent (``pipelines/tokens.py``),
#: or under the package itself for a package without ``__init__`` (``db/repository.py``).
OURS_FILES = {p.relative_to(ROOT / "workers").as_posix() for p in (ROOT / "workers").rglob("*.py")}
OURS_FILES |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines").rglob("*.py")}
OUTSIDE = "(outside docpipe: Celery, kombu, the SDK's HTTP)"
_LINE = re.compile(r":\d+\)$")
_FILE = re.compile(r"\(([^:()]+):\d+\)$")


def is_ours(frame: str) -> bool:
    """True for a frame in docpipe's own code."""
    match = _FILE.search(frame)
    return bool(match) and match.group(1) in OURS_FILES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    steps: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in open(args.profile):
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not frames or IDLE.search(frames[-1]):
            continue
        samples = int(count)
        total += samples
        leaves[frames[-1]] += samples
        # The deepest docpipe frame: the step of ours that the CPU was spent under.
        ours = [f for f in frames if is_ours(f)]
        step = _LINE.sub(")", ours[-1]) if ours else OUTSIDE
        steps[step] += samples
    print(f"{total} busy samples")
    print("\nby docpipe step (deepest docpipe frame):")
    for frame, samples in steps.most_common(args.top):
        print(f"{samples / total:6.1%}  {frame}")
    print("\nby leaf function:")
    for frame, samples in leaves.most_common(args.top):
        print(f"{samples / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
