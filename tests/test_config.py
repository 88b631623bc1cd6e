import pytest

from hwr.config import Config, ConfigError, config_from_dict, load_config
from study.config import load_study, study_from_dict


def test_defaults_are_the_papers_setup():
    cfg = load_config()
    assert cfg == Config()
    assert (cfg.data.image_size, cfg.data.split, cfg.model.weights) == (224, "paper", "imagenet")
    assert (cfg.model.trainable_from, cfg.train.optimizer, cfg.train.batch_size) == ("block5", "sgd", 32)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {activation: selu}\ntrain: {lr: 0.01, epochs: 7}\n")
    cfg = load_config(path, ["train.lr=3e-4", "data.root=/x"])
    assert cfg.model.activation == "selu"
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.epochs == 7
    assert cfg.data.root == "/x"


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["model.activaton=relu"], "model.activaton"),
        (["model.activation=sleu"], "sleu"),
        (["train.lr=0"], "train.lr"),
        (["train.lr=-1"], "train.lr"),
        (["train.epochs=0"], "train.epochs"),
        (["train.batch_size=abc"], "train.batch_size"),
        (["modle.activation=relu"], "modle"),
        (["data.image_size=100"], "data.image_size"),
        (["model.weights=imagnet"], "imagnet"),
        (["model.base_seed=0"], "model.base_seed"),  # the default weights are imagenet: nothing to seed
        (["model.weights=none", "model.base_seed=1.5"], "model.base_seed"),
    ],
)
def test_bad_values_name_the_culprit(overrides, named):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert named in str(err.value)
    assert str(err.value).count(".") >= 1 and "\n" not in str(err.value)


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {activation: [relu\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_to_dict_round_trips():
    cfg = load_config(overrides=["model.activation=gelu", "train.seed=4"])
    assert config_from_dict(cfg.to_dict()) == cfg


STUDY = {
    "name": "s",
    "data": {"dataset": "synthetic", "image_size": 32},
    "model": {"weights": "none"},
    "search": {"model.activation": ["relu", "selu"], "train.seed": [0, 1, 2]},
}


def test_study_grid_is_the_product():
    study = study_from_dict(STUDY)
    assert study.num_trials == 6
    cfgs = study.trial_configs()
    assert [(c.model.activation, c.train.seed) for c in cfgs][:4] == [
        ("relu", 0), ("relu", 1), ("relu", 2), ("selu", 0)]
    assert all(c.data.image_size == 32 for c in cfgs)


def test_zipped_axis_sets_keys_together():
    raw = {**STUDY, "search": {"model.activation,model.normalization": [["relu", "per_image"], ["selu", "none"]],
                               "train.seed": [0, 1]}}
    arms = {(c.model.activation, c.model.normalization) for c in study_from_dict(raw).trial_configs()}
    assert arms == {("relu", "per_image"), ("selu", "none")}


@pytest.mark.parametrize(
    "change, named",
    [
        ({"serach": {}}, "serach"),
        ({"search": {"model.activaton": ["relu"]}}, "model.activaton"),
        ({"search": {"model.activation": ["relu", "sleu"]}}, "sleu"),
        ({"search": {"train.seed": []}}, "train.seed"),
        ({"resources": {"gpus": 1}}, "resources.gpus"),
        ({"run": {"max_failure": 1}}, "run.max_failure"),
        ({"analysis": {"target": 0.5}}, "target"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_study_config_errors_name_the_key(change, named):
    with pytest.raises(ConfigError) as err:
        study_from_dict({**STUDY, **change})
    assert named in str(err.value)


def test_study_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(STUDY))
    study = load_study(path, ["train.epochs=2", "search.train.seed=[5, 6]", "model.activation=selu", "name=other"])
    assert study.name == "other"
    assert "model.activation" not in study.search  # fixing a value removes its axis
    assert [(c.model.activation, c.train.seed, c.train.epochs) for c in study.trial_configs()] == [
        ("selu", 5, 2), ("selu", 6, 2)]


def test_shipped_configs_are_valid():
    sizes = {name: load_study(f"configs/{name}.yaml").num_trials for name in ("paper", "factorial", "quick", "lr-search")}
    assert sizes == {"paper": 20, "factorial": 120, "quick": 24, "lr-search": 4}
    assert load_study("configs/lr-search.yaml").optuna is not None
