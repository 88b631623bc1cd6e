"""`python -m study.analysis REPORT_DIR [--out DIR]`: write a report again from its own tables.

Reads ``trials.csv``, ``steps.csv`` (``epochs.csv`` in an older report) and the parameters in ``summary.json`` of an earlier report (no Tune
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
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an analysis parameter over the one in summary.json (YAML value), e.g. "
                         "--set primary_metric=val_error_area --set min_seeds=6; repeatable")
    args = ap.parse_args(argv)
    from study.analysis.report import rewrite_report

    try:
        files = rewrite_report(args.report_dir, args.out, _overrides(args.set))
    except (OSError, ValueError, yaml_error()) as e:
        print(f"python -m study.analysis: error: {e}", file=sys.stderr)
        return 2
    print(f"Report: {files['report.html']}")
    return 0


def yaml_error() -> type:
    import yaml

    return yaml.YAMLError


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not KEY=VALUE")
        out[key.strip().removeprefix("analysis.")] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
