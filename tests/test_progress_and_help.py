"""Progress bars on the long steps, `--version` on the three commands, help text on every hwr-study option."""

from __future__ import annotations

import argparse
import importlib.metadata
import re

import numpy as np
import pytest
import torch

import hwr.data.chars74k as chars74k_mod
from hwr.config import config_from_dict
from hwr.data import scan, write_synthetic
from hwr.features import frozen_features
from hwr.model import build_model


@pytest.mark.parametrize("module, prog", [("hwr.cli", "hwr"), ("study.cli", "hwr-study"),
                                          ("benchmarks.cli", "hwr-bench")])
def test_version(module, prog, capsys):
    main = __import__(module, fromlist=["main"]).main
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {importlib.metadata.version('hwr-study')}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["lr-search", "run", "analyze", "status"])
def test_every_hwr_study_option_has_help_and_the_help_lists_it(command):
    from study.cli import parser

    sub = _subparsers(parser())[command]
    shown = "".join(sub.format_help().split())  # argparse wraps lines, at spaces and hyphens
    options = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"hwr-study {command}: {name} has no help text"
        assert "".join(action.help.split()) in shown, (command, name)


def test_frozen_feature_extraction_shows_a_bar(tmp_path, capsys):
    cfg = config_from_dict({"data": {"dataset": "synthetic", "image_size": 32},
                            "model": {"weights": "none", "trainable_from": "none"}})
    model = build_model(cfg.model, 32, seed=0)
    images = np.random.default_rng(0).standard_normal((150, 3, 32, 32)).astype(np.float32)
    z = frozen_features(model, images, "k", torch.device("cpu"), cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"frozen features: 100%.*150/150", err), err
    assert len(z) == 150
    frozen_features(model, images, "k", torch.device("cpu"), cache_dir=tmp_path, progress=True)
    assert "frozen features" not in capsys.readouterr().err  # from the cache: nothing to wait for
    frozen_features(model, images, "k2", torch.device("cpu"), cache_dir=tmp_path)
    assert capsys.readouterr().err == ""  # the library is quiet unless asked


def test_hwr_data_verify_shows_a_bar(tmp_path, capsys, monkeypatch):
    from hwr.cli import main

    root = write_synthetic(tmp_path / "set", per_class=2, seed=0)
    n = len(scan(root))
    assert main(["data", "verify", "--data-dir", str(root)]) == 0  # decoded: no manifest for this set
    assert re.search(rf"verify: 100%.*{n}/{n}", capsys.readouterr().err)
    manifest = {s.path.name: chars74k_mod.sha256_file(s.path) for s in scan(root)}
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: manifest)  # as the genuine set: sha256 checks
    assert main(["data", "verify", "--data-dir", str(root)]) == 0
    assert re.search(rf"verify \(sha256\): 100%.*{n}/{n}", capsys.readouterr().err)
