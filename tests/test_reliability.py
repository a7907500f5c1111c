"""Nothing lost, nothing silent: the checkpoint fallback never discards a good file, every setting
of every mode is checked before the first training step, user mistakes are one `error:` line with
exit status 2, no silent NaN, strict JSON, progress that moves within a batch."""
import json
import math
import subprocess
import sys
from pathlib import Path

import hypothesis
import pytest
import torch

import main
from sde_app import checkpoints
from sde_app.data.testing import write_fake_cifar10
from sde_lib import VPSDE, subVPSDE
from sde_lib.sampling import METHODS, sample
from test_app_cli import tiny_sampling
from test_app_training import tiny_toy

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=ROOT, timeout=180):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--noprogress", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_error_line(done):
    """The command failed with exit status 2 and said so in exactly one `error:` line, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return errors[0]


# ------------------------------------------------------------------------------------ fallback
def _save(ckdir, step, snapshot=False):
    state = {"step": step, "w": torch.full((3,), float(step))}
    return ckdir.save_snapshot(state, step) if snapshot else ckdir.save_resume(state)


def test_fallback_takes_the_newest_intact_file_and_never_rotates_over_it(tmp_path, caplog):
    """checkpoint.pt truncated, checkpoint.prev.pt at 3000, an intact snapshot at 4000: resume at
    4000, the damaged file moved aside (kept), and the next save keeps the good fallback."""
    ckdir = checkpoints.CheckpointDir(tmp_path)
    _save(ckdir, 3000)
    _save(ckdir, 4000)
    _save(ckdir, 4000, snapshot=True)
    blob = ckdir.resume_path.read_bytes()
    ckdir.resume_path.write_bytes(blob[: len(blob) // 2])
    state, path = ckdir.load_latest(move_aside=True)
    assert (state["step"], path.name) == (4000, "snapshot_00004000.pt")
    assert not ckdir.resume_path.exists()
    assert [p.name for p in ckdir.damaged()] == ["checkpoint.pt.damaged"]
    assert ckdir.damaged()[0].read_bytes() == blob[: len(blob) // 2]  # kept as it was
    _save(ckdir, 4100)  # the next save: nothing damaged is rotated over the good fallback
    assert checkpoints.load_state(ckdir.previous_path)["step"] == 3000
    assert checkpoints.load_state(ckdir.resume_path)["step"] == 4100


def test_a_damaged_resume_checkpoint_is_not_rotated_over_the_fallback(tmp_path):
    ckdir = checkpoints.CheckpointDir(tmp_path)
    _save(ckdir, 1)
    _save(ckdir, 2)
    ckdir.resume_path.write_bytes(ckdir.resume_path.read_bytes()[:50])  # damaged while running
    _save(ckdir, 3)
    assert checkpoints.load_state(ckdir.previous_path)["step"] == 1
    assert [p.name for p in ckdir.damaged()] == ["checkpoint.pt.damaged"]


def _damage_every_checkpoint(workdir):
    ckdir = checkpoints.CheckpointDir(workdir)
    for path in ckdir.candidates():
        path.write_bytes(path.read_bytes()[:100])
    return ckdir


def test_every_checkpoint_damaged_stops_training_and_sampling(tmp_path):
    config = tiny_sampling(tiny_toy(n_iters=20))
    main.run(config, "train", tmp_path, progress=False)
    ckdir = _damage_every_checkpoint(tmp_path)
    names = sorted(p.name for p in ckdir.candidates())
    with pytest.raises(ValueError) as err:
        main.run(tiny_sampling(tiny_toy(n_iters=40)), "train", tmp_path, progress=False)
    message = str(err.value)
    assert "every checkpoint" in message and "--fresh" in message and all(n in message for n in names)
    assert "\n" not in message
    damaged = sorted(f"{n}.damaged" for n in names)
    assert not ckdir.candidates() and sorted(p.name for p in ckdir.damaged()) == damaged  # kept, renamed
    with pytest.raises(ValueError, match=r"every checkpoint .* damaged .*--checkpoint=PATH"):
        main.run(tiny_sampling(tiny_toy(n_iters=20)), "sample", tmp_path, progress=False)
    # --fresh starts again from step 0 and keeps the damaged files.
    assert main.run(tiny_sampling(tiny_toy(n_iters=20)), "train", tmp_path, progress=False, fresh=True)["train"] == 20
    assert sorted(p.name for p in ckdir.damaged()) == damaged
    assert checkpoints.load_state(ckdir.resume_path)["step"] == 20


# ----------------------------------------------------------------- every mode checked up front
@pytest.mark.parametrize("modes,changes,words", [
    ("train,sample", {"sampling.N": 0}, ["N=0"]),
    ("train,eval", {"eval.rtol": -1.0}, ["eval.rtol=-1.0"]),
    ("train", {"training.snapshot_sampling": True, "sampling.method": "ddpm", "sampling.N": 3},
     ["snapshot samples", "N=3", "chain of N levels is invalid"]),
    ("train,sample", {"sampling.method": "langevin", "sde.name": "subvpsde"}, ["step_lr", "use step_lr <="]),
    ("train,eval", {"eval.num_points": 5000}, ["eval.num_points=5000", "has 64 points"]),
    ("train,inpaint", {"controllable.method": "repaint", "controllable.sampler": "ode"},
     ["controllable.sampler='ode'"]),
])
def test_later_modes_are_checked_before_training(tmp_path, modes, changes, words):
    config = tiny_sampling(tiny_toy())
    for field, value in changes.items():
        *groups, key = field.split(".")
        node = config
        for g in groups:
            node = node[g]
        node[key] = value
    with pytest.raises(ValueError) as err:
        main.run(config, modes, tmp_path / "w", progress=False)
    for w in words:
        assert w in str(err.value), str(err.value)
    assert not (tmp_path / "w").exists()  # not a single training step


# ---------------------------------------------------------------------- one line, exit status 2
@pytest.mark.parametrize("args,words", [
    (["--config=configs/nope.py"], ["--config='configs/nope.py': no such file"]),
    (["--config.training.n_iter=5"], ["no field 'training.n_iter'", "config.training.n_iters"]),
    (["--config.trainig.n_iters=5"], ["no group 'trainig'", "config.training.n_iters"]),
    (["--config.training.n_iters=abc"], ["n_iters=abc", "not a valid int"]),
    (["--config.sampling.predictor=ancestral_sampling"], ["moved", "--config.sampling.pc.predictor"]),
    (["--config.sampling.sde_solver=milstein"], ["now a group", "--config.sampling.sde_solver.solver"]),
    (["--nosuchflag"], ["nosuchflag"]),
])
def test_cli_mistakes_are_one_line(tmp_path, args, words):
    line = one_error_line(run_cli("--mode=train", f"--workdir={tmp_path / 'w'}", *args))
    for w in words:
        assert w in line, line
    assert not (tmp_path / "w").exists()


def test_cli_workdir_mistakes_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(run_cli("--mode=train", f"--workdir={tmp_path / 'file'}"))
    assert "is a file" in line
    # Root may write anywhere that is mounted writable: /sys is read-only in containers and on hosts.
    line = one_error_line(run_cli("--mode=train", "--workdir=/sys/score_sde_test"))
    assert "cannot be written" in line


def test_cli_truncated_cifar10_archive_is_one_line(tmp_path):
    write_fake_cifar10(tmp_path / "c", n_train=16, n_test=8)
    archive = tmp_path / "c" / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    line = one_error_line(run_cli("--config=configs/vp_cifar10.py", "--mode=train", f"--workdir={tmp_path / 'w'}",
                                  f"--config.data.root={tmp_path / 'c'}"))
    assert "cifar-10-python.tar.gz is damaged or incomplete" in line and "download" in line
    assert not (tmp_path / "w").exists()


def test_cli_accepts_the_runs_own_config_json(tmp_path):
    """The mismatch message tells users to pass the run's config.json: it works as --config."""
    done = run_cli("--mode=train", f"--workdir={tmp_path}", "--config.training.n_iters=20",
                   "--config.model.hidden_dim=32", "--config.training.checkpoint_freq=10",
                   "--config.data.num_train=512", "--config.data.num_test=64")
    assert done.returncode == 0, done.stderr
    done = run_cli(f"--config={tmp_path / 'config.json'}", "--mode=sample", f"--workdir={tmp_path}",
                   "--config.sampling.num_samples=16", "--config.sampling.batch_size=16",
                   "--config.sampling.ode.rtol=1e-3", "--config.sampling.ode.atol=1e-3")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "samples" / "step_00000020_ode.npz").is_file()


# ------------------------------------------------------------------------ no silent wrong result
def test_langevin_refuses_sub_vp_instead_of_returning_nan():
    with pytest.raises(ValueError, match="step_lr=2e-05.*subVPSDE.*use step_lr <="):
        sample(subVPSDE(), lambda x, t: -x, (8, 2), method="langevin", N=20)
    x, _ = sample(subVPSDE(), lambda x, t: -x, (8, 2), method="langevin", N=20, step_lr=1e-8,
                  generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_eval_json_is_strict(tmp_path):
    """One likelihood point: its standard error is undefined, written as null with a note."""
    config = tiny_sampling(tiny_toy(n_iters=10))
    config.eval.num_points = 1
    report = main.run(config, "train,eval", tmp_path, progress=False)["eval"]

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    stored = json.loads(Path(report["file"]).read_text(), parse_constant=refuse)
    nll = stored["likelihood"]["nll_nats_per_example"]
    assert nll["stderr"] is None and nll["stderr_note"] == "one value: no standard error"


# -------------------------------------------------------------------------------- progress
class Recorder:
    def __init__(self):
        self.updates = []

    def update(self, amount):
        self.updates.append(amount)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_sampler_reports_progress_within_a_batch(method):
    """A caller's bar gets fractions of the batch's work that add up to 1, many per batch."""
    bar = Recorder()
    sample(VPSDE(), lambda x, t: -x, (4, 2), method=method, N=30, progress=bar,
           generator=torch.Generator().manual_seed(0))
    assert len(bar.updates) >= 5, bar.updates
    assert math.isclose(sum(bar.updates), 1.0, rel_tol=1e-6), sum(bar.updates)
    assert all(u >= 0 for u in bar.updates)


# --------------------------------------------------------------------- random bad values
st = hypothesis.strategies

# Values no numeric option takes (besides the allowed exceptions below): NaN, infinities,
# negative numbers, booleans, text.
BAD = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.just(True),
                st.text(max_size=3), st.floats(max_value=-1e-9, allow_nan=False))
# Options of sample() and values they refuse beyond BAD (None and 0 where they are not defaults).
SAMPLE_OPTIONS = {("pc", "eps"): [None, 0, 1.0, 2.0], ("pc", "N"): [0, 2.5], ("pc", "snr"): [None, 0],
                  ("pc", "n_steps"): [None, 0, 1.5], ("ode", "rtol"): [None, 0], ("ode", "atol"): [None, 0],
                  ("ddim", "eta"): [None, 1.5], ("langevin", "step_lr"): [None, 0],
                  ("langevin", "n_steps_each"): [None, 0], ("dpm_solver", "order"): [None, 0, 4],
                  ("sde_solver", "dt"): [0]}


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(data=st.data())
def test_sample_refuses_random_bad_values_before_work(data):
    """sample() raises a one-line ValueError for every bad value of an option, before the score is
    evaluated: never a traceback from inside a sampler, never NaN samples."""
    (method, name), extra = data.draw(st.sampled_from(sorted(SAMPLE_OPTIONS.items())))
    value = data.draw(st.one_of(BAD, st.sampled_from(extra)))
    calls = []

    def score_fn(x, t):
        calls.append(1)
        return -x

    with pytest.raises(ValueError) as err:
        sample(VPSDE(), score_fn, (3, 2), method=method, **{name: value})
    assert "\n" not in str(err.value) and not calls


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(name=st.sampled_from(["rtol", "atol", "eps", "n_probes", "divergence", "method"]),
                  value=st.one_of(BAD, st.just("bogus"), st.just(0)))
def test_log_likelihood_refuses_random_bad_values(name, value):
    from sde_lib.likelihood import log_likelihood

    calls = []

    def score_fn(x, t):
        calls.append(1)
        return -x

    with pytest.raises((ValueError, TypeError)) as err:
        log_likelihood(VPSDE(), score_fn, torch.zeros(3, 2), **{name: value})
    assert "\n" not in str(err.value) and not calls


COUNTS = ["0", "-7"]          # integers that must be >= 1
REALS = ["0", "-7", "nan", "inf", "-inf"]  # numbers that must be finite and > 0
# config field -> command-line values it must refuse (beyond text that is not a number)
CONFIG_FIELDS = {
    "training.batch_size": COUNTS, "training.n_iters": COUNTS, "training.log_freq": COUNTS,
    "optim.lr": REALS, "optim.warmup": ["-7"], "model.ema_rate": ["1", "-7", "nan"],
    "sampling.eps": REALS + ["1", "2"], "sampling.N": COUNTS, "sampling.num_samples": COUNTS,
    "sampling.batch_size": ["-7"], "sampling.ode.rtol": REALS, "sampling.pc.snr": REALS,
    "eval.rtol": REALS, "eval.atol": REALS, "eval.eps": REALS + ["1"], "eval.batch_size": COUNTS,
    "eval.n_probes": COUNTS, "eval.num_points": ["-7"], "controllable.num_samples": COUNTS,
    "training.p_uncond": ["-7", "1.5", "nan"], "sde.beta_max": REALS, "sde.N": COUNTS,
    "data.num_train": COUNTS, "threads": ["-7"],
}


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(data=st.data())
def test_main_refuses_random_bad_config_values_in_one_line(tmp_path_factory, data):
    """Any bad value of a numeric field, given as on the command line: one-line ValueError before
    any work (no workdir created)."""
    from sde_app import factory

    field, values = data.draw(st.sampled_from(sorted(CONFIG_FIELDS.items())))
    value = data.draw(st.one_of(st.sampled_from(values), st.text(alphabet="x%!", min_size=1, max_size=3)))
    workdir = tmp_path_factory.mktemp("w") / "run"
    config = tiny_sampling(tiny_toy())
    try:
        factory.apply_overrides(config, [(field, value)])
    except ValueError as err:  # not even a number of the field's type
        assert "\n" not in str(err)
        return
    with pytest.raises(ValueError) as err:
        main.run(config, "train,sample,eval", workdir, progress=False)
    assert "\n" not in str(err.value), str(err.value)
    assert not workdir.exists()
