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
