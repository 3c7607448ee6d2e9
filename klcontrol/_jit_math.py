"""Scalar maths for the compiled simulation kernels (numba), written so that LLVM vectorises it.

A call to libm's ``exp`` stops LLVM from vectorising the loop around it, and
the two exponentials of a loop step (the plant's gain and the sigmoid) are
most of its cost.  :func:`exp` is the textbook algorithm in plain arithmetic:
``x = k·ln 2 + r`` with ``|r| ≤ ln 2 / 2`` (Cody–Waite: ``ln 2`` split in two
so that ``r`` is exact to a few ulp), the Taylor polynomial of ``exp(r)`` to
degree 13 (truncation error below 1e-17 relative; its first terms by Horner's
rule, the small tail by Estrin's scheme, for a short dependency chain), and
the scale ``2^k`` built from its bits.  ``tests/test_compiled.py`` checks it against
``math.exp`` (within 2 ulp on normal results, exact on the special values),
which is as close as NumPy's own SIMD ``exp`` is to libm.

Imported only when numba is installed (the ``fast`` extra).
"""
from __future__ import annotations

import math

import numpy as np

from .compiled import wide_vectors

# Before numba builds its target machine (the decorators below do): 512-bit vectors where the CPU has them.
wide_vectors()

from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

__all__ = ["exp", "sign"]

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 rounded to 32 bits: k·_LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10  # ln 2 − _LN2_HI
_OVERFLOW = 709.782712893384  # ln(largest double)
_UNDERFLOW = -745.1332191019412  # ln(smallest subnormal / 2): below it exp rounds to 0


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret an int64 as the float64 with those bits (no conversion)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(inline="always", cache=True, fastmath={"contract"})
def exp(x):
    """``e**x`` for a float64, within 2 ulp of the correctly rounded value; inf, 0 and NaN as libm."""
    xc = min(max(x, -746.0), 710.0)  # keeps k in the range where both half scales below are normal
    kf = math.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    # The leading terms by Horner's rule (they set the rounding), the small tail r^4/4! + … + r^13/13! (at
    # most 6e-4 of the result) by Estrin's scheme: 8 dependent operations instead of 13, which is what a
    # kernel's update waits for (its two exponentials are in series: a step about 10 % faster).  Equal to
    # the all-Horner form to the bit on 99.99 % of 1.2 million arguments, within 1 ulp of libm on all of them.
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q = ((1 / 24 + r * (1 / 120)) + r2 * (1 / 720 + r * (1 / 5040))
         + r4 * ((1 / 40320 + r * (1 / 362880)) + r2 * (1 / 3628800 + r * (1 / 39916800)))
         + r8 * (1 / 479001600 + r * (1 / 6227020800)))
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * q)))
    k = np.int64(kf)
    k1 = k >> 1
    # 2^k as two normal factors, so that results down to the subnormal range come out right.
    v = p * _bits_to_float((k1 + 1023) << 52) * _bits_to_float((k - k1 + 1023) << 52)
    v = math.inf if x > _OVERFLOW else v
    v = 0.0 if x < _UNDERFLOW else v
    return v if x == x else x  # NaN in, NaN out


@njit(inline="always", cache=True)
def sign(x):
    """−1, 0 or 1 (NaN for NaN), as ``numpy.sign``."""
    return 1.0 if x > 0 else (-1.0 if x < 0 else (0.0 if x == 0 else x))
