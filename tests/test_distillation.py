"""Progressive distillation (Salimans & Ho 2022): the target is the paper's Alg. 2, transcribed
here step by step, and one round makes a student's single step closer to two teacher steps."""
import copy
import math

import pytest
import torch

from models.mlp import ScoreMLP
from sde_lib import VPSDE, GaussianMixture
from sde_lib.distillation import ProgressiveDistillationLoss, ddim_step, loss_weight, two_step_target
from sde_lib.losses import DenoisingScoreMatching
from sde_lib.sampling import sample
from sde_lib.score import NetworkScore

MIX = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [[[0.1, 0.0], [0.0, 0.2]], [[0.2, 0.05], [0.05, 0.1]]])


def test_two_step_target_is_algorithm_2():
    # Alg. 2 of Salimans & Ho written out with the exact mixture score as the teacher:
    # z' = a' x^ + (s'/s)(z - a x^), z'' likewise from t', and x~ = (z'' - (s''/s) z) / (a'' - (s''/s) a).
    sde = VPSDE()
    score = MIX.score_fn(sde)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t, t1, t2 = (torch.full((16,), v, dtype=torch.float64) for v in (0.7, 0.45, 0.2))
    (a, s), (a1, s1), (a2, s2) = (sde.marginal_coeffs(u) for u in (t, t1, t2))
    a, s, a1, s1, a2, s2 = (c[:, None] for c in (a, s, a1, s1, a2, s2))
    x_hat = (z + s**2 * score(z, t)) / a
    z1 = a1 * x_hat + s1 / s * (z - a * x_hat)
    x_hat1 = (z1 + s1**2 * score(z1, t1)) / a1
    z2 = a2 * x_hat1 + s2 / s1 * (z1 - a1 * x_hat1)
    expected = (z2 - s2 / s * z) / (a2 - s2 / s * a)
    torch.testing.assert_close(two_step_target(sde, score, z, t, t1, t2), expected, rtol=1e-12, atol=1e-12)
    # and one DDIM step with the target lands on z''
    one_step = a2 * expected + s2 / s * (z - a * expected)
    torch.testing.assert_close(one_step, z2, rtol=1e-10, atol=1e-10)


def test_one_round_brings_the_student_closer_to_two_teacher_steps():
    torch.manual_seed(0)
    sde = VPSDE()
    net = ScoreMLP(data_dim=2, hidden_dim=32, num_blocks=2)
    teacher_score = NetworkScore(net, sde, prediction="eps")
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    dsm = DenoisingScoreMatching(sde)
    for _ in range(150):  # a briefly trained teacher
        x = MIX.sample(256, generator=g)
        loss = dsm(teacher_score, x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in net.parameters():
        p.requires_grad_(False)

    N = 2
    student = copy.deepcopy(net).requires_grad_(True)
    student_score = NetworkScore(student, sde, prediction="eps")
    x_T = sde.prior_sampling((1000, 2), generator=torch.Generator().manual_seed(2))

    def distance_to_teacher():
        with torch.no_grad():
            target, nfe_t = sample(sde, teacher_score, (1000, 2), method="ddim", N=2 * N, denoise=False, x_T=x_T)
            out, nfe_s = sample(sde, student_score, (1000, 2), method="ddim", N=N, denoise=False, x_T=x_T)
        assert (nfe_t, nfe_s) == (2 * N, N)
        return (out - target).square().sum(1)

    before = distance_to_teacher()  # the student is the teacher: one step vs two
    loss_fn = ProgressiveDistillationLoss(sde, teacher_score, student_steps=N)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(200):
        x = MIX.sample(256, generator=g)
        loss = loss_fn(student_score, x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distance_to_teacher()
    d = after - before  # paired over the same 1000 prior draws
    se = d.std().item() / math.sqrt(len(d))
    assert d.mean().item() < -4 * se, (before.mean().item(), after.mean().item(), se)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="student_steps"):
        ProgressiveDistillationLoss(VPSDE(), MIX.score_fn(VPSDE()), student_steps=0)
    with pytest.raises(ValueError, match="schedule"):
        ProgressiveDistillationLoss(VPSDE(), MIX.score_fn(VPSDE()), student_steps=2, schedule="edm")
    with pytest.raises(ValueError, match="weighting"):
        ProgressiveDistillationLoss(VPSDE(), MIX.score_fn(VPSDE()), student_steps=2, weighting="snr")


def test_loss_weights_are_their_definitions():
    # Two x0 predictions at the same z: each weighting times the squared x0 difference is the
    # quantity it names, computed here from its definition.
    sde = VPSDE()
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.999, 0.7, 0.3, 0.05], dtype=torch.float64)
    t_next = torch.tensor([0.8, 0.3, 0.05, 1e-3], dtype=torch.float64)
    z, x0, x0b = (torch.randn(4, 2, generator=g, dtype=torch.float64) for _ in range(3))
    se = (x0 - x0b).square().sum(1)
    alpha, std = (c[:, None] for c in sde.marginal_coeffs(t))
    snr = (alpha / std).square()[:, 0]
    torch.testing.assert_close(loss_weight(sde, t, t_next, "truncated_snr") * se,
                               torch.maximum(snr, torch.ones(4, dtype=torch.float64)) * se)
    # v = alpha eps - std x0 with eps = (z - alpha x0) / std (Salimans & Ho, sec. 4)
    v = lambda x: alpha * (z - alpha * x) / std - std * x
    torch.testing.assert_close(loss_weight(sde, t, t_next, "snr_plus_one") * se, (v(x0) - v(x0b)).square().sum(1))
    # output: the two DDIM steps' outputs, in data units at t_next, times min(SNR(t_next), 1)
    alpha_next, std_next = sde.marginal_coeffs(t_next)
    moved = (ddim_step(sde, z, x0, t, t_next) - ddim_step(sde, z, x0b, t, t_next)) / alpha_next[:, None]
    expected = moved.square().sum(1) * torch.clamp((alpha_next / std_next).square(), max=1.0)
    torch.testing.assert_close(loss_weight(sde, t, t_next, "output") * se, expected)
    w = loss_weight(sde, t, t_next, "output")
    assert w[0] < 1e-2 * w[-1]  # the step that ends at high noise (SNR ~ 2e-3) counts little
