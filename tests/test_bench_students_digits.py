"""benchmarks/bench_students_digits.py's table on a tiny untrained digits network (seconds): every
row is there with the NFE asked for and finite FID/KID with standard errors; the rows share their
prior draws (the student's row is its sampler on x_T scored directly); the features tell real
digits from an untrained network's samples."""
import math
import sys
from pathlib import Path

import torch

from configs import vp_digits
from sde_app import evaluation, factory, loading
from sde_lib.consistency import ConsistencyFunction
from sde_lib.sampling import sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_students_digits as bench  # noqa: E402


def tiny(tmp_path):
    config = vp_digits.get_config()
    config.model.nf = 8
    config.model.attn_resolutions = ()
    config.eval.bootstrap = 4
    config.eval.kid_subsets = 10
    config.eval.stats_dir = str(tmp_path / "stats")
    exp = factory.build_experiment(config)
    torch.manual_seed(0)
    net = factory.build_network(config).eval().requires_grad_(False)
    model = loading.LoadedModel(exp.sde, exp.score_model.wrap(net, exp.sde), net, 0, "random", "step_0")
    function = ConsistencyFunction(net, exp.sde, eps=1e-3, sigma_data=0.5)
    consistency = loading.LoadedModel(exp.sde, function.as_score(), net, 0, "random", "consistency_step_0")
    return exp, model, consistency


def test_table_has_every_row_with_finite_metrics_and_shared_prior_draws(tmp_path):
    exp, model, consistency = tiny(tmp_path)
    q = exp.evaluation.quality
    extractor = evaluation.load_extractor(exp, q, torch.device("cpu"))
    ref = evaluation.reference_stats(exp, q, extractor, torch.device("cpu"), progress=False)
    ref = {**ref, "features": ref["features"][:300]}  # KID against 300 of the 1500 training digits: faster
    students = [{"round": 1, "model": model, "steps": 2, "schedule": "logsnr", "eps": 1e-3}]
    n, nfes = 40, (1, 2)
    rows = bench.student_table(exp, model, students, {"distillation": consistency}, extractor=extractor, ref=ref,
                               n=n, seed=3, nfes=nfes, log=lambda *a, **k: None,
                               reference_ode={"method": "ode", "solver": "RK45", "rtol": 1e-3, "atol": 1e-3})
    names = [(r.model, r.nfe) for r in rows]
    assert names[:2] == [("floor: the test split", 0.0), ("teacher (the job's sampler)", 25.0)]
    assert names[-1][0] == "teacher (converged ODE)" and names[-1][1] > 25
    for nfe in nfes:
        teacher = [r for r in rows if r.model == "teacher" and r.nfe == nfe]
        assert [r.sampler for r in teacher] == [bench.describe(m, o) for m, o in bench.TEACHER_SAMPLERS]
        assert [r.model for r in rows if r.model != "teacher" and r.nfe == nfe] == (
            ["student, round 1"] if nfe == 2 else []) + ["consistency distillation"]
    for r in rows:
        for key in ("fid", "kid"):
            assert math.isfinite(r.metrics[key]["mean"]) and math.isfinite(r.metrics[key]["stderr"]), (r.model, key)

    # The student's row is its sampler on the shared prior draws, scored the same way; other draws
    # give other numbers (an untrained network's final layer is zero: the samples are x_T's scaled).
    for seed, same in ((3, True), (5, False)):
        x_T = exp.sde.prior_sampling((n, *exp.data.shape), generator=torch.Generator().manual_seed(seed))
        x, _ = sample(exp.sde, model.score_fn, x_T.shape, method="ddim", N=2, denoise=False, schedule="logsnr",
                      eps=1e-3, x_T=x_T)
        f, z = extractor(evaluation.sample_images(x, exp.data))
        direct = evaluation.quality_metrics(f, z, ref, q, torch.Generator().manual_seed(4))
        student = [r for r in rows if r.model == "student, round 1"][0]
        assert (student.metrics["fid"] == direct["fid"] and student.metrics["kid"] == direct["kid"]) == same

    # Real test digits against an untrained network's samples: the features must tell them apart.
    floor, teacher = rows[0], [r for r in rows if r.model == "teacher"]
    assert all(floor.fid + 3 * (floor.metrics["fid"]["stderr"] + r.metrics["fid"]["stderr"]) < r.fid for r in teacher)

    table = bench.summary(rows, nfes)
    assert len(table) == 2 + len(nfes) and table[0].count("|") == 5
    assert "(round 1)" in table[3] and "(round 1)" not in table[2]

    # --students-only: the student's row alone, the same numbers as in the full table.
    alone = bench.student_table(exp, model, students, {}, extractor=extractor, ref=ref, n=n, seed=3, nfes=nfes,
                                log=lambda *a, **k: None, reference_ode=None, job_sampler=False, floor=False,
                                teacher_samplers=())
    assert [(r.model, r.nfe) for r in alone] == [("student, round 1", 2.0)]
    assert alone[0].metrics == student.metrics
