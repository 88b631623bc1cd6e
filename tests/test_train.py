import math

import numpy as np
import pytest

import hwr.features
import hwr.model
import torch
from hwr.config import load_config
from hwr.model import build_model
from hwr.train import CheckpointPolicy, TrainError, _Inputs, evaluate, fit, load_checkpoint, load_data, save_checkpoint

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


class Crash(Exception):
    pass


def crash_after(epoch):
    def on_epoch(record, summary, last):
        if record["epoch"] == epoch:
            raise Crash
    return on_epoch


@pytest.mark.parametrize("trainable_from, every, keep_best", [("none", 1, False), ("block5", 1, True),
                                                              ("none", 2, True)])
def test_resume_equals_uninterrupted(tmp_path, data, trainable_from, every, keep_best):
    """Crash after epoch 3; the run resumes from its last checkpoint (epoch 3, or 2 when every 2 epochs)."""
    config = cfg(f"model.trainable_from={trainable_from}", "train.epochs=5", "model.dropout=0.3",
                 "train.optimizer=sgd", "train.lr=0.05")
    policy = CheckpointPolicy(every=every, seconds=0, keep_best=keep_best)
    whole = fit(config, data)

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Crash):
        fit(config, data, checkpoint_path=ckpt, policy=policy, on_epoch=crash_after(3))
    assert len(load_checkpoint(ckpt)["history"]) == 3 // every * every
    resumed = fit(config, data, checkpoint_path=ckpt, resume_from=ckpt, policy=policy)
    assert without_times(resumed.history) == without_times(whole.history)
    assert (resumed.test_acc, resumed.test_loss, resumed.best_epoch) == (whole.test_acc, whole.test_loss,
                                                                         whole.best_epoch)
    again = fit(config, data, resume_from=ckpt)  # from the final checkpoint: nothing left to train
    assert without_times(again.history) == without_times(whole.history) and again.test_acc == whole.test_acc


def score(config, data, weights):
    """(test_loss, test_acc) of `weights` on the run's inputs (its cached frozen features), as fit scores them."""
    cpu = torch.device("cpu")
    model = build_model(config.model, config.data.image_size, seed=config.train.seed)
    model.load_trainable_state(weights)
    z = hwr.features.frozen_features(model, data.images, hwr.features.frozen_key(config, data.key), cpu)
    return evaluate(model, _Inputs(model, data, cpu, z), data.splits.test, cpu)


def test_the_test_score_is_that_of_the_best_validation_weights(tmp_path, data):
    """Scored when validation improves, without keeping the weights: what scoring them at the end gives."""
    result = fit(cfg("train.epochs=4", "train.optimizer=sgd", "train.lr=0.05"), data)
    longer = cfg("train.epochs=5", "train.optimizer=sgd", "train.lr=0.05")  # the same first 4 epochs
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Crash):  # stop at the best epoch with its float32 weights in a resume checkpoint
        fit(longer, data, checkpoint_path=ckpt, policy=CheckpointPolicy(seconds=0),
            on_epoch=crash_after(result.best_epoch))
    assert score(longer, data, load_checkpoint(ckpt)["model"]) == (result.test_loss, result.test_acc)


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


@pytest.mark.parametrize("trainable_from", ["none", "block5"])
def test_checkpoints_hold_what_resuming_needs_and_nothing_twice(tmp_path, data, trainable_from):
    config = cfg(f"model.trainable_from={trainable_from}", "train.epochs=3", "train.optimizer=sgd")
    model = build_model(config.model, config.data.image_size)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Crash):
        fit(config, data, checkpoint_path=ckpt, policy=CheckpointPolicy(seconds=0, keep_best=False),
            on_epoch=crash_after(2))
    resume = load_checkpoint(ckpt)
    # float32 trainable weights + float32 SGD momentum, no frozen layer, no best copy
    assert resume["best"] is None and not resume["final"]
    assert all(v.dtype == torch.float32 for v in resume["model"].values())
    assert tensor_bytes(resume["model"]) == tensor_bytes(resume["optimizer"]) == 4 * trainable
    fit(config, data, checkpoint_path=ckpt, resume_from=ckpt, policy=CheckpointPolicy(keep_best=False))
    final = load_checkpoint(ckpt)  # no optimizer state; the last weights in float16, for prediction
    assert final["final"] and final["optimizer"] is None and final["best"] is None
    assert tensor_bytes(final) == 2 * trainable and final["best_test"] is not None
    fit(config, data, checkpoint_path=ckpt, policy=CheckpointPolicy(keep_best=True))
    kept = load_checkpoint(ckpt)  # the best weights instead of the last ones, not both
    assert kept["model"] is None and tensor_bytes(kept["best"]) == 2 * trainable


def test_the_default_policy_writes_only_the_final_checkpoint_of_a_short_run(tmp_path, data):
    written = []
    fit(cfg(), data, checkpoint_path=tmp_path / "c.pt", on_epoch=lambda r, s, last: written.append(s["checkpoint_epoch"]))
    assert written == [None, None, 3]
    every_second = []
    fit(cfg("train.epochs=5"), data, checkpoint_path=tmp_path / "d.pt", policy=CheckpointPolicy(every=2, seconds=0),
        on_epoch=lambda r, s, last: every_second.append(s["checkpoint_epoch"]))
    assert every_second == [None, 2, 2, 4, 5]


def test_policy_due():
    assert CheckpointPolicy(every=1, seconds=0).due(1, 0.0)
    assert not CheckpointPolicy(every=1, seconds=60).due(1, 59.9) and CheckpointPolicy(every=1, seconds=60).due(1, 60)
    assert not CheckpointPolicy(every=3, seconds=0).due(2, 100) and CheckpointPolicy(every=3, seconds=0).due(6, 0)
    assert not CheckpointPolicy(every=0, seconds=0).due(1, 1e9)


def test_float16_best_weights_score_as_the_float32_ones(tmp_path, data):
    config = cfg("train.epochs=4")
    fit(config, data, checkpoint_path=tmp_path / "c.pt", policy=CheckpointPolicy(keep_best=True))
    state = load_checkpoint(tmp_path / "c.pt")
    assert all(v.dtype == torch.float16 for v in state["best"].values())
    loss, acc = score(config, data, state["best"])
    exact_loss, exact_acc = state["best_test"]  # scored with the float32 weights during training
    assert acc == pytest.approx(exact_acc, abs=1 / len(data.splits.test))
    assert loss == pytest.approx(exact_loss, rel=1e-3)


def test_older_checkpoints_are_read_but_not_resumed(tmp_path, data):
    config = cfg("train.epochs=1")
    ckpt = tmp_path / "checkpoint.pt"
    fit(config, data, checkpoint_path=ckpt)
    state = load_checkpoint(ckpt)
    state["format"] = 1
    save_checkpoint(ckpt, state)
    assert load_checkpoint(ckpt)["format"] == 1
    with pytest.raises(TrainError, match="older hwr"):
        fit(config, data, resume_from=ckpt)


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


# ------------------------------------------------------------------ evaluations inside an epoch (issue 19)

def test_evaluations_inside_epochs_leave_training_unchanged(data):
    """train.evals_per_epoch=4: four evaluations an epoch at evenly spaced steps, fractional epochs, the
    epoch's last one equal to the epoch record, and the same training as with one evaluation an epoch."""
    many = fit(cfg("train.evals_per_epoch=4"), data)
    one = fit(cfg("train.evals_per_epoch=1"), data)
    steps = math.ceil(len(data.splits.train) / 32)
    assert [e["step"] for e in many.evals[:4]] == [round(j * steps / 4) for j in (1, 2, 3, 4)]
    assert len(many.evals) == 4 * 3 and [e["epoch_end"] for e in many.evals] == [False, False, False, True] * 3
    assert [e["epoch"] for e in many.evals if e["epoch_end"]] == [1.0, 2.0, 3.0]
    assert all(0 < b["epoch"] - a["epoch"] <= 0.5 for a, b in zip(many.evals, many.evals[1:]))
    assert without_times(many.history) == without_times(one.history)  # evaluating does not change training
    for rec, end in zip(many.history, [e for e in many.evals if e["epoch_end"]]):
        assert end["val_loss"] == rec["val_loss"] and end["val_acc"] == rec["val_acc"]
    # the training loss of an evaluation is over the batches since the previous one: the epoch's is their mean
    first = many.evals[:4]
    sizes = np.diff([0] + [min(e["step"] * 32, len(data.splits.train)) for e in first])
    assert np.average([e["train_loss"] for e in first], weights=sizes) == pytest.approx(many.history[0]["train_loss"])
    assert all(e["val_nll_ts"] <= e["val_loss"] + 1e-9 and e["temperature"] > 0 for e in many.evals)
    assert [e["elapsed_s"] for e in many.evals] == sorted(e["elapsed_s"] for e in many.evals)


def test_eval_points_are_evenly_spaced_and_end_the_epoch():
    from hwr.train import eval_points

    assert eval_points(72, 8) == [9, 18, 27, 36, 45, 54, 63, 72]
    assert eval_points(3, 8) == [1, 2, 3]  # never more evaluations than steps
    assert eval_points(10, 1) == [10]


def test_temperature_scaling_recovers_a_known_temperature():
    """Labels drawn from softmax(z / 2.5): the fitted T is near 2.5 and the scaled NLL is the best among
    temperatures around it; for logits already calibrated T stays near 1."""
    from hwr.train import temperature_scaled_nll

    gen = torch.Generator().manual_seed(0)
    z = 4.0 * torch.randn(20000, 10, generator=gen)
    for true_t in (2.5, 1.0, 0.4):
        y = torch.multinomial(torch.softmax(z / true_t, 1), 1, generator=gen).squeeze(1)
        nll, t = temperature_scaled_nll(z, y)
        assert t == pytest.approx(true_t, rel=0.05)
        for other in (t * 0.9, t * 1.1):
            assert nll < torch.nn.functional.cross_entropy(z / other, y).item()
    nan_nll, nan_t = temperature_scaled_nll(torch.full((3, 4), float("nan")), torch.tensor([0, 1, 2]))
    assert math.isnan(nan_nll) and math.isnan(nan_t)


@pytest.mark.parametrize("init", ["glorot", "paired"])
def test_head_inits_pair_initial_weights_across_activations(init):
    """`glorot`: the same weights for SELU and ReLU at one seed; `paired`: the same draws, each scaled by its
    activation's scheme (LeCun uniform for SELU, Glorot uniform for ReLU); `auto` shares nothing."""
    from hwr.config import ModelConfig

    def head(activation, how):
        m = build_model(ModelConfig(weights="none", trainable_from="none", activation=activation, init=how), 32,
                        seed=3, conv_base=False)
        return [p.detach() for n, p in m.head.named_parameters() if n.endswith("weight")]

    relu, selu = head("relu", init), head("selu", init)
    for r, s in zip(relu, selu):
        fan_out, fan_in = r.shape
        if init == "glorot":
            assert torch.equal(r, s)
        else:
            ratio = math.sqrt(3.0 / fan_in) / math.sqrt(6.0 / (fan_in + fan_out))
            assert torch.allclose(s, r * ratio, rtol=1e-5, atol=1e-7)
            assert r.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out)) + 1e-6
    auto_r, auto_s = head("relu", "auto"), head("selu", "auto")
    assert not torch.allclose(auto_r[0] / auto_r[0].std(), auto_s[0] / auto_s[0].std(), atol=0.1)


def test_rmsprop_trains(data):
    result = fit(cfg("train.optimizer=rmsprop", "train.lr=1e-3"), data)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
