import math
import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import VGG16_Weights

from hwr.config import load_config
from hwr.model import BLOCK_START, ModelError, build_model, frozen_shape, vgg16_conv_base


def model_cfg(**kw):
    return load_config(overrides=["model.weights=none"] + [f"model.{k}={v}" for k, v in kw.items()]).model


@pytest.mark.parametrize("size", [32, 64])
def test_logits_shape_and_head_input(size):
    model = build_model(model_cfg(), size)
    x = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    assert model(x).shape == (3, 62)
    assert model.head[1].in_features == 512 * (size // 32) ** 2


@pytest.mark.parametrize("trainable_from", ["none", "block3", "block5", "all"])
def test_only_the_part_after_trainable_from_learns(trainable_from):
    model = build_model(model_cfg(trainable_from=trainable_from), 32)
    split = BLOCK_START[trainable_from]
    frozen = [p for p in model.features[:split].parameters()]
    assert all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in model.features[split:].parameters())
    model.train()
    assert not any(m.training for m in model.features[:split])
    assert all(m.training for m in model.head)
    assert set(model.trainable_state()) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_selu_head_follows_its_authors():
    model = build_model(model_cfg(activation="selu", dropout=0.2), 64)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert any(isinstance(m, nn.AlphaDropout) for m in model.head)
    assert any(isinstance(m, nn.SELU) for m in model.head)
    for lin in linears:  # LeCun normal: std 1/sqrt(fan_in), zero bias
        assert lin.weight.std().item() == pytest.approx(1 / math.sqrt(lin.in_features), rel=0.05)
        assert torch.count_nonzero(lin.bias) == 0
    relu = build_model(model_cfg(activation="relu", dropout=0.2), 64)
    assert any(type(m) is nn.Dropout for m in relu.head) and not any(isinstance(m, nn.AlphaDropout) for m in relu.head)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (build_model(model_cfg(), 32, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    # pairing across arms: the conv base does not depend on the head's activation
    selu = build_model(model_cfg(activation="selu"), 32, seed=0)
    assert torch.equal(a.features[28].weight, selu.features[28].weight)


@pytest.mark.parametrize("trainable_from", ["none", "block5", "block4", "block3", "block2", "block1", "all"])
def test_frozen_shape_is_what_the_frozen_part_outputs(trainable_from):
    model = build_model(model_cfg(trainable_from=trainable_from), 64)
    z = model.frozen(torch.zeros(2, 64, 64, dtype=torch.uint8))
    expected = tuple(z.shape[1:]) if model.split > 0 else None
    assert frozen_shape(trainable_from, 64) == expected


def test_a_head_only_model_can_leave_the_conv_base_out():
    full = build_model(model_cfg(trainable_from="none"), 64, seed=3)
    head_only = build_model(model_cfg(trainable_from="none"), 64, seed=3, conv_base=False)
    assert len(head_only.features) == 0
    assert head_only.trainable_state().keys() == full.trainable_state().keys()
    assert all(torch.equal(a, b) for a, b in zip(head_only.trainable_state().values(), full.trainable_state().values()))
    z = full.frozen(torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8))
    assert torch.equal(head_only.trainable(z), full.trainable(z))
    with pytest.raises(RuntimeError, match="without its conv base"):
        head_only.frozen(torch.zeros(1, 64, 64, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="none of it trains"):
        build_model(model_cfg(trainable_from="block5"), 64, conv_base=False)


def test_base_seed_fixes_the_conv_base_across_seeds_but_not_the_head():
    a, b = (build_model(model_cfg(base_seed=7), 32, seed=s) for s in (0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.features.state_dict().values(), b.features.state_dict().values()))
    assert not torch.equal(a.head[1].weight, b.head[1].weight)  # head[0] is Flatten
    assert torch.equal(a.features[0].weight, build_model(model_cfg(), 32, seed=7).features[0].weight)


@pytest.mark.parametrize("kind", ["none", "per_image", "imagenet"])
def test_input_normalization(kind):
    model = build_model(model_cfg(normalization=kind), 32)
    x = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8)
    z = model.normalize(x)
    assert z.shape == (4, 3, 32, 32)
    if kind == "none":
        assert z.min() >= 0 and z.max() <= 1
        assert torch.allclose(z[:, 0], x.float() / 255)
    elif kind == "per_image":
        assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
        assert torch.allclose(z.std(dim=(1, 2, 3)), torch.ones(4), atol=1e-3)
    else:
        expected = (x.float() / 255 - 0.485) / 0.229
        assert torch.allclose(z[:, 0], expected, atol=1e-5)


@pytest.fixture
def fake_imagenet_hub(tmp_path, monkeypatch):
    """A synthetic state dict with ImageNet VGG16's keys and shapes, where torch's hub cache looks for it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = vgg16_conv_base(seed=123)
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 8)  # a whole-model dict also has the classifier
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1])
    return reference


def test_imagenet_weights_come_from_torch_hub_cache(fake_imagenet_hub):
    model = build_model(model_cfg(weights="imagenet"), 32, seed=0)
    assert torch.equal(model.features[0].weight, fake_imagenet_hub[0].weight)
    assert torch.equal(model.features[28].bias, fake_imagenet_hub[28].bias)


def test_imagenet_download_failure_names_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelError) as err:
        build_model(model_cfg(weights="imagenet"), 32)
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and "none" in msg and "state-dict path" in msg


def test_local_state_dict_path(tmp_path):
    reference = vgg16_conv_base(seed=7)
    path = tmp_path / "conv.pt"
    torch.save(reference.state_dict(), path)  # the conv base alone (keys 0.weight, ...)
    model = build_model(load_config(overrides=[f"model.weights={path}"]).model, 32)
    assert torch.equal(model.features[0].weight, reference[0].weight)


def test_bad_state_dict_paths(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelError, match="missing.pt"):
        build_model(load_config(overrides=[f"model.weights={missing}"]).model, 32)
    wrong = tmp_path / "wrong.pt"
    torch.save({"0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ModelError, match="not a VGG16 state dict"):
        build_model(load_config(overrides=[f"model.weights={wrong}"]).model, 32)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="junk.pth"):
        build_model(load_config(overrides=[f"model.weights={junk}"]).model, 32)


def test_the_vgg16_table_builds_torchvisions_vgg16_features():
    """hwr.vgg's one layout table gives torchvision's vgg16().features, module for module and value for value."""
    from torchvision.models.vgg import cfgs, make_layers

    from hwr.vgg import BLOCK_START, FROZEN_OUT, conv_base

    ours = vgg16_conv_base(3)
    theirs = make_layers(cfgs["D"], batch_norm=False)
    generator = torch.Generator().manual_seed(3)
    for m in theirs:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            torch.nn.init.zeros_(m.bias)
    assert str(ours) == str(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert str(conv_base(batch_norm=True)) == str(make_layers(cfgs["D"], batch_norm=True))
    pools = [i for i, m in enumerate(theirs) if isinstance(m, torch.nn.MaxPool2d)]
    assert [BLOCK_START[f"block{i}"] for i in range(2, 6)] + [BLOCK_START["none"]] == [p + 1 for p in pools]
    x = ours.eval()(torch.zeros(1, 3, 64, 64))
    assert FROZEN_OUT["none"] == (x.shape[1], 64 // x.shape[-1])
