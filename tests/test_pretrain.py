"""hwr.glyphs and hwr.pretrain: label sets, rendering, augmentation, BN folding, determinism, caching,
recipe validation, and a tiny pretrained base feeding `hwr train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hwr import cli
from hwr.config import NAMED_BASES, ConfigError, load_config
from hwr.data import CLASSES
from hwr.glyphs import Augment, GlyphError, augment, find_fonts, label_set, lookalikes, render_bank
from hwr.model import build_model
from hwr import bases as pt
from hwr import vgg
from hwr.recipe import load_recipe

# A recipe that trains in a few seconds: Hershey Greek only, two skeleton steps, then one VGG16 step.
TINY = ["glyphs.sources=[hershey]", "glyphs.scripts=[greek]", "train.shallow_samples=64", "train.samples=32",
        "train.batch_size=32", "train.val_per_class=1"]


def test_disjoint_label_set_holds_no_target_and_latin62_is_the_targets():
    disjoint = label_set("disjoint", ("greek", "cyrillic", "armenian", "georgian", "hebrew", "symbols"))
    assert len(disjoint) > 250
    assert not set(disjoint) & set(CLASSES)
    assert label_set("latin62", ()) == list(CLASSES)
    with pytest.raises(GlyphError, match="empty"):
        label_set("disjoint", ())
    with pytest.raises(GlyphError, match="unknown script 'klingon'"):
        label_set("disjoint", ("klingon",))


def test_bank_renders_each_class_in_several_styles():
    fonts = find_fonts(("matplotlib", "hershey"))
    assert not any(f.name.startswith(("LastResort", "cm")) for f in fonts)
    bank = render_bank(label_set("disjoint", ("greek",)), fonts, min_fonts=2)
    assert bank.masks.dtype == np.uint8 and bank.masks.shape[1:] == (64, 64)
    counts = np.bincount(bank.labels)
    assert len(bank.classes) == 49 and counts.min() >= 2  # every Greek letter, each in two fonts or more
    assert {f.kind for f in (bank.font_list[i] for i in set(bank.fonts.tolist()))} == {"outline", "hershey"}
    # Centred on its ink: the bounding box's centre is within a pixel of the bitmap's.
    ys, xs = np.nonzero(bank.masks[0])
    assert abs((ys.min() + ys.max()) / 2 - 31.5) <= 1 and abs((xs.min() + xs.max()) / 2 - 31.5) <= 1


def test_augment_makes_dark_ink_on_light_paper_deterministically():
    bank = render_bank(label_set("disjoint", ("greek",)), find_fonts(("hershey",)))
    masks = torch.from_numpy(bank.masks[:16])
    a = augment(masks, Augment(), 32, torch.Generator().manual_seed(1))
    b = augment(masks, Augment(), 32, torch.Generator().manual_seed(1))
    c = augment(masks, Augment(), 32, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == (16, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a.float().median() > 200) and (a.amin(dim=(1, 2)) < 100).all()  # paper is light, every page has ink


def test_lookalikes_flags_greek_alpha_but_not_zhe():
    fonts = [f for f in find_fonts(("matplotlib",)) if f.name == "DejaVuSans.ttf"]
    found = lookalikes(["Α", "Ж", "ο", "λ"], fonts)
    assert "Α" in found and "ο" in found
    assert "Ж" not in found and "λ" not in found


def test_fold_batchnorm_gives_the_trained_activations():
    torch.manual_seed(0)
    features = vgg.conv_base(batch_norm=True)
    for m in features:  # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    features.eval()
    state = vgg.fold_batchnorm(features)
    plain = build_model(load_config(None, ["model.weights=none", "data.image_size=32"]).model, 32).features
    plain.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want, got = features(x), plain.eval()(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert set(state) == {f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
                          for p in ("weight", "bias")}


def test_deepen_grows_vgg16_that_computes_what_the_skeleton_did():
    torch.manual_seed(0)
    skeleton = vgg.conv_base(batch_norm=True, depths=(1, 1, 1, 1, 1))
    skeleton.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            skeleton(torch.randn(16, 3, 32, 32) * 2 + 1)
    skeleton.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        want = skeleton(x)
        deep = vgg.deepen(skeleton, torch.randn(32, 3, 32, 32)).eval()
        got = deep(x)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item())
    reference = vgg.conv_base(batch_norm=True)  # torchvision's VGG16-BN layout, layer for layer
    assert [type(m) for m in deep] == [type(m) for m in reference]
    assert [p.shape for p in deep.parameters()] == [p.shape for p in reference.parameters()]
    # the grown layers are trainable from there: a training step changes the Dirac kernels
    deep.train()
    loss = deep(x).square().mean()
    loss.backward()
    assert deep[3].weight.grad is not None and deep[3].weight.grad.abs().sum() > 0


def test_pretrain_is_deterministic_and_its_base_loads(tmp_path):
    recipe = load_recipe(None, TINY)
    a = pt.pretrain(recipe, tmp_path / "a.pt", progress=False)
    b = pt.pretrain(recipe, tmp_path / "b.pt", progress=False)
    sa, sb = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["held_out_accuracy"] == b["held_out_accuracy"]
    assert a["fold_max_rel_error"] < 1e-4
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["recipe"]["train"]["shallow_samples"] == 64 and sidecar["image_size"] == 32
    assert sidecar["shallow"]["steps"] == 2 and sidecar["deep"]["steps"] == 1 and sidecar["samples"] == 96
    assert sidecar["input_conventions"] == ["per_image", "none", "imagenet"]
    assert all(f["kind"] == "hershey" and len(f["sha256"]) == 64 for f in sidecar["fonts"])
    assert sidecar["classes"][:3] == ["Α", "Β", "Γ"] and "torch" in sidecar["versions"]
    # Another seed gives another base.
    pt.pretrain(load_recipe(None, [*TINY, "train.seed=1"]), tmp_path / "c.pt", progress=False)
    sc = torch.load(tmp_path / "c.pt")
    assert not torch.equal(sa["features.0.weight"], sc["features.0.weight"])


def test_cli_pretrain_caches_by_recipe(tmp_path, capsys, monkeypatch):
    out = tmp_path / "base.pt"
    assert cli.main(["pretrain", *sum((["--set", s] for s in TINY), []), "--out", str(out)]) == 0
    assert out.exists()

    def refuse(*a, **k):
        raise AssertionError("a cached recipe must not be trained again")

    monkeypatch.setattr(pt, "pretrain", refuse)
    capsys.readouterr()
    assert cli.main(["pretrain", *sum((["--set", s] for s in TINY), []), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("cached: ")


@pytest.mark.parametrize("args, message", [
    (["--set", "glyphs.fonts=[/nonexistent/font.ttf]"], "font file /nonexistent/font.ttf does not exist"),
    (["--set", "glyphs.scripts=[]"], "glyphs.scripts in recipe is empty"),
    (["--set", "glyphs.colour=red"], "Unknown key glyphs.colour"),
    (["--set", "train.conventions=[sepia]"], "train.conventions in recipe must list"),
    (["--set", "augment.height=[0.9, 0.5]"], "augment.height in recipe must be [low, high]"),
    (["--set", "train.samples=many"], "train.samples in recipe must be an integer"),
    (["--set", "train.samples=0", "--set", "train.shallow_samples=0"], "not both 0"),
    (["--set", "train.zero_mean_stem=maybe"], "train.zero_mean_stem in recipe must be true or false"),
])
def test_bad_recipes_get_one_sentence_and_exit_2(args, message, capsys, tmp_path):
    assert cli.main(["pretrain", *args, "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "x.pt").exists()


def test_a_font_file_that_is_not_a_font(tmp_path, capsys):
    bad = tmp_path / "notes.ttf"
    bad.write_text("not a font")
    assert cli.main(["pretrain", "--set", f"glyphs.fonts=[{bad}]"]) == 2
    assert f"font file {bad} is not a font" in capsys.readouterr().err


def test_named_base_is_built_once_and_feeds_hwr_train(tmp_path, monkeypatch):
    monkeypatch.setitem(pt.RECIPES, "glyphs-small", load_recipe(None, TINY))
    assert set(pt.RECIPES) == set(NAMED_BASES)
    calls = []
    real = pt.pretrain
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = pt.ensure_base("glyphs-small", progress=False)
    assert pt.ensure_base("glyphs-small", progress=False) == path and calls == [1]
    cfg = load_config(None, ["data.dataset=synthetic", "data.image_size=32", "model.weights=glyphs-small",
                             "model.trainable_from=none", "train.optimizer=adam", "train.lr=3e-3", "train.epochs=1"])
    model = build_model(cfg.model, 32)
    base = torch.load(path)
    assert torch.equal(model.features[0].weight, base["features.0.weight"])
    assert cli.main(["train", "--set", "data.dataset=synthetic", "--set", "data.image_size=32",
                     "--set", "model.weights=glyphs-small", "--set", "model.trainable_from=none",
                     "--set", "train.epochs=1", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["config"]["model"]["weights"] == "glyphs-small"
    assert calls == [1]


def test_model_weights_names_the_bases():
    with pytest.raises(ConfigError, match="glyphs, glyphs-small"):
        load_config(None, ["model.weights=glyph"])
