import math

import numpy as np
import pytest

import hwr.features
import hwr.model
import torch
from hwr.config import load_config
from hwr.model import build_model
from hwr.train import TrainError, fit, load_checkpoint, load_data

from conftest import TINY


def cfg(*extra):
    return load_config(overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def data():
    return load_data(cfg().data, progress=False)


def without_times(history):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in history]


def test_records_and_test_score(data):
    result = fit(cfg(), data)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "lr"}
    assert result.best_epoch == max(result.history, key=lambda r: r["val_acc"])["epoch"]
    assert 0 <= result.test_acc <= 1 and math.isfinite(result.test_loss)
    assert not result.diverged


def test_learns_on_the_synthetic_set(data):
    result = fit(cfg("model.activation=selu", "model.normalization=per_image", "train.epochs=10"), data)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.5
    assert max(r["val_acc"] for r in result.history) > 3 / 62  # clearly above chance


def test_same_seed_same_history_other_seed_differs(data):
    a, b, c = fit(cfg(), data), fit(cfg(), data), fit(cfg("train.seed=1"), data)
    assert without_times(a.history) == without_times(b.history)
    assert without_times(a.history) != without_times(c.history)


def test_on_epoch_sees_every_record_and_the_final_summary(data):
    seen = []
    fit(cfg(), data, on_epoch=lambda rec, summary, last: seen.append((rec["epoch"], last, summary["test_acc"])))
    assert [(e, last) for e, last, _ in seen] == [(1, False), (2, False), (3, True)]
    assert seen[-1][2] is not None and seen[0][2] is None


@pytest.mark.parametrize("trainable_from", ["none", "block5"])
def test_resume_equals_uninterrupted(tmp_path, data, trainable_from):
    config = cfg(f"model.trainable_from={trainable_from}", "train.epochs=4", "model.dropout=0.3")
    whole = fit(config, data)

    class Crash(Exception):
        pass

    def crash_after_two(record, summary, last):
        if record["epoch"] == 2:
            raise Crash

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Crash):
        fit(config, data, checkpoint_path=ckpt, on_epoch=crash_after_two)
    assert len(load_checkpoint(ckpt)["history"]) == 2
    resumed = fit(config, data, checkpoint_path=ckpt, resume_from=ckpt)
    assert without_times(resumed.history) == without_times(whole.history)
    assert resumed.test_acc == whole.test_acc and resumed.best_epoch == whole.best_epoch


def test_resume_refuses_another_config(tmp_path, data):
    ckpt = tmp_path / "checkpoint.pt"
    fit(cfg("train.epochs=1"), data, checkpoint_path=ckpt)
    with pytest.raises(TrainError, match="another config"):
        fit(cfg("train.epochs=1", "train.lr=0.1"), data, resume_from=ckpt)


def test_nan_loss_ends_the_run_as_diverged(data):
    result = fit(cfg("train.optimizer=sgd", "train.lr=1e12", "train.epochs=5"), data)
    assert result.diverged
    assert 1 <= len(result.history) < 5
    last = result.history[-1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["val_loss"]))


def test_cached_frozen_features_give_the_same_history(data, monkeypatch):
    config = cfg("model.trainable_from=block5", "model.normalization=per_image", "train.epochs=2")
    cached = fit(config, data)
    monkeypatch.setattr(hwr.features, "MAX_BYTES", 0)  # too big to keep -> frozen layers run every step
    uncached = fit(config, data)
    for a, b in zip(cached.history, uncached.history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    assert cached.test_acc == pytest.approx(uncached.test_acc, abs=1e-6)


def test_given_frozen_features_give_the_same_history_without_a_conv_base(data, monkeypatch):
    """The Ray trial's path: the frozen output comes from the object store and no conv base is built."""
    config = cfg("train.epochs=2")  # trainable_from none
    reference = fit(config, data)
    model = build_model(config.model, config.data.image_size, seed=config.train.seed)
    given = hwr.features.compute_frozen(model, data.images, torch.device("cpu"))
    monkeypatch.setattr(hwr.model, "load_conv_base", lambda *a: pytest.fail("conv base built"))
    result = fit(config, data, features=given)
    assert without_times(result.history) == without_times(reference.history)
    assert result.test_acc == reference.test_acc


def test_frozen_features_are_computed_once(data, cache_dir, monkeypatch):
    config = cfg("model.normalization=imagenet")
    fit(config, data)
    files = sorted((cache_dir / "features").glob("*.npy"))
    assert files

    def no_compute(*a, **k):
        raise AssertionError("frozen features recomputed")

    monkeypatch.setattr(hwr.features, "compute_frozen", no_compute)
    fit(config, data)
    assert sorted((cache_dir / "features").glob("*.npy")) == files


def test_frozen_key_separates_what_changes_the_activations(data):
    from hwr.features import frozen_key

    base = frozen_key(cfg("model.trainable_from=block5"), data.key)
    assert frozen_key(cfg("model.trainable_from=block5", "model.activation=selu"), data.key) == base
    assert frozen_key(cfg("model.trainable_from=block5", "train.lr=0.1"), data.key) == base
    for change in ("model.normalization=none", "train.seed=3", "model.trainable_from=block4", "data.image_size=64"):
        assert frozen_key(cfg("model.trainable_from=block5", change), data.key) != base, change
    assert frozen_key(cfg("model.trainable_from=all"), data.key) is None
    assert frozen_key(cfg("model.trainable_from=block5"), "other-data") != base
    # a fixed random base (model.base_seed) is one frozen set for every seed, like pretrained weights
    fixed = [frozen_key(cfg("model.trainable_from=block5", "model.base_seed=0", f"train.seed={s}"), data.key)
             for s in (0, 1, 2)]
    assert len(set(fixed)) == 1 and fixed[0] == base  # train.seed 0 draws the same base as base_seed 0
    assert frozen_key(cfg("model.trainable_from=block5", "model.base_seed=1"), data.key) != base


def test_split_is_independent_of_the_training_seed(data):
    other = load_data(cfg("train.seed=5").data, progress=False)
    assert np.array_equal(data.splits.train, other.splits.train)
    moved = load_data(cfg("data.split_seed=1").data, progress=False)
    assert not np.array_equal(data.splits.train, moved.splits.train)
