"""The fault suite in one run, and its table in docs/reliability.md.

    python -m benchmarks.faults            # or: hwr-bench faults   (about 6 minutes on 2 idle cores)
    python -m benchmarks.faults --no-write # print the table only

Runs, with pytest, the suites that kill, corrupt and fill (tests/test_faults.py, tests/test_object_storage.py,
tests/test_nodes.py, tests/test_damaged_files.py, tests/test_bad_input.py) and the older tests that belong to
the same catalogue (EXISTING). Each case states
its fault, what happened and what was lost through pytest's `record_property` (the older ones through
EXISTING); this reads them back from pytest's JUnit XML and writes one table, from this one run, into
docs/reliability.md between its markers. The same tests run in `make test`: this only collects them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
SUITES = ("tests/test_faults.py", "tests/test_object_storage.py", "tests/test_nodes.py", "tests/test_damaged_files.py",
          "tests/test_bad_input.py")
# Tests written before this suite that hold cases of the same catalogue: test id -> (fault, outcome, lost).
EXISTING = {
    "tests/test_train.py::test_nan_loss_ends_the_run_as_diverged": (
        "diverged training in `hwr train` (nan loss)", "the run ends, marked diverged; no crash", "nothing"),
    "tests/test_study.py::test_a_trial_that_diverges_ends_as_diverged_not_as_an_error": (
        "diverged training in a study (lr 1e12: nan/inf loss)",
        "the trial ends TERMINATED and marked diverged; the analysis keeps it, censored", "nothing"),
    "tests/test_analysis.py::test_diverged_trial_kept_censored_and_flagged": (
        "a diverged trial in the analysis", "kept, censored in the convergence measures, flagged in the report",
        "nothing"),
    "tests/test_study.py::test_gpus_asked_on_a_cpu_cluster_fail_at_once": (
        "GPUs requested (resources.gpu) on a Ray cluster without GPUs",
        "StudyError at once, before any trial (`hwr-study run`: exit 2, 'resources.gpu is 0.25 but this Ray "
        "cluster has no GPUs; set resources.gpu=0 to run on CPUs.')", "nothing"),
    "tests/test_study.py::test_another_config_on_the_same_experiment_is_refused": (
        "another config run under an existing experiment's name",
        "StudyError ('… holds the experiment of another config; pass --fresh to start over or choose another "
        "name.'; exit 2 from `hwr-study run`)", "nothing"),
}
SECTIONS = (("tests/test_faults.py", "Killed and interrupted processes"),
            ("tests/test_object_storage.py", "A study in object storage (S3)"),
            ("tests/test_nodes.py", "A cluster node that dies, and a named base on a node without it"),
            ("tests/test_damaged_files.py", "Damaged files and a full disk"),
            ("tests/test_bad_input.py", "Bad input (one sentence naming it, exit 2)"),
            ("EXISTING", "Covered by earlier tests"))


def run_suite(xml: Path, extra: list[str]) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           "-o", "junit_family=xunit2", *SUITES, *EXISTING, *extra]
    t0 = time.monotonic()
    code = subprocess.call(cmd, cwd=ROOT)
    return code, time.monotonic() - t0


def read_rows(xml: Path) -> list[dict]:
    """One row per recorded (fault, outcome, lost) triple, or per EXISTING test, with its test's status."""
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        file = case.get("classname", "").replace(".", "/") + ".py"
        test_id = f"{file}::{case.get('name')}"
        status = "skipped" if case.find("skipped") is not None else (
            "FAILED" if case.find("failure") is not None or case.find("error") is not None else "passed")
        props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
        triples = [dict(zip(("fault", "outcome", "lost"), (v for _, v in props[i:i + 3])))
                   for i in range(0, len(props) - 2, 3) if [n for n, _ in props[i:i + 3]] == ["fault", "outcome", "lost"]]
        base = test_id.split("[")[0]
        if not triples and base in EXISTING:
            triples = [dict(zip(("fault", "outcome", "lost"), EXISTING[base]))]
            file = "EXISTING"
        if not triples:  # a case that failed before recording what happened
            triples = [{"fault": test_id, "outcome": "(not recorded)", "lost": "?"}]
        for t in triples:
            rows.append({**t, "file": file, "test": test_id, "status": status, "time": float(case.get("time", 0))})
    return rows


def table(rows: list[dict]) -> str:
    out = []
    n = 0
    for file, title in SECTIONS:
        part = [r for r in rows if r["file"] == file]
        if not part:
            continue
        out += [f"### {title}", "", "| # | fault | outcome | lost | test |", "|---|---|---|---|---|"]
        for r in part:
            n += 1
            cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            test = r["test"].split("::", 1)[1] + ("" if r["status"] == "passed" else f" **{r['status']}**")
            out.append(f"| {n} | {cell(r['fault'])} | {cell(r['outcome'])} | {cell(r['lost'])} | `{cell(test)}` |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwr-bench faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-write", action="store_true", help=f"print the table; leave {DOC.relative_to(ROOT)} alone")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments, e.g. -x")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "faults.xml"
        code, seconds = run_suite(xml, args.pytest_args)
        rows = read_rows(xml)
    from benchmarks.common import machine_info

    m = machine_info()
    passed = sum(r["status"] == "passed" for r in {r["test"]: r for r in rows}.values())
    tests = len({r["test"] for r in rows})
    head = (f"One run of `python -m benchmarks.faults`: {tests} tests, {passed} passed, {len(rows)} cases, "
            f"{seconds / 60:.1f} min on {m['cpu_model']} ({m['cpus_usable']} of {m['cpus']} CPUs usable), "
            f"Python {m['python']}.\n")
    text = head + "\n" + table(rows)
    print(text)
    if not args.no_write:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
        print(f"written into {DOC.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
