"""`python -m study.analysis REPORT_DIR [--out DIR]`: write a report again from its own tables.

Reads ``trials.csv``, ``epochs.csv`` and the parameters in ``summary.json`` of an earlier report (no Tune
experiment needed) and writes every file again, e.g. after a change to a statistic or a template.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.analysis",
                                 description="Write a study report again from its trials.csv, epochs.csv and "
                                             "summary.json.")
    ap.add_argument("report_dir", help="a folder written by `hwr-study analyze`, e.g. results/factorial-cpu32")
    ap.add_argument("--out", help="write here instead of over REPORT_DIR")
    args = ap.parse_args(argv)
    from study.analysis.report import rewrite_report

    try:
        files = rewrite_report(args.report_dir, args.out)
    except (OSError, ValueError) as e:
        print(f"python -m study.analysis: error: {e}", file=sys.stderr)
        return 2
    print(f"Report: {files['report.html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
