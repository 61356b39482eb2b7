"""Learning-rate schedules: their shapes, validation, hashing, and no recompilation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmark import engine
from benchmark.engine import Schedule, TrainConfig, run_keys, train_many
from benchmark.models import ModelConfig
from datagen import get_preset

STEPS = 100


def _shape(schedule, steps=STEPS):
    return np.array([float(schedule.factor(i, steps)) for i in range(steps)])


def test_warmup_stable_decay():
    f = _shape(Schedule("wsd", warmup=0.1, decay=0.2))
    np.testing.assert_allclose(f[:10], np.arange(1, 11) / 10, rtol=1e-6)  # linear warmup
    assert np.all(f[10:80] == 1.0)
    np.testing.assert_allclose(f[80:], (STEPS - np.arange(80, STEPS)) / 20, rtol=1e-6)
    assert f[-1] == pytest.approx(0.05)


def test_cosine_and_constant():
    f = _shape(Schedule("cosine"))
    assert f[0] == 1.0 and np.all(np.diff(f) <= 0) and f[-1] < 1e-3
    assert f[STEPS // 2] == pytest.approx(0.5, abs=0.02)
    assert np.all(_shape(Schedule("constant")) == 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "step"}, "schedule kind must be one of: constant, wsd, cosine"),
        ({"decay": 1.5}, r"schedule decay must be a fraction in \[0, 1\]"),
        ({"warmup": -0.1}, r"schedule warmup must be a fraction in \[0, 1\]"),
        ({"warmup": 0.9, "decay": 0.2}, "warmup \\+ decay must be at most 1"),
    ],
)
def test_bad_schedules_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


def test_no_schedule_keeps_the_hash_and_a_schedule_changes_it():
    cfg = TrainConfig(steps=100, batch_size=8, eval_every=50, n_test=32)
    assert "schedule" not in cfg.to_dict()
    wsd = dataclasses.replace(cfg, schedule=Schedule())
    assert wsd.to_dict()["schedule"] == {"kind": "wsd", "warmup": 0.0, "decay": 0.2}
    assert dataclasses.replace(cfg, schedule=Schedule(decay=0.1)).to_dict() != wsd.to_dict()


def test_a_schedule_trains_and_the_peak_lr_does_not_recompile():
    cfg = TrainConfig(steps=20, batch_size=8, eval_every=10, n_test=32, schedule=Schedule())
    spec, model = get_preset("kdd18", d=8), ModelConfig.of("shared_bottom")
    keys = run_keys(0, 2)
    a = train_many(keys, 0.5, 3e-3, model=model, task=spec, cfg=cfg, devices=1)
    b = train_many(keys, 0.5, 1e-2, model=model, task=spec, cfg=cfg, devices=1)
    const = dataclasses.replace(cfg, schedule=None)
    c = train_many(keys, 0.5, 3e-3, model=model, task=spec, cfg=const, devices=1)
    assert np.all(np.isfinite(a["final"])) and not np.allclose(a["final"], b["final"])
    assert not np.allclose(a["final"], c["final"])  # the decay changes the last steps
    np.testing.assert_array_equal(a["curves"][:, 1], c["curves"][:, 1])  # same until decay
    fn = engine.trainer(model, spec, cfg, 1)
    assert fn._cache_size() == 1
