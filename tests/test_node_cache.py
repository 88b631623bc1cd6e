"""What one node computes or builds once for a study: a frozen feature set too large for Ray's object store
(computed by the first process that needs it, under a file lock in that node's cache, and read by the rest),
and a named base shipped by the driver (used from memory: the node's cache is never asked)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hwr import bases, features
from hwr.model import load_conv_base, vgg16_conv_base


def test_a_frozen_set_is_computed_once_per_node_however_many_trials_ask(tmp_path, monkeypatch):
    calls = []

    def slow_compute(model, images, device, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # long enough for every other caller to arrive meanwhile
        return torch.arange(len(images) * 4, dtype=torch.float32).reshape(len(images), 4, 1, 1)

    monkeypatch.setattr(features, "compute_frozen", slow_compute)
    model = SimpleNamespace(cfg=SimpleNamespace(trainable_from="none"))
    images = np.zeros((3, 3, 32, 32), dtype=np.uint8)
    got = [None] * 4

    def trial(i):
        got[i] = features.frozen_features(model, images, "k", torch.device("cpu"), cache_dir=tmp_path)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(calls) == 1  # the others waited on the lock, then read the cache
    assert all(torch.equal(g, got[0]) for g in got) and got[0].shape == (3, 4, 1, 1)
    assert (tmp_path / "k-cpu.lock").exists() and features.load_cached("k", "cpu", tmp_path) is not None


def test_a_base_given_by_the_driver_is_used_without_the_cache(monkeypatch):
    state = {k: v.numpy() + 1.0 for k, v in vgg16_conv_base(0).state_dict().items()}  # arrays, as Ray ships them

    def never(name, progress=True):
        raise AssertionError("a node asked its cache for a base the driver shipped")

    monkeypatch.setattr(bases, "ensure_base", never)
    monkeypatch.setattr(bases, "_PROVIDED", {})
    with pytest.raises(AssertionError, match="asked its cache"):
        load_conv_base("glyphs-small", 0)
    bases.provide("glyphs-small", state)
    conv = load_conv_base("glyphs-small", 0)
    assert all(np.array_equal(v.numpy(), state[k]) for k, v in conv.state_dict().items())
