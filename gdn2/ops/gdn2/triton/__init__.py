"""Triton GPU kernels for the GDN-2 operator family."""

from .chunk import triton_gdn2

__all__ = ["triton_gdn2"]
