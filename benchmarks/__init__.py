"""Benchmarks of the hwr pipeline and the study: they measure, they do not assert (docs/performance.md).

Run them with `hwr-bench NAME` or `python -m benchmarks NAME` (benchmarks.cli lists them). The naive-vs-ours
benchmark (`pipeline`) is split by section, each file readable alone:

    cli         the `hwr-bench` entry point: benchmark name -> module
    pipeline    naive pipeline vs ours: options, the generated study, the sections in order
    runner      runs each measured part in a fresh process and collects its figures (Bench, Runner)
    common      errors, CPU time, peak memory, machine facts, number formatting
    flops       multiply-add counts of VGG16's conv base and the head
    floor       section: fp32 matmul reference
    naive       section: PIL + DataLoader every epoch, the whole VGG16 forward every step
    tune_study  section: the real `hwr-study run`, cold and warm
    stages      section: ours in one process without Ray, per stage
    head        section: one 224 px head epoch over existing frozen features
    report      ratios, targets and the printed comparison
"""
