"""The printed result: ratios, extrapolation, FLOP/s and targets derived from the sections' raw figures
(`derive`), and the text report (`report`): naive pipeline vs ours, per stage and for the whole study."""

from __future__ import annotations

from typing import Any

from benchmarks.common import add, fmt, mean
from benchmarks.flops import conv_macs, head_macs


def derive(res: dict[str, Any]) -> None:
    """Ratios, extrapolation, FLOP/s and target checks from the raw figures (added in place)."""
    s = res["settings"]
    size, trials = s["image_size"], s["trials"]
    flops_img = 2 * conv_macs(size)
    d: dict[str, Any] = {"conv_gmac_per_image": conv_macs(size) / 1e9,
                         "conv_gmac_per_image_224": conv_macs(224) / 1e9}
    floor = max([res[k]["gflops"] for k in ("floor", "floor_end") if k in res], default=None)
    d["matmul_gflops"] = floor
    naive = res.get("naive")
    if naive:
        per_trial = mean([t["total_s"] for t in naive["trials"]])
        d["naive_per_trial_s"] = per_trial
        d["naive_study_s"] = naive["startup_s"] + trials * per_trial
        d["naive_study_extrapolated"] = len(naive["trials"]) < trials
        d["naive_study_cpu_s"] = naive["startup_cpu_s"] + trials * mean([t["cpu_s"] for t in naive["trials"]])
        n_tr, n_val, n_test = naive["splits"]
        forwards = trials * (s["epochs"] * (n_tr + n_val) + n_test)
        d["naive_study_conv_forwards"] = forwards
        if floor:
            d["naive_study_floor_s"] = forwards * flops_img / (floor * 1e9)
    for which in ("study_cold", "study_warm"):
        if which in res and naive:
            d[f"ratio_{which}"] = d["naive_study_s"] / res[which]["total_from_spawn_s"]
    cold = res.get("study_cold")
    if cold and cold["features_per_key"] and cold["features_total_s"]:
        computed = [k for k in cold["features_per_key"] if not k["cache_hit"]]
        d["feature_sets"] = len(cold["features_per_key"])
        if len(computed) == len(cold["features_per_key"]):  # all computed in this run: a clean throughput
            n_img = sum(k["images"] for k in computed)
            d["features_gflops"] = n_img * flops_img / cold["features_total_s"] / 1e9
            d["features_s_per_set"] = cold["features_total_s"] / len(computed)
            if floor:
                d["features_floor_s_per_set"] = computed[0]["images"] * flops_img / (floor * 1e9)
    head = res.get("head")
    if head:
        hs = head["image_size"]
        d["head_features_gflops"] = head["feature_images"] * 2 * conv_macs(hs) / head["features_s"] / 1e9
        d["head_features_s_per_image"] = head["features_s"] / head["feature_images"]
        d["head_all_features_s_estimate"] = 3410 / 2273 * head["train_images"] * d["head_features_s_per_image"]
        d["head_epoch_gflop"] = head["train_images"] * 2 * head_macs(hs)["train_step"] / 1e9
        if floor:
            d["head_epoch_floor_s"] = d["head_epoch_gflop"] / floor
            d["head_features_vs_matmul"] = d["head_features_gflops"] / floor
    if floor and "features_gflops" in d:
        d["features_vs_matmul"] = d["features_gflops"] / floor

    targets = {}
    if "ratio_study_cold" in d:
        targets["cold >= 10x naive"] = {"value": d["ratio_study_cold"], "met": d["ratio_study_cold"] >= 10}
    if "ratio_study_warm" in d:
        targets["warm >= 50x naive"] = {"value": d["ratio_study_warm"], "met": d["ratio_study_warm"] >= 50}
    warm = res.get("study_warm")
    if warm and "first_step_from_spawn_s" in warm:
        v = warm["first_step_from_spawn_s"]
        targets["warm first step < 5 s (from process start)"] = {"value": v, "met": v < 5}
        v = warm["first_step_from_run_study_s"]
        targets["warm first step < 5 s (from run_study call)"] = {"value": v, "met": v < 5}
    if head and head["image_size"] == 224:
        v = head["epochs"][0]["s"]
        targets["224 px head epoch <= 5 s"] = {"value": v, "met": v <= 5}
    d["targets"] = targets
    res["derived"] = d


def report(res: dict[str, Any]) -> str:
    d, s, m = res["derived"], res["settings"], res["machine"]
    lines = [
        "hwr-study bench: naive pipeline vs ours",
        f"machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, {fmt(m['mem_gib'], 'GiB', 0)}, python {m['python']}"
        + (f", torch {res['floor']['torch']} ({res['floor']['threads']} threads)" if "floor" in res else ""),
        f"data: {res['data_dir']}{' (synthetic, --quick)' if res['quick'] else ''}",
        f"config: {s['image_size']} px, weights={s['weights']}"
        + (f" (base_seed {s['base_seed']})" if s.get("base_seed") is not None else "")
        + f", trainable_from=none, {s['optimizer']} lr={s['lr']}, "
        f"batch {s['batch_size']}, {s['epochs']} epochs; grid {s['search']} = {s['trials']} trials",
    ]
    if s.get("worker_env"):
        lines.append(f"extra environment of the measured processes: {' '.join(s['worker_env'])}")
    if "floor" in res:
        f = res["floor"]
        again = f" and {res['floor_end']['gflops']:.1f} at the end" if "floor_end" in res else ""
        lines.append(f"floor: fp32 matmul {f['n']}x{f['n']}: {f['gflops']:.1f} GFLOP/s at the start{again} "
                     f"({f['threads']} threads; reference = {d['matmul_gflops']:.1f}); VGG16 conv base = "
                     f"{d['conv_gmac_per_image_224']:.2f} GMAC = {2 * d['conv_gmac_per_image_224']:.1f} GFLOP per "
                     f"224 px image ({d['conv_gmac_per_image']:.3f} GMAC at {s['image_size']} px)")
        if f.get("cuda"):
            lines.append(f"       GPU {f.get('cuda_device')}: fp32 {f.get('cuda_float32_tflops', 0):.1f} TFLOP/s, "
                         f"bf16 {f.get('cuda_bfloat16_tflops', 0):.1f} TFLOP/s")
    naive, stages = res.get("naive"), res.get("stages")
    cold, warm = res.get("study_cold"), res.get("study_warm")
    if naive or stages:
        lines += ["", "Per stage, one trial (both in one process each, no Ray; ours = load_data + fit):",
                  f"  {'stage':<30}{'naive':>16}{'ours':>16}{'naive/ours':>12}"]

        def row(name, a, b, note=""):
            ratio = f"{a / b:.0f}x" if a is not None and b else "-"
            lines.append(f"  {name:<30}{fmt(a):>16}{fmt(b, digits=2):>16}{ratio:>12}  {note}".rstrip())

        nt = naive["trials"][0] if naive else None
        dp = naive.get("decode_pass") if naive else None
        if dp:
            lines.append(f"  {'decode (train+val, 1 epoch)':<30}{fmt(dp['s']):>16}{'':>16}{'':>12}  "
                         f"naive: {dp['images']} PNGs, DataLoader with {naive['num_workers']} workers, every epoch")
        if cold:
            lines.append(f"  {'decode (all, once)':<30}{'':>16}{fmt(cold['decode_s'], digits=2):>16}{'':>12}  "
                         f"ours cold: every image once, into the array cache")
        if stages:
            label = "decode (cache read)" if stages["decode_cache_hit"] else "decode (all, once)"
            lines.append(f"  {label:<30}{'':>16}{fmt(stages['decode_s'], digits=2):>16}{'':>12}  "
                         f"ours, stages run ({'warm: array cache hit' if stages['decode_cache_hit'] else 'cold'})")
        if "features_s_per_set" in d:
            lines.append(f"  {'frozen features (per set)':<30}{'every step':>16}"
                         f"{fmt(d['features_s_per_set'], digits=1):>16}{'':>12}  ours cold: all images once per "
                         f"(weights, normalization{'' if s.get('base_seed') is not None else ', seed'}); "
                         f"{d['feature_sets']} sets in "
                         f"{cold['features_total_s']:.1f} s, as the pipeline schedules them")
        if stages:
            hit = stages["features_cache_hit"]
            label = "frozen features (cache read)" if hit else "frozen features (one set)"
            lines.append(f"  {label:<30}{'':>16}{fmt(stages['features_s'], digits=2):>16}"
                         f"{'':>12}  ours, stages run ({'warm: feature cache hit' if hit else 'cold: computed'})")
        row("train epoch (mean)", mean(nt["train_epoch_s"]) if nt else None,
            mean(stages["train_epoch_s"]) if stages else None)
        row("eval on val (mean)", mean(nt["eval_val_s"]) if nt else None,
            mean(stages["eval_val_s"]) if stages else None)
        row("test eval", nt["test_s"] if nt else None, stages["test_s"] if stages else None)
        row("whole trial", nt["total_s"] if nt else None, stages["trial_s"] if stages else None,
            "ours: load_data + fit, warm caches")
        if nt and stages:
            diffs = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(nt["history"], stages["history"])]
            lines.append(f"  same numbers: |train_loss naive - ours| per epoch <= {max(diffs):.2e}; val_acc "
                         f"naive {[round(h['val_acc'], 4) for h in nt['history']]} ours "
                         f"{[round(h['val_acc'], 4) for h in stages['history']]}")
    if naive or cold or warm:
        lines += ["", f"The study ({s['trials']} trials, from process start to run_study's return):"]
        if naive:
            how = (f"extrapolated: {len(naive['trials'])} trial(s) run, sequentially; startup "
                   f"{naive['startup_s']:.1f} s + {s['trials']} x {d['naive_per_trial_s']:.1f} s per trial"
                   if d["naive_study_extrapolated"] else
                   f"all {s['trials']} trials run, sequentially")
            lines.append(f"  naive       {fmt(d['naive_study_s']):>10}   ({how})")
            if "naive_study_floor_s" in d:
                lines.append(f"              floor of its conv forwards alone at the matmul rate: "
                             f"{fmt(d['naive_study_floor_s'])} ({d['naive_study_conv_forwards']} image forwards)")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if not r:
                continue
            ratio = d.get(f"ratio_study_{name.split()[1]}")
            lines.append(
                f"  {name:<11} {fmt(r['total_from_spawn_s']):>10}   "
                + (f"naive/ours = {ratio:.1f}x; " if ratio else "")
                + f"imports {r['import_s']:.1f} s, ray.init {r['ray_init_s']:.1f} s, decode {r['decode_s']:.1f} s, "
                f"features {r['features_total_s']:.1f} s, run_study {r['run_study_s']:.1f} s; "
                f"{r['cpu_per_trial']:g} CPU per trial, mean epoch_time_s {fmt(r['epoch_time_s_mean'], digits=2)}")
        lines.append("  time to first training step (from process start | from run_study call):")
        if naive:
            lines.append(f"    naive      {fmt(naive['first_step_from_spawn_s'])}")
        if stages:
            lines.append(f"    ours, one process without Ray, warm: {fmt(stages['first_step_from_spawn_s'])}")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if r and "first_step_from_spawn_s" in r:
                lines.append(f"    {name:<10} {fmt(r['first_step_from_spawn_s'])} | "
                             f"{fmt(r['first_step_from_run_study_s'])}")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if not r:
                continue
            marks = [("imports done", r.get("import_s")),
                     ("ray.init done", add(r.get("init_ray_start_from_spawn_s"), r.get("ray_init_s"))),
                     ("data loaded", add(r.get("load_data_start_from_spawn_s"), r.get("decode_s"))),
                     ("features ready", r.get("features_done_from_spawn_s")),
                     ("first trial started", r.get("first_trial_start_from_spawn_s")),
                     ("first step <=", r.get("first_step_from_spawn_s")),
                     ("first epoch reported", r.get("first_result_from_spawn_s")),
                     ("run_study returned", r.get("total_from_spawn_s"))]
            lines.append(f"  {name} timeline, s from process start: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in marks if v is not None))
    if "features_gflops" in d:
        lines += ["", f"Frozen features at {s['image_size']} px (study cold, all sets together): "
                  f"{d['features_gflops']:.1f} GFLOP/s achieved"
                  + (f" = {100 * d['features_vs_matmul']:.0f}% of the matmul reference; floor "
                     f"{d['features_floor_s_per_set']:.1f} s per set" if "features_vs_matmul" in d else "")]
    head = res.get("head")
    if head:
        lines += ["", f"Head training at {head['image_size']} px, frozen base, features existing "
                  f"({head['train_images']} training images, batch {s['batch_size']}):"]
        lines.append(f"  one epoch: {head['epochs'][0]['s']:.2f} s (second epoch {head['epochs'][1]['s']:.2f} s); "
                     f"{d['head_epoch_gflop']:.0f} GFLOP of matmuls"
                     + (f", floor {d['head_epoch_floor_s']:.2f} s at the matmul rate" if "head_epoch_floor_s" in d
                        else ""))
        tiled = (f"features of {head['feature_images']} real training images computed, repeated to "
                 f"{head['train_images']} rows (the head's cost does not depend on the values)"
                 if head["tiled"] else f"features of all {head['train_images']} training images computed")
        lines.append(f"  {tiled}")
        lines.append(f"  frozen features: {head['features_s']:.1f} s for {head['feature_images']} images = "
                     f"{d['head_features_gflops']:.1f} GFLOP/s"
                     + (f" = {100 * d['head_features_vs_matmul']:.0f}% of the matmul reference"
                        if "head_features_vs_matmul" in d else "")
                     + f"; all 3410 images would take ~{d['head_all_features_s_estimate']:.0f} s")
    mem = [(k, res[k]) for k in ("naive", "study_cold", "study_warm", "stages", "head") if k in res]
    if mem:
        lines += ["", "Peak memory, MiB (getrusage maxrss of the process | of its largest reaped child | the process's "
                  "own VmHWM since exec); RSS counts pages shared with forked children, so these do not add up:"]
        for k, r in mem:
            extra = (f", cuda max allocated {r['cuda_max_allocated_mib']:.0f} MiB"
                     if "cuda_max_allocated_mib" in r else "")
            lines.append(f"  {k:<11} {r['maxrss_self_mib']:8.0f} | {r['maxrss_children_mib']:8.0f} | "
                         f"{fmt(r.get('vmhwm_self_mib'), '', 0):>6}{extra}")
    if d["targets"]:
        lines += ["", "Targets:"]
        for name, t in d["targets"].items():
            lines.append(f"  {'met ' if t['met'] else 'MISS'}  {name}: {t['value']:.2f}")
    loads = [(k, r["loadavg_before"], r["loadavg_after"]) for k, r in res.items()
             if isinstance(r, dict) and "loadavg_before" in r]
    if loads:
        lines += ["", "1-min load average before/after each part (other work on the machine skews times): "
                  + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, a, b in loads)]
    lines.append(f"benchmark wall time: {res['bench_wall_s']:.0f} s")
    return "\n".join(lines)
