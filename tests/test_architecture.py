"""The layout holds: the library imports nothing of the application, only the factory (and
main.py) reads the configuration, no import circles, and every sampler option is declared once
and reachable from a config override."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from configs import default_config
from sde_app import factory
from sde_lib import controllable as controllable_lib
from sde_lib import sampling as sampling_lib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sde_lib", "sde_app", "models", "configs")
APPLICATION = ("sde_app", "models", "configs", "main", "ml_collections", "absl", "tensorboard", "PIL",
               "matplotlib")


def project_modules():
    """{module name: path} of every project module (packages, their modules, main.py)."""
    found = {"main": ROOT / "main.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def test_importing_the_library_imports_nothing_of_the_application():
    code = ("import sys, sde_lib; import sde_lib.sampling, sde_lib.likelihood, sde_lib.controllable;"
            f" print(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(APPLICATION)!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _reads_config(tree):
    """(line, text) of every `config.<x>`, `cfg.<x>` or `config[...]` in the code (not in strings)."""
    for node in ast.walk(tree):
        base = node.value if isinstance(node, (ast.Attribute, ast.Subscript)) else None
        if isinstance(base, ast.Name) and base.id in ("config", "cfg"):
            yield node.lineno, ast.unparse(node)


def test_only_the_factory_and_main_read_the_config():
    offenders = []
    for name, path in project_modules().items():
        if name == "main" or name.startswith(("sde_app.factory", "configs")):
            continue
        tree = ast.parse(path.read_text())
        offenders += [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in _reads_config(tree)]
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in imports:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] == "ml_collections" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports ml_collections")
    assert not offenders, "\n".join(offenders)


def import_graph():
    """{module: {project modules it imports}}, function-level imports included (a lazy import
    that breaks a circle is still a circle)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_no_import_circles():
    graph = import_graph()
    assert graph["sde_lib.sampling"] and "sde_lib.grids" in graph["sde_lib.samplers.ddim"]  # the parser works
    # A package's __init__ re-exporting its modules is not a circle with them: drop package -> child edges.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


# ---------------------------------------------------------------------------- sampler options
# A value different from the default for each option that is not a number or a bool (a new
# option must be added here: the test fails on an option it cannot set).
OTHER_VALUE = {
    "predictor": ("reverse_diffusion", "ancestral_sampling"), "corrector": ("ald", "langevin"),
    "step_size_rule": ("per_example", "batch"), "corrector_update": ("euler_maruyama", "leimkuhler_matthews"),
    "schedule": ("edm", "uniform"), "solver": ("heun", "milstein"), "error_norm": ("per_example", "rms"),
    "controller": ("pi", "torchdiffeq"),
    "variance": ("posterior", "transition"),
    "variant": ("bh1", "bh2"),
    "respace": ("10", "20"),
}


# Options that only apply together with another one.
COMPANIONS = {("ode", "error_norm"): [("sampling.ode.solver", "dopri5")],
              ("ode", "controller"): [("sampling.ode.solver", "dopri5")]}


def _other_text(name, current, kind):
    """Command-line text of a value of option `name` other than its `current` one."""
    if kind is bool:
        return str(not current)
    if kind in (int, float) and current is not None:
        return str(current + 1 if kind is int else current * 2 if current else 0.5)
    if kind is float:  # an optional number (dt)
        return "0.01"
    assert name in OTHER_VALUE, f"add values for option {name!r} to OTHER_VALUE"
    return next(v for v in OTHER_VALUE[name] if v != current)


@pytest.mark.parametrize("method", sorted(sampling_lib.METHODS))
def test_every_sampler_option_is_set_by_a_config_override(method):
    declaration = sampling_lib.METHODS[method]
    for option in declaration.option_defaults():
        kind = declaration.option_types()[option]
        default = default_config().sampling[method][option]
        text = _other_text(option, default, kind)
        text = {("dpm_solver", "order"): "1", ("unipc", "order"): "2"}.get((method, option), text)
        companions = COMPANIONS.get((method, option), [])
        config = default_config()
        config.data.dataset = "gaussian_mixture"
        factory.apply_overrides(config, [("sampling.method", method), *companions,
                                         (f"sampling.{method}.{option}", text)])
        sampler = factory.build_experiment(config, ["sample"], check_network=False).sampling.sampler
        value = sampler.method.options()[option]
        assert value != default and str(value) == text, (option, value, text)


@pytest.mark.parametrize("method", sorted(controllable_lib.METHODS))
def test_every_inpainting_option_is_set_by_a_config_override(method):
    declaration = controllable_lib.METHODS[method]
    for option in declaration.option_defaults():
        default = default_config().controllable[method][option]
        text = _other_text(option, default, declaration.option_types()[option])
        config = default_config()
        config.data.dataset = "gaussian_mixture"
        sampler = declaration.samplers[0]
        factory.apply_overrides(config, [("controllable.method", method), ("controllable.sampler", sampler),
                                         (f"controllable.{method}.{option}", text)])
        inpainter = factory.build_experiment(config, ["inpaint"], check_network=False).controllable.inpainter
        assert str(inpainter.method.options()[option]) == text


def test_docs_option_table_is_the_declarations():
    table = sampling_lib.options_table()
    assert all(f"`{m}`" in table for m in sampling_lib.METHODS)
    assert table in (ROOT / "docs" / "sampling.md").read_text(), (
        "docs/sampling.md: paste the output of `python -c 'from sde_lib.sampling import options_table;"
        " print(options_table())'`")
