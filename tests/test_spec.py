"""Run specs (what a cell's hash covers) and the layering of the modules."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.engine import NUMERICS_VERSION, TrainConfig
from benchmark.models import ModelConfig
from benchmark.protocol import Cell, get_profile
from benchmark.spec import LRSelect, RunSpec
from datagen import get_preset

REPO = Path(__file__).resolve().parents[1]
TASK = get_preset("kdd18")
TRAIN = TrainConfig(steps=100, batch_size=32, eval_every=50, n_test=100)


def _spec(**changes) -> RunSpec:
    base = dict(model=ModelConfig.of("mmoe"), task=TASK, corr=0.5, train=TRAIN, lr=3e-3)
    return RunSpec(**(base | changes))


def test_identical_specs_share_a_key_and_every_field_changes_it():
    key = _spec().key()
    assert _spec().key() == key and _spec(corr=0.5000000001).key() == key
    changed = [
        _spec(model=ModelConfig.of("mmoe", num_experts=4)),
        _spec(model=ModelConfig.of("omoe")),
        _spec(task=TASK.replace(c=2.0)),
        _spec(task=TASK.replace(alpha=(TASK.alpha[0] + 1e-3,) + TASK.alpha[1:])),
        _spec(task=TASK.replace(noise_std=0.2)),
        _spec(task=TASK.replace(standardize=False)),
        _spec(corr=0.6),
        _spec(train=dataclasses.replace(TRAIN, steps=200)),
        _spec(train=dataclasses.replace(TRAIN, batch_size=16)),
        _spec(train=dataclasses.replace(TRAIN, n_train=1000)),
        _spec(lr=1e-3),
        _spec(lr=LRSelect()),
        _spec(lr=LRSelect(grid=(1e-3, 1e-2))),
        _spec(seed=1),
        _spec(numerics=NUMERICS_VERSION + 1),
    ]
    keys = [s.key() for s in changed]
    assert key not in keys and len(set(keys)) == len(keys)
    # The preset's name is a label: it does not enter the hash.
    assert _spec(task=TASK.replace(name="another name")).key() == key


def test_a_changed_default_changes_the_key(monkeypatch):
    """The hash holds the resolved sizes and hyper-parameters, not only the overrides: a
    default changed in the code never reuses results stored under the old one."""
    from benchmark import objectives
    from benchmark.models import _hyper_fields, get

    key, gradnorm = _spec().key(), _spec(objective="gradnorm").key()
    # An override equal to the default is the same run: the same label and key.
    assert _spec(model=ModelConfig.of("mmoe", num_experts=8)).key() == key
    monkeypatch.setattr(_hyper_fields(get("mmoe").cls)["expert_units"], "default", 32)
    assert _spec().canonical()["model"]["sizes"]["expert_units"] == 32
    assert _spec().key() != key
    cls = type(objectives.get("gradnorm"))
    monkeypatch.setattr(cls, "hyper", lambda self: {"alpha": 0.5, "lr": 1e-3})
    assert _spec(objective="gradnorm").key() != gradnorm


def test_an_objective_instance_sets_its_hyper_parameters():
    from benchmark import objectives

    by_name = _spec(objective="gradnorm")
    assert _spec(objective=objectives.get("gradnorm")).key() == by_name.key()
    tuned = _spec(objective=objectives.get("gradnorm", alpha=0.5))
    assert tuned.key() != by_name.key() and tuned.objective_name == "gradnorm"
    hyper = {"alpha": 0.5, "lr": 1e-3}
    assert tuned.canonical()["objective"] == {"name": "gradnorm", "hyper": hyper}
    # Equal settings hash alike, whatever their Python or numpy type.
    as_int = _spec(objective=objectives.get("cagrad", c=1, iters=np.int64(50)))
    assert as_int.key() == _spec(objective=objectives.get("cagrad", c=np.float32(1.0))).key()
    with pytest.raises(ValueError, match="iters must be an integer"):
        objectives.get("cagrad", iters=2.5)
    with pytest.raises(ValueError, match="objective must be a name"):
        _spec(objective=3)
    with pytest.raises(ValueError, match="has no hyper-parameter|unknown|alpha"):
        objectives.get("pcgrad", alpha=1.0)


def test_objective_is_named_in_the_hash_and_validated():
    assert _spec().canonical()["objective"] == {"name": "equal", "hyper": {}}
    assert _spec(objective="gradnorm").canonical()["objective"] == {
        "name": "gradnorm",
        "hyper": {"alpha": 1.5, "lr": 1e-3},
    }
    assert _spec(objective="equal").key() == _spec().key()
    assert _spec(objective="pcgrad").key() != _spec().key()
    with pytest.raises(ValueError, match="objective must be one of: equal, .*pcgrad"):
        _spec(objective="nope")


def test_a_cosine_matrix_spec():
    r = ((1.0, 0.5, 0.0), (0.5, 1.0, 0.0), (0.0, 0.0, 1.0))
    spec = _spec(corr=r, train=dataclasses.replace(TRAIN, n_tasks=3))
    assert spec.is_matrix and spec.corr_array().shape == (3, 3)
    assert spec.canonical()["corr"] == [list(row) for row in r]
    with pytest.raises(ValueError, match="n_tasks"):
        _spec(corr=r)  # a 3x3 matrix for two tasks
    with pytest.raises(ValueError, match="explicit x"):
        Cell(spec, 2)
    assert Cell(spec, 2, x=0.5).x == 0.5


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"corr": 1.5}, r"correlation p must lie in \[-1, 1\]"),
        ({"lr": 0.0}, "learning rate lr must be a finite number > 0"),
        ({"lr": float("nan")}, "learning rate lr must be a finite number > 0"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"model": ModelConfig("nope")}, "unknown architecture 'nope'"),
    ],
)
def test_bad_specs_name_the_parameter(changes, message):
    with pytest.raises(ValueError, match=message):
        _spec(**changes)


def test_lr_rule_is_validated():
    with pytest.raises(ValueError, match="LRSelect.grid"):
        LRSelect(grid=(0.0,))
    with pytest.raises(ValueError, match="LRSelect.n_runs"):
        LRSelect(n_runs=0)


def test_profiles_hash_constants_not_names():
    prof = get_profile("default")
    spec = prof.spec(ModelConfig.of("mmoe"), 0.5)
    assert spec.canonical()["task"]["alpha"] == list(TASK.alpha)
    assert "name" not in spec.canonical()["task"]
    assert spec.numerics == NUMERICS_VERSION
    np.testing.assert_array_equal(spec.corr_array(), np.float32(0.5))


# ----------------------------------------------------------------------------- layering

# datagen -> models, objectives -> engine -> spec, protocol -> runner -> stats -> report/plots
# -> the experiments package (its registry and plugins) -> cli. A module imports only from
# its own layer or below; there is no exception.
LAYERS = {
    "datagen": 0,
    "benchmark._plugins": 0,
    "benchmark._host": 0,
    "benchmark.models": 1,
    "benchmark.objectives": 1,
    "benchmark.engine": 2,
    "benchmark.spec": 3,
    "benchmark.protocol": 3,
    "benchmark.runner": 4,
    "benchmark.stats": 5,
    "benchmark.report": 6,
    "benchmark.plots": 6,
    "benchmark.experiments": 7,
    "benchmark.cli": 8,
    "benchmark.bench": 8,
    "benchmark.gpu_check": 8,
    "benchmark.__main__": 8,
    "benchmark": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return LAYERS[name]
    raise AssertionError(f"module {module} has no layer")


def _project_modules() -> dict[str, Path]:
    files = list((REPO / "benchmark").rglob("*.py")) + list((REPO / "datagen").rglob("*.py"))
    return {_module_name(f): f for f in files}


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every project module that ``module`` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m.split(".")[0] in ("benchmark", "datagen")}


def test_no_module_imports_up_the_layers():
    modules = _project_modules()
    known = set(modules)
    violations = []
    for module, path in modules.items():
        for target in _imports(module, path, known):
            if _layer(target) > _layer(module):
                violations.append(f"{module} (layer {_layer(module)}) imports {target} "
                                  f"(layer {_layer(target)})")  # fmt: skip
    assert not violations, "\n".join(violations)


def test_the_layering_check_catches_an_upward_import(tmp_path):
    path = tmp_path / "runner.py"
    path.write_text("from .plots import figure\n")
    known = set(_project_modules())
    (target,) = _imports("benchmark.runner", path, known)
    assert target == "benchmark.plots" and _layer(target) > _layer("benchmark.runner")


def test_an_architecture_revision_enters_the_hash(monkeypatch):
    from benchmark import models

    spec = RunSpec(model=ModelConfig.of("mmoe"), task=TASK, corr=0.5, train=TRAIN, lr=1e-3)
    before = spec.key()
    assert "revision" not in spec.canonical()["model"]  # revision 0: the hash of before
    entry = models.get("mmoe")
    monkeypatch.setitem(models._REGISTRY, "mmoe", dataclasses.replace(entry, revision=1))
    assert spec.canonical()["model"]["revision"] == 1 and spec.key() != before
    assert models.get("dselect_k").revision >= 1


def test_the_device_check_needs_only_what_a_cuda_machine_has():
    """`gpu-check` runs with jax, flax, optax, numpy, scipy and matplotlib only: tqdm (an
    install of this project's) is not imported on its path."""
    script = (
        "import sys; sys.modules['tqdm'] = None\n"
        "from benchmark import cli, gpu_check\n"
        "cli.build_parser().parse_args(['gpu-check', '--out', 'x'])\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
