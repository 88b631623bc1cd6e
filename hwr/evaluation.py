"""What an evaluation inside an epoch measures beyond loss and accuracy, and when it happens.

`temperature_scaled_nll`: the validation NLL after temperature scaling (Guo et al. 2017), so that a speed
measure cannot mistake calibration for convergence; `eval_points`: the evenly spaced steps of an epoch
after which `hwr.train.fit` evaluates (`train.evals_per_epoch`).
"""

from __future__ import annotations

import math

import torch


def temperature_scaled_nll(logits: torch.Tensor, y: torch.Tensor, iters: int = 50) -> tuple[float, float]:
    """(mean NLL of softmax(logits / T), T) at the T > 0 that minimises it on these logits (Guo et al. 2017).

    The NLL is convex in beta = 1/T (a log-sum-exp of lines in beta minus a line), so Newton's method on
    beta from beta = 1 finds the minimum: f' = mean(E_p[z] - z_y), f'' = mean(Var_p[z]) >= 0. A halving
    line search keeps beta positive and f decreasing. Non-finite logits give (nan, nan).
    """
    z = logits.double()
    if len(y) == 0 or not torch.isfinite(z).all():
        return math.nan, math.nan
    zy = z.gather(1, y[:, None]).squeeze(1)

    def nll(beta: float) -> float:
        return (torch.logsumexp(beta * z, 1) - beta * zy).mean().item()

    beta, f = 1.0, nll(1.0)
    for _ in range(iters):
        p = torch.softmax(beta * z, 1)
        mean = (p * z).sum(1)
        grad = (mean - zy).mean().item()
        hess = ((p * z * z).sum(1) - mean**2).mean().item()
        if hess <= 1e-12 or abs(grad) < 1e-10:
            break
        step = grad / hess
        while True:
            nb = beta - step
            if nb > 0 and (fn := nll(nb)) <= f + 1e-15:
                break
            step /= 2
            if abs(step) < 1e-12:
                nb, fn = beta, f
                break
        if abs(nb - beta) < 1e-9 * max(beta, 1.0):
            beta, f = nb, fn
            break
        beta, f = nb, fn
    return f, 1.0 / beta


def eval_points(steps_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """Steps within an epoch (1-based) after which the run is evaluated: `evals_per_epoch` evenly spaced
    ones (fewer when the epoch has fewer steps), the last being the epoch's end."""
    n = max(1, min(evals_per_epoch, steps_per_epoch))
    return sorted({max(1, round(j * steps_per_epoch / n)) for j in range(1, n + 1)})
