"""`hwr-study` (also `python -m study`): run a study on Ray Tune, search learning rates, analyze results.

Every user mistake ends as one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from hwr import __version__
from hwr.errors import UserError, os_error


def _run(args: argparse.Namespace) -> None:
    from study.config import load_study
    from study.run import read_lr_file, run_study
    from study.state import TrialsErrored

    study = load_study(args.config, args.set)
    lrs = None
    if args.lr_from:  # each arm at its own tuned lr: the lr axis, if any, gives way
        study = dataclasses.replace(study, search={k: v for k, v in study.search.items() if k != "train.lr"})
        lrs = read_lr_file(args.lr_from, study)
    try:
        path = run_study(study, fresh=args.fresh, lr_by_arm=lrs)
    except TrialsErrored as e:  # the report still shows what the other trials did; the exit code says it failed
        if not args.no_analyze:
            analyze(e.path, None)
        raise
    if not args.no_analyze:
        analyze(path, None)


def _lr_search(args: argparse.Namespace) -> None:
    from study.config import load_study
    from study.lr_search import lr_search

    lr_search(load_study(args.config, args.set), fresh=args.fresh)


def _plan(args: argparse.Namespace) -> None:
    from study.config import load_study
    from study.plan import make_plan, render

    study = load_study(args.config, args.set)
    print(render(study, make_plan(study, args.cores)))


def analyze(path: str, out: str | None) -> Path:
    """Tables, statistics, figures and report of the experiment at `path` (from its storage alone)."""
    from hwr.config import ConfigError
    from hwr.files import unwritable
    from study.analysis.params import AnalysisParams
    from study.analysis.report import write_report
    from study.experiment import load_tables, progress, read_adaptive, read_study_doc
    from study.state import StudyError, resumable, shown_path
    from study.storage import absolute, name_of

    path = absolute(path)
    doc = read_study_doc(path)
    params = AnalysisParams.from_dict(doc.get("analysis") or {})
    name = doc.get("name") or name_of(path)
    target = Path(out) if out else Path((doc.get("run") or {}).get("results_dir", "results")) / name
    if why := unwritable(target):
        raise ConfigError(f"The report folder {target} cannot be written: {why}.")
    resumable(path)  # a damaged state file or a missing trial folder: one sentence naming it
    trials, epochs = load_tables(path)
    adaptive = read_adaptive(path)
    done = progress(doc, trials, adaptive)
    try:
        write_report(target, epochs, trials, params, name=name, source=shown_path(path), adaptive=adaptive,
                     progress=done)
    except OSError as e:  # a full disk: write_report leaves the previous report as it was
        raise StudyError(f"Could not write the report in {target} ({e.strerror or e}); "
                         "the report there before, if any, is unchanged.") from None
    partial = "" if done["complete"] else f"; partial: {done['ended']} of {done['planned']} planned trials ended"
    print(f"Report: {target / 'report.html'} ({len(trials)} trials{partial})")
    return target


def _analyze(args: argparse.Namespace) -> None:
    analyze(args.experiment, args.out)


def _status(args: argparse.Namespace) -> None:
    from hwr.config import ConfigError
    from study.status import read_status, render, watch
    from study.storage import absolute

    path = absolute(args.experiment)
    if args.watch is None:
        print(render(read_status(path)))
    elif args.watch <= 0:
        raise ConfigError(f"--watch takes seconds > 0, got {args.watch:g}.")
    else:
        watch(path, args.watch)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hwr-study", description="The SELU-vs-ReLU convergence study on Ray Tune.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run or resume a study's grid, then analyze it")
    r.add_argument("config", help="study YAML, e.g. configs/quick.yaml")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.epochs=4 or search.train.seed=[0,1]")
    r.add_argument("--fresh", action="store_true", help="delete the existing experiment and start over")
    r.add_argument("--lr-from", help="best-lr file from `hwr-study lr-search`: each arm at its own lr")
    r.add_argument("--no-analyze", action="store_true", help="skip the report at the end")
    r.set_defaults(func=_run)

    s = sub.add_parser("lr-search", help="Optuna search of the best lr per arm")
    s.add_argument("config", help="study YAML with an optuna: section, e.g. configs/lr-search.yaml")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. optuna.trials_per_arm=4 or train.epochs=3 (as for `run`)")
    s.add_argument("--fresh", action="store_true",
                   help="delete the existing per-arm searches and start over (default: resume them)")
    s.set_defaults(func=_lr_search)

    p = sub.add_parser("plan", help="the specifications, arms, seeds, trial count and estimated CPU time of a study, "
                                    "without running anything")
    p.add_argument("config", help="study YAML, e.g. configs/multiverse.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, as for `run`")
    p.add_argument("--cores", type=int, help="cores to estimate for (default: this machine's)")
    p.set_defaults(func=_plan)

    a = sub.add_parser("analyze", help="tables, statistics, figures and report of an experiment")
    a.add_argument("experiment", help="experiment folder (storage_path/name) or URI")
    a.add_argument("--out", help="output folder (default results/<name>)")
    a.set_defaults(func=_analyze)

    w = sub.add_parser("status", help="trials done/running/pending/errored, time left and the verdict so far")
    w.add_argument("experiment", help="experiment folder (storage_path/name) or URI; the driver may run or not")
    w.add_argument("--watch", type=float, nargs="?", const=10.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until the study ends or its driver stops")
    w.set_defaults(func=_status)
    return ap


RESUME_HINT = ("interrupted: run the same command again to resume (finished trials are kept, unfinished ones "
               "continue from their last checkpoint).")


def _main_plan(args: argparse.Namespace) -> int:
    """`plan` imports neither Ray nor torch."""
    try:
        args.func(args)
    except (UserError, OSError) as e:
        print(f"hwr-study: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "plan":
        return _main_plan(args)

    from ray.exceptions import AuthenticationError

    from study.state import TrialsErrored

    try:
        args.func(args)
    except TrialsErrored as e:  # not a user mistake: the study ran, and some of its trials failed
        print(f"hwr-study: error: {e}", file=sys.stderr)
        return 1
    except UserError as e:  # ConfigError, StudyError, StateError, DataError, TrainError...
        print(f"hwr-study: error: {e}", file=sys.stderr)
        return 2
    except AuthenticationError:  # RAY_ADDRESS names a cluster with token authentication (README)
        print(f"hwr-study: error: the Ray cluster at {os.environ.get('RAY_ADDRESS')} wants its auth token and this "
              "shell has none: copy the cluster's ~/.ray/auth_token here, or set RAY_AUTH_TOKEN.", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder that cannot be written
        print(f"hwr-study: error: {os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: Tune has saved the experiment's state
        import ray

        ray.shutdown()  # stops the workers' log lines first, so that the hint is the last line
        print(f"hwr-study: {RESUME_HINT if args.command in ('run', 'lr-search') else 'interrupted.'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
