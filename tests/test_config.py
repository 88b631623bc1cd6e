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


def test_numbers_written_1e_4_are_numbers_everywhere(tmp_path):
    from study.run import param_space

    study = load_study("configs/lr-search.yaml", ["optuna.low=1e-4", "search.train.lr=[1e-4,1e-3]"])
    assert study.optuna.low == 1e-4 and isinstance(study.optuna.low, float)
    lrs = param_space(study)["train"]["lr"]["grid_search"]
    assert lrs == [1e-4, 1e-3] and all(type(v) is float for v in lrs)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndata: {dataset: synthetic, image_size: 32}\ntrain: {lr: 3e-4}\n"
                    "search: {train.lr: [1e-4, 2E-3]}\noptuna: {low: 1e-6, high: 1e-2}\n")
    study = load_study(path)
    assert study.base["train"]["lr"] == 3e-4 and study.search["train.lr"] == [1e-4, 2e-3]
    assert (study.optuna.low, study.optuna.high) == (1e-6, 1e-2)
    assert [c.train.lr for c in study.trial_configs()] == [1e-4, 2e-3]


def test_the_study_record_holds_every_default():
    from dataclasses import fields

    from hwr.config import SECTIONS
    from study.analysis.params import AnalysisParams
    from study.config import OptunaConfig, RunSettings

    doc = load_study("configs/lr-search.yaml").to_dict()
    for name, cls in {**SECTIONS, "run": RunSettings, "optuna": OptunaConfig, "analysis": AnalysisParams}.items():
        assert set(doc[name]) == {f.name for f in fields(cls)}, name
    assert doc["run"]["allow_errors"] is False and doc["train"]["momentum"] == 0.9
    assert study_from_dict({**doc, "search": doc["search"]}).to_dict() == doc  # the record reads back as itself


@pytest.mark.parametrize(
    "change, named",
    [
        ({"optuna": {"low": "tiny"}}, "optuna.low"),
        ({"optuna": {"arm_keys": "model.activation"}}, "optuna.arm_keys"),
        ({"run": {"keep_best": "yes"}}, "run.keep_best"),
        ({"run": {"max_failures": 1.5}}, "run.max_failures"),
        ({"resources": {"cpu": None}}, "resources.cpu"),
        ({"model": {"dropout": [0.1]}}, "model.dropout"),
    ],
)
def test_one_engine_types_every_section(change, named):
    with pytest.raises(ConfigError) as err:
        study_from_dict({**STUDY, **change})
    assert named in str(err.value) and "\n" not in str(err.value)


def test_every_key_may_be_an_axis_and_arms_come_from_the_arm_keys():
    from study.grid import arm_groups

    raw = {**STUDY, "search": {"data.image_size": [32, 64], "model.activation,train.lr": [["relu", 1e-3],
                                                                                          ["selu", 1e-4]]}}
    study = study_from_dict(raw)
    assert [(c.data.image_size, c.model.activation, c.train.lr) for c in study.trial_configs()] == [
        (32, "relu", 1e-3), (32, "selu", 1e-4), (64, "relu", 1e-3), (64, "selu", 1e-4)]
    dicts = [c.to_dict() for c in study.trial_configs()]
    assert arm_groups(dicts, study.arm_keys) == [("relu", "per_image"), ("selu", "per_image")]
    assert arm_groups(dicts, ("data.image_size",)) == [(32,), (64,)]
