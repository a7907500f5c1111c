"""`--mode consistency`: bad settings are named before any work (the run itself, its checkpoint
and sampling it: tests/test_app_distill.py, which shares the teacher)."""
import pytest

from configs import vp_toy
from sde_app import factory


@pytest.mark.parametrize("field, value, message", [
    ("kind", "improved", "consistency.kind"),
    ("n_levels", 1, "n_levels=1"),
    ("rate", 1.0, "config.consistency.rate=1.0"),
    ("sigma_data", 0.0, "config.consistency.sigma_data=0.0"),
    ("eps", 0.0, "config.consistency.eps=0.0"),
])
def test_bad_consistency_settings_are_named(field, value, message):
    config = vp_toy.get_config()
    config.consistency[field] = value
    with pytest.raises(ValueError, match=message):
        factory.build_experiment(config, ["consistency"])


def test_consistency_distillation_without_a_teacher_stops_before_any_work(tmp_path):
    """Consistency distillation reads a trained teacher: without one, the up-front check names the
    fix and nothing is written; consistency training needs none and passes the same check."""
    import main
    from sde_app.modes import MODES

    config = vp_toy.get_config()
    config.consistency.kind = "distillation"
    with pytest.raises(ValueError, match="--mode=consistency needs a trained model"):
        main.run(config, ["consistency"], tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
    config.consistency.kind = "training"
    exp = factory.build_experiment(config, ["consistency"])
    assert not MODES["consistency"].reads_weights(exp)
