"""The goals of ``bench_core.py`` and its text report, from the report dict (the JSON layout)."""

from __future__ import annotations

GOALS = {"train_frac_paper": 0.60, "train_frac_small": 0.40, "predict_ms": 20.0, "batch_vs_dowhy": 1000.0}
#: ACTIVA training tasks/s of the full run of 2026-11-29 (benchmarks/README.md), the reference of
#: issue 17's "2x": (preset, shape) -> tasks/s.
TASKS_PER_S_2026_11_29 = {("small", "gauss2"): 333, ("paper", "gauss2"): 53, ("small", "gauss8"): 69,
                          ("paper", "gauss8"): 15, ("small", "sergio"): 340, ("paper", "sergio"): 48}


def _table(head, rows, left=2):
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(row) for row in rows)]


def _ratio(x) -> str:
    return "n/a" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def _f(x, spec=".0f", none="n/a"):
    return none if x is None else format(x, spec)


def _dowhy_by_shape(report: dict, route: str) -> dict:
    """DoWhy's rows of one route, by shape (rows without a route are ``linear``)."""
    return {r["shape"]: r for r in report.get("dowhy", []) if r.get("route", "linear") == route}


def _shape(r: dict) -> str:
    return f"{r['shape']} (N={r['N']}, d={r['d']})"


# --------------------------------------------------------------------------- goals
def goal_rows(report: dict) -> list[dict]:
    """The goals as rows ``{goal, preset, shape, measured, target, met}``."""
    rows = []
    dowhy = {route: _dowhy_by_shape(report, route) for route in ("linear", "auto")}
    for cell in report["cells"]:
        a = cell["activa"]
        preset, shape = a["preset"], a["shape"]
        frac = cell.get("train_peak_fraction")
        goal = {"paper": GOALS["train_frac_paper"], "small": GOALS["train_frac_small"]}.get(preset)
        if goal is not None and frac is not None:
            rows.append({"goal": "training step >= matmul peak fraction", "preset": preset, "shape": shape,
                         "measured": f"{100 * frac:.1f} %", "target": f">= {100 * goal:.0f} %",
                         "met": frac >= goal})
        lat = a["predict"]["latency_ms_median"]
        rows.append({"goal": "single-query predict latency", "preset": preset, "shape": shape,
                     "measured": f"{lat:.2f} ms", "target": f"< {GOALS['predict_ms']:.0f} ms",
                     "met": lat < GOALS["predict_ms"]})
        for route, by_shape in dowhy.items():
            if shape in by_shape:
                ratio = a["predict_batch"]["queries_per_s"] / by_shape[shape]["queries_per_s"]
                rows.append({"goal": f"batched predict / DoWhy ({route})", "preset": preset, "shape": shape,
                             "measured": f"{_ratio(ratio)}x", "target": f">= {GOALS['batch_vs_dowhy']:.0f}x",
                             "met": ratio >= GOALS["batch_vs_dowhy"]})
    return rows


# --------------------------------------------------------------------------- report sections
def _head(report: dict) -> list[str]:
    info, settings, mm = report["machine"], report["settings"], report["matmul_peak"]
    lines = ["activa_ppl core benchmark", "=" * 25]
    for key in ("date", "cpu", "platform", "python", "jax_backend"):
        lines.append(f"{key:<14} {info[key]}")
    lines.append(f"{'cores':<14} {info['cores_logical']} logical, {info['cores_usable']} usable; "
                 f"SIMD {' '.join(info['simd']) or 'n/a'}")
    lines.append(f"{'load avg':<14} {' '.join(str(x) for x in info['load_avg_1_5_15'])} (1/5/15 min, at start); "
                 f"{' '.join(str(x) for x in report['load_avg_end'])} at the end")
    lines.append(f"{'versions':<14} jax {info['jax']}, jaxlib {info['jaxlib']}, numpy {info['numpy']}, "
                 f"numpyro {info['numpyro']}, flax {info['flax']}, optax {info['optax']}, "
                 f"activa_ppl {info['activa_ppl']}")
    env = ", ".join(f"{k}={v!r}" for k, v in info["env"].items())
    lines.append(f"{'env':<14} {env}")
    lines.append(f"{'settings':<14} " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    sizes = ", ".join(f"n={k}: {v['gflops']:.1f}" for k, v in mm["start"]["sizes"].items())
    lines.append(f"{'matmul peak':<14} {mm['gflops']:.1f} GFLOP/s float32 (best of start {mm['start']['gflops']:.1f} "
                 f"and end {mm['end']['gflops']:.1f}; at start per size {sizes})")
    return lines


def _training(report: dict) -> list[str]:
    peak = report["matmul_peak"]["gflops"]
    rows = []
    for cell in report["cells"]:
        for key in ("activa", "activa_old", "mace"):
            r = cell.get(key)
            if r is None:
                continue
            t = r["train"]
            frac = t["gflops"] / peak if t.get("gflops") else None
            rows.append([
                {"activa": "ACTIVA", "activa_old": "ACTIVA old", "mace": "MACE-TNP"}[key], r["preset"], _shape(r),
                f"{r['num_params']:,}", str(t["batch_size"]), f"{t['compile_s']:.1f}",
                f"{t['steps_per_chunk']}x{t['timed_chunks']}", f"{t['median_step_ms']:.1f}",
                f"{t['tasks_per_s']:.0f}", f"{t['tasks_per_s_min']:.0f}-{t['tasks_per_s_max']:.0f}",
                _f(t.get("gflop_per_step"), ".3f"), _f(t.get("gflops"), ".1f"),
                _f(None if frac is None else 100 * frac, ".1f"), _f(t.get("flop_per_byte"), ".1f"),
                f"{t['peak_rss_mb']:.0f}",
            ])
    return ["Training (compiled chunk of svi.update as in activa_ppl.train; MACE-TNP: its AdamW chunk)",
            *_table(["model", "preset", "shape", "params", "batch", "compile s", "steps", "ms/step", "tasks/s",
                     "min-max", "GFLOP/step", "GFLOP/s", "% peak", "FLOP/byte", "train RSS MB"], rows, left=3)]


def _prediction(report: dict) -> list[str]:
    dowhy = _dowhy_by_shape(report, "linear")
    rows = []
    for cell in report["cells"]:
        a, mc = cell["activa"], cell.get("mace")
        p, b = a["predict"], a["predict_batch"]
        dw = dowhy.get(a["shape"])
        rows.append([
            a["preset"], _shape(a), str(p["num_latents"]),
            f"{p['latency_ms_median']:.2f}", f"{p['forward_ms']:.2f}",
            f"{p['latency_ms_median'] - p['forward_ms']:.2f}", str(b["queries"]),
            f"{1e3 * b['median_call_s']:.0f}", f"{1e3 * b['forward_s']:.0f}", f"{b['queries_per_s']:.0f}",
            _f(dw and dw["queries_per_s"], ".1f"),
            _ratio(dw and b["queries_per_s"] / dw["queries_per_s"]),
            _f(mc and mc["predict_batch"]["queries_per_s"], ".0f"),
            _f(mc and b["queries_per_s"] / mc["predict_batch"]["queries_per_s"], ".2f"),
        ])
    return ["Prediction (random init params; predict = 1 query, predict_batch = Q queries)",
            *_table(["preset", "shape", "S", "predict ms", "fwd ms", "python ms", "Q", "batch ms",
                     "batch fwd ms", "queries/s", "DoWhy q/s", "x DoWhy", "MACE q/s", "x MACE"], rows)]


def _versus_mace(report: dict) -> list[str]:
    rows = []
    for cell in report["cells"]:
        a, mc = cell["activa"], cell.get("mace")
        if mc is None:
            continue
        rows.append([a["preset"], _shape(a), mc["preset"],
                     f"{a['num_params']:,}", f"{mc['num_params']:,}", f"{a['train']['tasks_per_s']:.0f}",
                     f"{mc['train']['tasks_per_s']:.0f}", f"{a['train']['tasks_per_s'] / mc['train']['tasks_per_s']:.2f}",
                     f"{a['predict_batch']['queries_per_s']:.0f}", f"{mc['predict_batch']['queries_per_s']:.0f}",
                     f"{a['predict']['latency_ms_median']:.2f}", f"{mc['predict']['latency_ms_median']:.2f}"])
    if not rows:
        return []
    return ["ACTIVA vs MACE-TNP at equal size (MACE-TNP preset of the closest parameter count)",
            *_table(["preset", "shape", "MACE preset", "ACTIVA params", "MACE params", "ACTIVA tasks/s",
                     "MACE tasks/s", "train x", "ACTIVA q/s", "MACE q/s", "ACTIVA ms", "MACE ms"], rows)]


def _dowhy(report: dict) -> list[str]:
    if not _dowhy_by_shape(report, "linear"):
        return []
    rows = [[r["shape"], r.get("route", "linear"), str(r["datasets"]), str(r["samples_per_query"]),
             f"{r['fit_ms_median']:.1f}", f"{r['sample_ms_median']:.1f}", f"{r['query_ms_median']:.1f}",
             f"{r['queries_per_s']:.1f}"] for r in report["dowhy"]]
    return ["DoWhy gcm per dataset (true graph; linear: hand-picked linear additive-noise mechanisms, "
            "auto: gcm.auto.assign_causal_mechanisms; fit + interventional_samples)",
            *_table(["shape", "route", "datasets", "samples", "fit ms", "sample ms", "query ms", "queries/s"],
                    rows, left=2)]


def _breakdown(report: dict) -> list[str]:
    peak, dowhy = report["matmul_peak"]["gflops"], _dowhy_by_shape(report, "linear")
    rows = []
    for cell in report["cells"]:
        a = cell["activa"]
        p, b = a["predict"], a["predict_batch"]
        per_query = b["gflop_per_call_lowered"] / b["queries"] if b.get("gflop_per_call_lowered") else None
        at_peak = peak / per_query if per_query else None  # queries/s at the matmul peak
        dw = dowhy.get(a["shape"])
        rows.append([a["preset"], a["shape"], f"{p['latency_ms_median']:.2f}", f"{p['input_checks_ms']:.3f}",
                     f"{p['forward_ms']:.3f}", f"{p['mixture_ms']:.3f}",
                     f"{100 * p['forward_ms'] / p['latency_ms_median']:.0f}",
                     f"{100 * b['forward_s'] / b['median_call_s']:.0f}", _f(b.get("gflops"), ".1f"),
                     _f(per_query and 1e3 * per_query, ".1f"), _f(at_peak, ".0f"),
                     _ratio(at_peak and dw and at_peak / dw["queries_per_s"])])
    return ["Where prediction time goes (medians; predict = checks + forward + mixture + dispatch; "
            "q/s @ peak: batched queries/s if the forward pass ran at the matmul peak)",
            *_table(["preset", "shape", "predict ms", "checks ms", "forward ms", "mixture ms", "fwd % (1)",
                     "fwd % (Q)", "batch GFLOP/s", "MFLOP/query", "q/s @ peak", "x DoWhy @ peak"], rows)]


def _allocator(report: dict) -> list[str]:
    alloc = report.get("allocator")
    if not alloc:
        return []
    base, plain = report["cells"][0], alloc["activa"]
    a0 = base["activa"]
    return [f"Allocator, side by side ({a0['preset']} @ {a0['shape']}): as the library runs "
            f"(GLIBC_TUNABLES='{a0.get('glibc_tunables', '')}') {a0['train']['tasks_per_s']:.0f} tasks/s "
            f"({100 * base.get('train_peak_fraction', 0):.1f} % peak); without huge pages "
            f"(GLIBC_TUNABLES='{alloc['env']['GLIBC_TUNABLES']}') {plain['train']['tasks_per_s']:.0f} tasks/s "
            f"({100 * alloc['train_peak_fraction']:.1f} % peak); x{a0['train']['tasks_per_s'] / plain['train']['tasks_per_s']:.2f}"]


def _old_path(report: dict) -> list[str]:
    """Issue 17 side by side: the training path now (shared observational embedding, deferred
    attention, huge-page allocator) against the one before."""
    rows = []
    for cell in report["cells"]:
        new, old = cell["activa"], cell.get("activa_old")
        if old is None:
            continue
        tn, to = new["train"], old["train"]
        ln, lo = tn.get("first_chunk_losses") or [None], to.get("first_chunk_losses") or [None]
        diff = abs(ln[0] - lo[0]) / abs(lo[0]) if ln[0] is not None and lo[0] else None
        ref = TASKS_PER_S_2026_11_29.get((new["preset"], new["shape"]))
        rows.append([new["preset"], _shape(new), f"{to['tasks_per_s']:.0f}", f"{tn['tasks_per_s']:.0f}",
                     f"{tn['tasks_per_s'] / to['tasks_per_s']:.2f}", _f(to.get("gflop_per_step"), ".3f"),
                     _f(tn.get("gflop_per_step"), ".3f"), _f(diff, ".1e"), _f(ref, ".0f"),
                     _f(ref and tn["tasks_per_s"] / ref, ".2f")])
    if not rows:
        return []
    return ["Training, issue 17's path (shared observational embedding, deferred attention, huge pages) "
            "vs the old path (same run, same cells; loss: first step, same state and minibatch; "
            "2026-11-29: the reference run's tasks/s)",
            *_table(["preset", "shape", "old tasks/s", "new tasks/s", "new/old", "old GFLOP/step",
                     "new GFLOP/step", "loss rel diff", "2026-11-29", "new/2026-11-29"], rows)]


def _goals(report: dict) -> list[str]:
    g = [[r["goal"], r["preset"], r["shape"], r["measured"], r["target"], "met" if r["met"] else "GAP"]
         for r in report["goals"]]
    lines = ["Goals", *_table(["goal", "preset", "shape", "measured", "target", "status"], g, left=3)]
    rss = [c["activa"]["train"]["peak_rss_mb"] for c in report["cells"]
           if c["activa"]["preset"] == "paper" and c["activa"]["shape"] == "gauss8"]
    if rss:
        lines.append(f"peak RSS of paper-preset training at the Gauss 8 shape (its own process): {rss[0]:.0f} MB")
    return lines


def format_report(report: dict) -> str:
    """The text report: machine and settings, then one section per table, then the goals."""
    lines = []
    for section in (_head, _training, _old_path, _prediction, _versus_mace, _dowhy, _breakdown, _allocator):
        part = section(report)
        if part:
            lines += part + [""]
    return "\n".join(lines + _goals(report))
