"""Dynamic tree quantization's 8-bit code (Dettmers 2016, §3; Dettmers et al. 2022, §2.2),
read bit by bit in float64: after the sign bit (signed code only), the number of zero bits
before the first 1 is the decimal exponent e; the bits after that 1 are a linear fraction
k − 1 of f bits, and the byte stands for ±10^−e · (0.1 + 0.9·k/2^f). The unsigned code
(the paper's "dynamic quantization" of Adam's second state) spends the sign bit on one more
exponent or fraction bit. All bits zero: 0."""

from __future__ import annotations

import numpy as np


def value_of(byte: int, signed: bool) -> float:
    bits = format(byte, "08b")
    sign = 1.0
    if signed:
        sign, bits = (-1.0 if bits[0] == "1" else 1.0), bits[1:]
    if "1" not in bits:
        return 0.0
    exponent = bits.index("1")
    fraction = bits[exponent + 1 :]
    k = (int(fraction, 2) if fraction else 0) + 1
    return sign * 10.0**-exponent * (0.1 + 0.9 * k / 2 ** len(fraction))


def code_table(signed: bool) -> np.ndarray:
    return np.array([value_of(byte, signed) for byte in range(256)])
