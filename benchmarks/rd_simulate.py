"""Benchmark: ETDRK4 (default) vs scipy RK45 on the paper's reaction–diffusion dataset.

Runs, in one process: a tight DOP853 reference (landing on the saves: its dense output is
not accurate enough for a reference); the default scheme (adaptive ETDRK4 in a rotating
frame with dense output, eae.simulate); and RK45 at rtol 1e-3 (atol 1e-6: scipy's and
MATLAB ode45's defaults) twice — "dense": one run with snapshots from its dense output
(what solve_ivp with t_eval and ode45 do; steps free to exceed the save interval) and
"landing": landing on every save (steps capped at the save interval). Prints wall and CPU
times, every method's errors against the reference, the speed ratios and whether the
default's errors are at most each RK45 variant's.

    python benchmarks/rd_simulate.py                 # paper size: n=100, t to 500, saves 0.05
    python benchmarks/rd_simulate.py --t-end 20      # quick look
    python benchmarks/rd_simulate.py --quick         # seconds: smoke run (tests/test_benchmarks.py)
    python benchmarks/rd_simulate.py --tolerance 0 --steps-per-save 2   # fixed-step ETDRK4

Error = relative L2 error of one snapshot, ‖a − a_ref‖ / ‖a_ref‖, over the saved
masked fields x = f·u and ẋ = f·u_t (float32 as stored); the max over snapshots and the
value at the last snapshot are reported. Each run's data are compared with the reference
and dropped before the next run starts. Every method but the reference runs ``--repeats``
times (default 3) and its median time is used; all run times are printed. Repeats differ by up
to ~10 % on the 2-core test VM (measured: RK45 dense 13.95, 12.94, 12.47 s; ETDRK4 0.90,
0.85, 0.88 s). An earlier version touched and freed four runs' worth of memory before the
first run instead; that made the first ETDRK4 run after the reference 3.0 s (repeats
0.88 s), so it was dropped.

BLAS threads: scipy's RK45 forms each stage with ``np.dot`` on a 20 000 × 7 array; with
OpenBLAS' default threading on a small shared machine those calls spin and dominate the
run time (measured ~9× slower on 2 cores), which says nothing about the integrator. The
benchmark therefore pins BLAS to ``--blas-threads`` (default 1) before numpy is imported
(ETDRK4 uses BLAS only for its small dense-output products). Pass ``--blas-threads 0`` to
keep the environment's default.

``--quick`` runs the same code on a small grid over a short time (n=64, t to 10) only to
check that the benchmark still runs; its figures are labelled as such and mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _quick  # benchmarks/_quick.py, beside this script: the shared --quick option

QUICK = {"n": 64, "t_end": 10.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--t-end", type=float, default=500.0)
    ap.add_argument("--save-interval", type=float, default=0.05)
    ap.add_argument("--tolerance", type=float, default=None,
                    help="ETDRK4 local error tolerance (default: the config default); 0: fixed steps")
    ap.add_argument("--max-step", type=float, default=None, help="ETDRK4 longest step (default: config)")
    ap.add_argument("--steps-per-save", type=int, default=1, help="ETDRK4 steps per save with --tolerance 0")
    ap.add_argument("--rtol", type=float, default=1e-3, help="RK45 rtol")
    ap.add_argument("--atol", type=float, default=1e-6, help="RK45 atol")
    ap.add_argument("--ref-rtol", type=float, default=1e-10, help="DOP853 reference rtol (= atol)")
    ap.add_argument("--blas-threads", type=int, default=1, help="0: leave the environment alone")
    ap.add_argument("--check-reference", type=int, default=0, metavar="STEPS",
                    help="also run fixed-step ETDRK4 with STEPS steps per save (e.g. 8) and report its "
                         "distance to the reference: an independent bound on the reference's error")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each method but the reference; times are their median")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return _quick.parse_args(ap, QUICK, argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    note = _quick.note(args)
    if args.blas_threads > 0:  # must happen before numpy is imported
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    import numpy as np

    from eae.support.progress import setup_logging
    from eae.experiments.rd.simulate import RDParams, simulate

    setup_logging(None)
    base = dict(n=args.n, t_end=args.t_end, save_interval=args.save_interval)
    default = RDParams()
    tolerance = default.tolerance if args.tolerance is None else args.tolerance
    etd = dict(method="etdrk4", tolerance=tolerance,
               max_step=default.max_step if args.max_step is None else args.max_step)
    if tolerance == 0:
        etd["steps_per_save"] = args.steps_per_save
    runs = {
        "reference": dict(method="dop853", rtol=args.ref_rtol, atol=args.ref_rtol),
        "etdrk4": etd,
        "rk45": dict(method="rk45", rtol=args.rtol, atol=args.atol, dense_output=True),
        "rk45_landing": dict(method="rk45", rtol=args.rtol, atol=args.atol),
    }
    if args.check_reference:
        runs["etdrk4_fine"] = dict(method="etdrk4", tolerance=0.0, steps_per_save=args.check_reference)

    def rel_errors(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
        out = np.empty(len(a))
        for i in range(0, len(a), 500):  # float64 in chunks: no full-size temporaries
            x, r = a[i:i + 500].astype(np.float64), ref[i:i + 500].astype(np.float64)
            axes = tuple(range(1, x.ndim))
            out[i:i + 500] = np.sqrt(((x - r) ** 2).sum(axes) / (r**2).sum(axes))
        return out


    results, reference, n_snapshots = {}, None, 0
    for name, extra in runs.items():
        walls, cpus = [], []
        for _ in range(1 if name == "reference" else max(1, args.repeats)):
            ds = None  # the previous repeat's output is freed before the next allocates
            wall0, cpu0 = time.perf_counter(), time.process_time()
            ds = simulate(dict(base, **extra), progress_label=f"benchmark {name}")
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
        results[name] = {
            "wall_s": float(np.median(walls)),
            "cpu_s": float(np.median(cpus)),
            "wall_s_runs": walls,
            "rhs_evaluations": int(ds.attrs["rhs_evaluations"]),
            "config": dict(base, **extra),
        }
        data = (ds["field"].values, ds["field_dot"].values)
        del ds
        n_snapshots = len(data[0])
        print(f"{name:12s} wall {results[name]['wall_s']:8.2f} s  cpu {results[name]['cpu_s']:8.2f} s  "
              f"(median; runs {', '.join(f'{w:.2f}' for w in walls)} s)  "
              f"rhs evaluations {results[name]['rhs_evaluations']}", flush=True)
        if reference is None:
            reference = data
            continue
        for k, var in enumerate(("x", "x_dot")):
            err = rel_errors(data[k], reference[k])
            results[name][f"err_{var}_max"] = float(err.max())
            results[name][f"err_{var}_final"] = float(err[-1])
            results[name][f"err_{var}_max_t_ge_1"] = float(err[int(round(1 / args.save_interval)):].max())
        del data

    ratios = {
        f"{name}_over_etdrk4_{kind}": results[name][f"{kind}_s"] / results["etdrk4"][f"{kind}_s"]
        for name in ("rk45", "rk45_landing") for kind in ("wall", "cpu")
    }
    error_keys = [f"err_{var}_{which}" for var in ("x", "x_dot") for which in ("max", "final")]
    not_above = {name: {key: results["etdrk4"][key] <= results[name][key] for key in error_keys}
                 for name in ("rk45", "rk45_landing")}
    summary = {
        "problem": base,
        "quick": args.quick,
        "blas_threads": args.blas_threads or "environment default",
        "runs": results,
        "speed_ratios": ratios,
        "etdrk4_error_not_above": not_above,
    }
    print()
    print(f"problem: n={args.n}, t in [0, {args.t_end}], saves every {args.save_interval} "
          f"({n_snapshots} snapshots); reference DOP853 rtol=atol={args.ref_rtol:g}; "
          f"BLAS threads: {summary['blas_threads']}{note}")
    print(f"{'method':18s} {'wall s':>8s} {'cpu s':>8s} {'rhs evals':>10s} "
          f"{'err x max':>10s} {'err x end':>10s} {'err xdot max':>12s} {'err xdot end':>12s}")
    etd_label = (f"etdrk4 tol={tolerance:g}" if tolerance > 0
                 else f"etdrk4 h={args.save_interval / args.steps_per_save:g}")
    labels = {"etdrk4": etd_label, "rk45": f"rk45 {args.rtol:g} dense",
              "rk45_landing": f"rk45 {args.rtol:g} land"}
    for name, label in labels.items():
        r = results[name]
        print(f"{label:18s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['rhs_evaluations']:10d} "
              f"{r['err_x_max']:10.2e} {r['err_x_final']:10.2e} {r['err_x_dot_max']:12.2e} "
              f"{r['err_x_dot_final']:12.2e}")
    r = results["reference"]
    print(f"{'reference':18s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['rhs_evaluations']:10d}")
    if args.check_reference:
        r = results["etdrk4_fine"]
        print(f"reference check: ETDRK4 h={args.save_interval / args.check_reference:g} vs reference: "
              f"x max {r['err_x_max']:.2e}, x_dot max {r['err_x_dot_max']:.2e}")
    for name in ("rk45", "rk45_landing"):
        above = [key for key, ok in not_above[name].items() if not ok]
        verdict = "all four errors <= its" if not above else "errors above its: " + ", ".join(above)
        print(f"speed ratio {labels[name]} / ETDRK4: wall {ratios[name + '_over_etdrk4_wall']:.2f}x, "
              f"cpu {ratios[name + '_over_etdrk4_cpu']:.2f}x; ETDRK4 {verdict} "
              f"(target >= 10x at equal or lower error){note}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
