"""Test helpers shared by the test modules."""

from __future__ import annotations

import torch


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-8, msg: str = "") -> None:
    """Assert two tensors (or numbers) are elementwise close, with a message that shows the worst entry."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    if actual.shape != expected.shape:
        actual, expected = torch.broadcast_tensors(actual, expected)
    diff = (actual - expected).abs()
    tol = atol + rtol * expected.abs()
    bad = diff > tol
    if bool(bad.any()) or bool(torch.isnan(actual).ne(torch.isnan(expected)).any()):
        i = int((diff - tol).flatten().argmax())
        raise AssertionError(
            f"{msg} tensors differ at {bad.sum().item()} of {bad.numel()} entries; worst flat index {i}: "
            f"actual={actual.flatten()[i].item()!r} expected={expected.flatten()[i].item()!r} "
            f"(|diff|={diff.flatten()[i].item():.3g}, rtol={rtol}, atol={atol})"
        )


def blr_data(n, d=3, sigma=0.4, dtype=torch.float64):
    """A Bayesian-linear-regression problem: ``n`` inputs ``(n, d)`` (seed 1), targets ``x w + 0.3 + sigma eps``."""
    torch.manual_seed(1)
    X = torch.randn(n, d, dtype=dtype)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=dtype)[:d] + 0.3 + sigma * torch.randn(n, dtype=dtype)
    return X, y
