"""Distilled students and consistency models on the 8x8 digits beside their teacher's own samplers,
by FID and KID in the shipped digits classifier's features (as `--mode eval`).

After `python main.py --config configs/vp_digits.py --mode train,distill --workdir W ...` and
`--mode consistency`, draws n samples from the same prior draws x_T with:
  * the teacher (the trained model's EMA) with every fast sampler of `bench_students.py`
    (DDIM, DPM-Solver++(2M/3M), UniPC-2/3, the optimised grid) at 1, 2, 4, 8 evaluations; the
    one with the lowest FID is the row "teacher best";
  * each distillation round's student (`<W>/distill/round_<k>`) at its own step count (DDIM on
    the nested grid, no final denoising step, as the round prints);
  * the consistency models of `--mode consistency` (`<W>/consistency/<kind>`), if any, with
    `method="consistency"` at 1, 2, 4, 8 evaluations (the multistep noise from one fixed seed);
  * the teacher's converged probability-flow ODE (RK45, rtol = atol = 1e-5) and the digits job's
    own sampler (`config.sampling`: DPM-Solver++(2M), 25 evaluations) as references, and the
    floor (the test split's real images).
Samples are quantised to the 17 levels and read by the digits classifier; FID and KID against
the training split's cached statistics, with bootstrap standard errors, by
`sde_app.evaluation.quality_metrics` with the config's `eval` settings (the same numbers as
`--mode eval` on the same samples).

Usage:
    python benchmarks/bench_students_digits.py --workdir W [--n 1000] [--seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_students import NFES, TEACHER_SAMPLERS, students_of  # noqa: E402
from sde_app import evaluation, factory, features, loading  # noqa: E402
from sde_app.checkpoints import CheckpointDir  # noqa: E402
from sde_app.factory.config_files import load_config  # noqa: E402
from sde_lib.sampling import sample  # noqa: E402

REFERENCE_ODE = {"method": "ode", "solver": "RK45", "rtol": 1e-5, "atol": 1e-5}


@dataclasses.dataclass
class Row:
    """One table row: what sampled, with how many score evaluations per sample, and its metrics
    (`fid`, `kid`: {"mean", "stderr"}; `inception_score`: {"mean", ...})."""

    model: str
    sampler: str
    nfe: float
    metrics: Dict[str, Any]
    wall_s: float

    @property
    def fid(self) -> float:
        return self.metrics["fid"]["mean"]


def describe(method: str, options: Dict[str, Any]) -> str:
    return " ".join([method, *(f"{a}={b}" for a, b in options.items())])


def student_table(exp, teacher, students: Sequence[Dict[str, Any]], consistency: Dict[str, Any], *,
                  extractor: features.Extractor, ref: Dict[str, Any], n: int, seed: int = 0,
                  nfes: Sequence[int] = NFES, reference_ode: Optional[Dict[str, Any]] = REFERENCE_ODE,
                  job_sampler: bool = True, floor: bool = True, teacher_samplers=TEACHER_SAMPLERS,
                  log=print) -> List[Row]:
    """Sample every row from the same n prior draws and score it.

    Args:
      exp: the experiment (`factory.build_experiment`) of the digits config.
      teacher: the teacher's `loading.LoadedModel`.
      students: [{"round", "model": LoadedModel, "steps", "schedule", "eps"}], each sampled with
        DDIM at its own step count.
      consistency: {kind: LoadedModel} of consistency models, each sampled at every NFE in `nfes`.
      extractor, ref: the feature network and the reference statistics (`evaluation.load_extractor`,
        `evaluation.reference_stats`).
      n: samples per row; seed: x_T (prior draws, shared by all rows) and the metrics' bootstrap.
      reference_ode: the teacher's converged-ODE sampler options (None: no such row).
      job_sampler: also the teacher with the config's own sampler (`exp.sampling.sampler`).
      floor: also the test split's real images.
      teacher_samplers: the teacher's fast samplers at each NFE ((method, options) pairs; () for
        none: `--students-only`, when a full run with the same n and seed has the teacher's rows).

    The converged ODE comes last (the costliest row: the others are printed before it).

    Returns:
      the rows in the order drawn (each with its metrics and wall time of sampling and scoring).
    """
    q, data, sde = exp.evaluation.quality, exp.data, exp.sde
    shape = (n, *data.shape)
    x_T = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(seed))
    rows: List[Row] = []

    def score(images: torch.Tensor) -> Dict[str, Any]:
        f, z = extractor(images, batch_size=exp.evaluation.batch_size)
        return evaluation.quality_metrics(f, z, ref, q, torch.Generator().manual_seed(seed + 1))

    def add(model: str, sampler: str, fn, method: str, N: Optional[int], **options) -> Row:
        start = time.perf_counter()
        with torch.no_grad():
            x, used = sample(sde, fn, shape, method=method, N=N, x_T=x_T.clone(), **options)
        row = Row(model, sampler, float(used), score(evaluation.sample_images(x, data)), 0.0)
        row.wall_s = time.perf_counter() - start
        rows.append(row)
        log(format_row(row), flush=True)
        return row

    if floor:
        start = time.perf_counter()
        images, _ = features.data_images(data, "test")
        rows.append(Row("floor: the test split", "real images", 0.0, score(images), time.perf_counter() - start))
        log(format_row(rows[-1]), flush=True)
    if job_sampler:
        s = exp.sampling.sampler
        start = time.perf_counter()
        with torch.no_grad():
            x, used = s(sde, teacher.score_fn, shape, x_T=x_T.clone())
        options = {k: v for k, v in s.describe().items() if k not in ("method", "N") and v is not None}
        rows.append(Row("teacher (the job's sampler)", describe(s.name, options), float(used),
                        score(evaluation.sample_images(x, data)), time.perf_counter() - start))
        log(format_row(rows[-1]), flush=True)
    for nfe in nfes:
        for method, options in teacher_samplers:
            add("teacher", describe(method, options), teacher.score_fn, method, nfe, **options)
        for st in students:
            if st["steps"] == nfe:
                add(f"student, round {st['round']}", "ddim (distilled)", st["model"].score_fn, "ddim", nfe,
                    denoise=False, schedule=st["schedule"], eps=st["eps"])
        for kind, model in consistency.items():
            add(f"consistency {kind}", "consistency", model.score_fn, "consistency", nfe,
                generator=torch.Generator().manual_seed(seed + 2))
    if reference_ode is not None:
        options = dict(reference_ode)
        method = options.pop("method")
        add("teacher (converged ODE)", describe(method, options), teacher.score_fn, method, None, **options)
    return rows


def pm(v: Optional[Dict[str, Any]], digits: int) -> str:
    if v is None:
        return "-"
    se = v.get("stderr")
    return f"{v['mean']:.{digits}f}" + ("" if se is None else f" +- {se:.{digits}f}")


def format_row(row: Row) -> str:
    return (f"| {row.model} | {row.sampler} | {row.nfe:g} | {pm(row.metrics['fid'], 2)} | "
            f"{pm(row.metrics.get('kid'), 1)} | {row.metrics['inception_score']['mean']:.3f} | {row.wall_s:.1f} |")


def summary(rows: Sequence[Row], nfes: Sequence[int] = NFES) -> List[str]:
    """The issue's table: per NFE, the teacher's best fast sampler (lowest FID) beside each
    student and consistency model at that NFE; FID / KID each."""
    kinds = sorted({r.model for r in rows if r.model.startswith("consistency")})
    head = ["NFE", "teacher best (sampler)", "distilled student (round)", *kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    both = lambda r: f"{pm(r.metrics['fid'], 2)} / {pm(r.metrics.get('kid'), 1)}"  # noqa: E731
    for nfe in nfes:
        teacher = [r for r in rows if r.model == "teacher" and round(r.nfe) == nfe]
        cells = [str(nfe)]
        if teacher:
            best = min(teacher, key=lambda r: r.fid)
            cells.append(f"{both(best)} ({best.sampler})")
        else:
            cells.append("-")
        student = [r for r in rows if r.model.startswith("student") and round(r.nfe) == nfe]
        cells.append(f"{both(student[0])} ({student[0].model.split(', ')[1]})" if student else "-")
        for kind in kinds:
            found = [r for r in rows if r.model == kind and round(r.nfe) == nfe]
            cells.append(both(found[0]) if found else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--n", type=int, default=1000, help="samples per row (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--students-only", action="store_true",
                   help="only the distilled students' rows (the other rows of a full run with the same"
                        " --n and --seed come from the same prior draws and do not change)")
    args = p.parse_args()
    workdir = Path(args.workdir)
    if args.n < 2:
        p.exit(2, f"error: --n={args.n}: FID needs at least 2 samples per row; pass --n=1000\n")
    if not (workdir / "config.json").is_file():
        p.exit(2, f"error: --workdir={workdir}: no config.json there; train the digits job there first"
                  " (python main.py --config configs/vp_digits.py --mode train --workdir W)\n")
    torch.set_num_threads(1)
    exp = factory.build_experiment(load_config(str(workdir / "config.json")))
    if exp.evaluation.quality is None:
        p.exit(2, "error: the workdir's config has eval.num_samples=0: no feature settings; use configs/vp_digits.py\n")
    device = torch.device("cpu")
    teacher = loading.load_trained(exp, workdir, device)
    students = [{**st, "model": loading.load_trained(exp, workdir, device, st["path"])} for st in students_of(workdir)]
    consistency = {}
    for kind in ("distillation", "training"):
        ck = CheckpointDir(workdir / "consistency" / kind)
        if ck.has_checkpoint():
            consistency[kind] = loading.load_trained(exp, workdir, device, str(ck.resume_path))
    q = exp.evaluation.quality
    extractor = evaluation.load_extractor(exp, q, device)
    ref = evaluation.reference_stats(exp, q, extractor, device, progress=False)
    print(f"# digits, {args.n} samples per row from the same prior draws (seed {args.seed}); features {q.features};"
          f" reference {ref['file']}; bootstrap {q.bootstrap}, KID subsets {q.kid_subsets} of {q.kid_subset_size}")
    made = [f"round {s['round']} ({s['steps']} steps, step {s['model'].step})" for s in students]
    kinds = [f"{k} (step {m.step})" for k, m in consistency.items()]
    print(f"# teacher {teacher.source} (step {teacher.step}); students: {', '.join(made) or 'none'};"
          f" consistency: {', '.join(kinds) or 'none'}")
    print("| model | sampler | NFE | FID | KID | IS | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    only = dict(floor=False, job_sampler=False, reference_ode=None, teacher_samplers=()) if args.students_only else {}
    rows = student_table(exp, teacher, students, {} if args.students_only else consistency, extractor=extractor,
                         ref=ref, n=args.n, seed=args.seed, **only)
    print()
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
