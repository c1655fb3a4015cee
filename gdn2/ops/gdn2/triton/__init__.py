"""Triton GPU kernels for the GDN-2 operator family."""

from .chunk import fused_recurrent_gdn2, triton_gdn2

__all__ = ["fused_recurrent_gdn2", "triton_gdn2"]
