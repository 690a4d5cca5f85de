"""Joins minima's benchmark CSV with the PyTorch reference CSV and prints a
Markdown table of ratios (ours / PyTorch) per configuration and column.

    python3 python/compare_bench.py ours.csv torch.csv [column ...]
"""
import csv
import statistics
import sys


def rows(path):
    with open(path) as f:
        return {(r["model"], r["layers"], r["heads"], r["hidden"]): r for r in csv.DictReader(f)}


def main():
    ours, theirs = rows(sys.argv[1]), rows(sys.argv[2])
    shared = [c for c in next(iter(ours.values())) if c.endswith("_ms") and c in next(iter(theirs.values()))]
    columns = sys.argv[3:] or shared
    head = ["model", "layers", "heads", "hidden", "params"]
    for c in columns:
        head += [f"ours {c}", f"torch {c}", "ratio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ratios = {c: [] for c in columns}
    for key, r in ours.items():
        if key not in theirs:
            continue
        t = theirs[key]
        cells = list(key) + [r["params"]]
        for c in columns:
            ratio = float(r[c]) / float(t[c])
            ratios[c].append(ratio)
            cells += [r[c], t[c], f"{ratio:.2f}"]
        print("| " + " | ".join(cells) + " |")
    for c in columns:
        values = ratios[c]
        print(f"\n{c}: median ratio {statistics.median(values):.2f}, "
              f"max {max(values):.2f}, min {min(values):.2f}, "
              f"at most 1.0 on {sum(v <= 1.0 for v in values)} of {len(values)}")


if __name__ == "__main__":
    main()
