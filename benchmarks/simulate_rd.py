"""Benchmark: ETDRK4 (default) vs scipy RK45 on the paper's reaction–diffusion dataset.

Runs, in one process: the default scheme; RK45 at rtol 1e-3 (atol 1e-6: scipy's and
MATLAB ode45's defaults) twice — with snapshots from its dense output (what solve_ivp
with t_eval does; the adaptive steps are free to exceed the save interval) and landing
on every save (steps capped at the save interval); and a tight DOP853 reference (landing
on the saves: its dense output is not accurate enough for a reference). Prints wall and
CPU times, every method's errors against the reference and the speed ratios.

    python benchmarks/simulate_rd.py                 # paper size: n=100, t to 500, saves 0.05
    python benchmarks/simulate_rd.py --t-end 20      # quick look

Error = relative L2 error of one snapshot, ‖a − a_ref‖ / ‖a_ref‖, over the saved
masked fields x = f·u and ẋ = f·u_t (float32 as stored); the max over snapshots and the
value at the last snapshot are reported.

BLAS threads: scipy's RK45 forms each stage with ``np.dot`` on a 20 000 × 7 array; with
OpenBLAS' default threading on a small shared machine those calls spin and dominate the
run time (measured ~9× slower on 2 cores), which says nothing about the integrator. The
benchmark therefore pins BLAS to ``--blas-threads`` (default 1) before numpy is imported;
the ETDRK4 path uses no BLAS. Pass ``--blas-threads 0`` to keep the environment's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--t-end", type=float, default=500.0)
    ap.add_argument("--save-interval", type=float, default=0.05)
    ap.add_argument("--steps-per-save", type=int, default=1, help="ETDRK4 steps per saved snapshot")
    ap.add_argument("--rtol", type=float, default=1e-3, help="RK45 rtol")
    ap.add_argument("--atol", type=float, default=1e-6, help="RK45 atol")
    ap.add_argument("--ref-rtol", type=float, default=1e-10, help="DOP853 reference rtol (= atol)")
    ap.add_argument("--blas-threads", type=int, default=1, help="0: leave the environment alone")
    ap.add_argument("--check-reference", type=int, default=0, metavar="STEPS",
                    help="also run ETDRK4 with STEPS steps per save (e.g. 8) and report its "
                         "distance to the reference: an independent bound on the reference's error")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.blas_threads > 0:  # must happen before numpy is imported
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    import numpy as np

    from eae.progress import setup_logging
    from eae.simulate import simulate

    setup_logging(None)
    base = dict(n=args.n, t_end=args.t_end, save_interval=args.save_interval)
    runs = {
        "etdrk4": dict(method="etdrk4", steps_per_save=args.steps_per_save),
        "rk45": dict(method="rk45", rtol=args.rtol, atol=args.atol, dense_output=True),
        "rk45_landing": dict(method="rk45", rtol=args.rtol, atol=args.atol),
        "reference": dict(method="dop853", rtol=args.ref_rtol, atol=args.ref_rtol),
    }
    if args.check_reference:
        runs["etdrk4_fine"] = dict(method="etdrk4", steps_per_save=args.check_reference)
    results, data = {}, {}
    for name, extra in runs.items():
        wall0, cpu0 = time.perf_counter(), time.process_time()
        ds = simulate(dict(base, **extra), progress_label=f"benchmark {name}")
        results[name] = {
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0,
            "rhs_evaluations": int(ds.attrs["rhs_evaluations"]),
            "config": dict(base, **extra),
        }
        data[name] = (ds["field"].values, ds["field_dot"].values)
        print(f"{name:12s} wall {results[name]['wall_s']:8.2f} s  cpu {results[name]['cpu_s']:8.2f} s  "
              f"rhs evaluations {results[name]['rhs_evaluations']}", flush=True)

    def rel_errors(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
        out = np.empty(len(a))
        for i in range(0, len(a), 500):  # float64 in chunks: no full-size temporaries
            x, r = a[i:i + 500].astype(np.float64), ref[i:i + 500].astype(np.float64)
            axes = tuple(range(1, x.ndim))
            out[i:i + 500] = np.sqrt(((x - r) ** 2).sum(axes) / (r**2).sum(axes))
        return out

    for name in [r for r in runs if r != "reference"]:
        for k, var in enumerate(("x", "x_dot")):
            err = rel_errors(data[name][k], data["reference"][k])
            results[name][f"err_{var}_max"] = float(err.max())
            results[name][f"err_{var}_final"] = float(err[-1])
            results[name][f"err_{var}_max_t_ge_1"] = float(err[int(round(1 / args.save_interval)):].max())
    ratios = {
        f"{name}_over_etdrk4_{kind}": results[name][f"{kind}_s"] / results["etdrk4"][f"{kind}_s"]
        for name in ("rk45", "rk45_landing") for kind in ("wall", "cpu")
    }
    summary = {
        "problem": base,
        "blas_threads": args.blas_threads or "environment default",
        "runs": results,
        "speed_ratios": ratios,
    }
    print()
    print(f"problem: n={args.n}, t in [0, {args.t_end}], saves every {args.save_interval} "
          f"({data['etdrk4'][0].shape[0]} snapshots); reference DOP853 rtol=atol={args.ref_rtol:g}; "
          f"BLAS threads: {summary['blas_threads']}")
    print(f"{'method':16s} {'wall s':>8s} {'cpu s':>8s} {'rhs evals':>10s} "
          f"{'err x max':>10s} {'err x end':>10s} {'err xdot max':>12s} {'err xdot end':>12s}")
    labels = {"etdrk4": f"etdrk4 h={args.save_interval / args.steps_per_save:g}",
              "rk45": f"rk45 {args.rtol:g} dense", "rk45_landing": f"rk45 {args.rtol:g} land"}
    for name, label in labels.items():
        r = results[name]
        print(f"{label:16s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['rhs_evaluations']:10d} "
              f"{r['err_x_max']:10.2e} {r['err_x_final']:10.2e} {r['err_x_dot_max']:12.2e} "
              f"{r['err_x_dot_final']:12.2e}")
    print(f"reference        {results['reference']['wall_s']:8.2f} {results['reference']['cpu_s']:8.2f} "
          f"{results['reference']['rhs_evaluations']:10d}")
    if args.check_reference:
        r = results["etdrk4_fine"]
        print(f"reference check: ETDRK4 h={args.save_interval / args.check_reference:g} vs reference: "
              f"x max {r['err_x_max']:.2e}, x_dot max {r['err_x_dot_max']:.2e}")
    for name in ("rk45", "rk45_landing"):
        print(f"speed ratio {labels[name]} / ETDRK4: wall {ratios[name + '_over_etdrk4_wall']:.2f}x, "
              f"cpu {ratios[name + '_over_etdrk4_cpu']:.2f}x (target >= 10x at equal or lower error)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
