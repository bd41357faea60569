"""The training loop's CPU kernels (cpu_kernels): fp32 linear layers on oneDNN's matmul, forward and backward,
and under bf16 autocast attention on SDPA's math path.

PyTorch's CPU matmul is MKL's sgemm, which takes its AVX2 kernels on AMD CPUs; oneDNN's runs 2-3x faster at
the tiny model's shapes on the project's AMD EPYC, making a game-stage step ~1.5x faster
(benchmarks/vlm_speed.py). The same fp32 arithmetic summed in another order: losses and gradients agree to
float rounding, not bit for bit (tests/test_train.py).
"""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode


def onednn_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K].T (+ bias [N]) -> [..., N] on oneDNN (a non-contiguous x is copied first)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad [M, N], x [M, K] -> grad.T @ x [N, K], copying the transpose of the narrower operand only."""
    if grad.shape[1] <= x.shape[1]:
        return onednn_matmul(grad.t(), x.t())
    return onednn_matmul(x.t(), grad.t()).t()


class OneDNNLinearFunction(torch.autograd.Function):
    """F.linear, forward and backward on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_matmul(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])  # [M, N]
        grad_x = onednn_matmul(grad, weight.t()) if needs_x else None  # [..., K]
        grad_weight = onednn_weight_grad(grad_rows, x.reshape(-1, x.shape[-1])) if needs_weight else None
        grad_bias = grad_rows.sum(0) if ctx.has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias


def linear_operands(input, weight, bias=None) -> tuple:  # F.linear's signature
    return input, weight, bias


def onednn_takes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """fp32 CPU tensors outside autocast (whose bf16 matmuls are oneDNN's already)."""
    tensors = [x, weight] if bias is None else [x, weight, bias]
    return (
        torch.backends.mkldnn.is_available()
        and not torch.is_autocast_enabled("cpu")
        and x.dim() >= 2
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    )


class OneDNNLinear(TorchFunctionMode):
    """Inside it, every fp32 F.linear on CPU (all of the VLM's matmuls but attention's) runs forward and
    backward on oneDNN's matmul instead of MKL's sgemm, which takes its AVX2 kernels on AMD CPUs: 2-3x
    faster GEMMs at the tiny model's shapes on the project's AMD EPYC (benchmarks/vlm_speed.py). The
    same fp32 arithmetic summed in another order: losses and gradients agree to float rounding, not
    bit for bit (tests/test_train.py)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            operands = linear_operands(*args, **kwargs)
            if onednn_takes(*operands):
                return OneDNNLinearFunction.apply(*operands)
        return func(*args, **kwargs)


@contextlib.contextmanager
def cpu_kernels(onednn_linear: bool = True) -> Iterator[None]:
    """A CPU training step's kernels: fp32 linear layers on oneDNN (OneDNNLinear; onednn_linear=False: MKL's)
    and, when entered inside bf16 autocast, attention on SDPA's math path (bmm + softmax on oneDNN's bf16
    matmul): at the tiny model's sizes the flash kernel's bf16 backward takes ~3x its fp32 time, a third of a
    bf16 step, and the math path makes a bf16 game-stage step ~1.2x faster (benchmarks/vlm_speed.py)."""
    autocast = torch.is_autocast_enabled("cpu")
    with contextlib.ExitStack() as stack:
        if onednn_linear and not autocast:  # under autocast OneDNNLinear takes no matmul: no mode on every op
            stack.enter_context(OneDNNLinear())
        if autocast and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield
