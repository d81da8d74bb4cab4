"""What the outside-log scripts share: a fixed-seed sample of labelled lines, written as the logs
bench reads it (Content,EventId)."""
import csv
import random
import sys


def write(lines, path, what, size=2000):
    """Writes a sample of `size` (content, label) pairs, shuffled with seed 7, to `path`."""
    lines = list(lines)
    random.Random(7).shuffle(lines)
    lines = lines[:size]
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['Content', 'EventId'])
        w.writerows(lines)
    print(f"{len(lines)} lines, {len(set(e for _, e in lines))} {what} -> {path}", file=sys.stderr)
