"""Statistics and report of the SELU-vs-ReLU convergence study: pandas tables in, numbers and pages out.

No Ray and no torch here (a test checks it): the package reads two tidy tables (see
``study.analysis.tables``; the per-evaluation one at step resolution, ``study.analysis.curves``) and needs only numpy, pandas, scipy, matplotlib and Jinja2, so a statistic can
be changed, tested and re-run on a saved ``trials.csv``/``steps.csv`` (or ``epochs.csv``) without the Tune
layer.  docs/analysis.md argues the measures and the primary one (``val_error_area``).
This file imports nothing: import what you need from the modules, e.g.
``from study.analysis.params import AnalysisParams`` (which costs no scipy import).

The paper's claim is that ``params.faster_arm`` (SELU, no input normalization) converges faster than
``params.slower_arm`` (ReLU, per-image normalization).  Modules, in the order the data flows:

    params       AnalysisParams (the `analysis:` config section) and the measures' names
    curves       the per-evaluation table: fractional epochs, steps, one record per (trial, step)
    tables       the input tables, config columns, arms
    speed        per-trial speed measures: accuracy ladder, plateau, error / loss / TS-NLL areas
    convergence  per-trial measures: the speed ones, epochs to target (censored), loss area, fixed epochs
    intervals    t / bootstrap intervals, Wilcoxon, Kaplan-Meier, RMST, log-rank (scipy.stats)
    pairing      what a pair of trials shares (batch order, split, initial weights), in words
    comparison   pairing the two arms by seed, paired differences per measure, RMST per target
    panel        the measure panel: every speed measure side by side, where they disagree, calibration
    factorial    the 2x2 split into activation, normalization and interaction
    describe     design, test accuracy per arm, mean curves per epoch
    verdict      the verdict rule and its paragraph
    specifications  what a specification is (the choices besides arm and seed), one analysis each
    multiverse   across specifications: the joint sign-flip permutation, what the verdicts depend on
    summary      all of it as one JSON-ready dict (summary.json)
    spec_curve   the specification-curve figure; spec_report what the report shows of the specifications
    figures      matplotlib figures
    report       trials.csv, epochs.csv, summary.json, figures and the Jinja2-rendered report.md/html
"""
