"""The SELU-collapse probe's unit statistics (benchmarks/selu_sgd.py) on heads whose answer is known."""

import torch
from torch import nn

from benchmarks.selu_sgd import _hidden_stats


def _head(activation: nn.Module, bias: float) -> nn.Sequential:
    head = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), activation, nn.Linear(3, 3), type(activation)(),
                         nn.Linear(3, 62))
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, bias)
    return head


def test_a_selu_layer_pushed_far_below_zero_is_all_stuck_and_outputs_its_floor():
    stats = _hidden_stats(_head(nn.SELU(), -10.0), torch.randn(16, 4), "selu")
    assert stats["stuck1"] == 1.0 and stats["stuck2"] == 1.0
    assert abs(stats["out1_mean"] - (-1.0507 * 1.67326)) < 1e-3  # SELU's floor, -lambda * alpha
    assert stats["pre1_std"] == 0.0


def test_a_healthy_layer_has_no_stuck_units_and_relu_counts_zero_as_its_threshold():
    x = torch.randn(64, 4)
    assert _hidden_stats(_head(nn.SELU(), 0.5), x, "selu")["stuck1"] == 0.0
    assert _hidden_stats(_head(nn.ReLU(), -0.5), x, "relu")["stuck1"] == 1.0  # below 0 everywhere: dead
    assert _hidden_stats(_head(nn.ReLU(), -0.5), x, "selu")["stuck1"] == 0.0  # -0.5 is above SELU's -3
