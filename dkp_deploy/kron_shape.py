"""How big B and C are: the Kronecker factor shapes of an M x N weight (torch-free).

The rule (the paper's section 3.1, following Thakker et al. 2019a, "Compressing RNNs for IoT devices by 15-38x
using Kronecker Products"): among all factorizations M = M1*M2, N = N1*N2, take the one with the **fewest
parameters M1*N1 + M2*N2 (maximal KP compression) whose Kronecker product can still have full rank**.
rank(kron(B, C)) = rank(B) * rank(C) <= min(M1, N1) * min(M2, N2), so "keeps full rank" means
min(M1, N1) * min(M2, N2) == min(M, N). Ties go to the most balanced split (|M1*N1 - M2*N2| smallest), then to
the larger B.

For the paper's 2600 x 1300 LSTM matrix this gives B 50 x 50 and C 52 x 26 (3,852 parameters, rank bound 1300).
The paper's appendix B lists B 52 x 65, C 50 x 20 (4,380 parameters, rank bound 52 * 20 = 1040 < 1300), i.e. its
published shapes do not satisfy the full-rank condition it cites; pass ``kron_shape=((52, 65), (50, 20))``
explicitly to reproduce them.

When M or N is prime-ish no non-trivial full-rank split exists and the rule returns a trivial one (a 1 x 1 factor),
which stores more than M*N numbers: structure "kron" then buys nothing and "none" or "lmf" is the better choice.
"""

from __future__ import annotations

KronShape = tuple[tuple[int, int], tuple[int, int]]


def divisors(n: int) -> list[int]:
    """All positive divisors of n, ascending."""
    if n < 1:
        raise ValueError(f"divisors needs a positive integer, got {n}")
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def kron_rank_bound(shape: KronShape) -> int:
    """The largest rank kron(B, C) can have for these factor shapes: min(M1, N1) * min(M2, N2)."""
    (m1, n1), (m2, n2) = shape
    return min(m1, n1) * min(m2, n2)


def kron_params(shape: KronShape) -> int:
    (m1, n1), (m2, n2) = shape
    return m1 * n1 + m2 * n2


def choose_kron_shape(M: int, N: int) -> KronShape:
    """((M1, N1), (M2, N2)) for an M x N matrix by the rule in the module docstring."""
    if M < 1 or N < 1:
        raise ValueError(f"matrix shape must be positive, got {M} x {N}")
    full = min(M, N)
    best: tuple[tuple[int, int, int], KronShape] | None = None
    for m1 in divisors(M):
        for n1 in divisors(N):
            shape = ((m1, n1), (M // m1, N // n1))
            if kron_rank_bound(shape) != full:
                continue
            b, c = m1 * n1, (M // m1) * (N // n1)
            key = (b + c, abs(b - c), -b)
            if best is None or key < best[0]:
                best = (key, shape)
    assert best is not None  # ((M, N), (1, 1)) always qualifies
    return best[1]


def check_kron_shape(M: int, N: int, shape: KronShape) -> KronShape:
    """Normalise `shape` to nested int tuples; ValueError unless it factors M x N."""
    try:
        (m1, n1), (m2, n2) = shape
        m1, n1, m2, n2 = int(m1), int(n1), int(m2), int(n2)
    except (TypeError, ValueError):
        raise ValueError(f"kron_shape must be ((M1, N1), (M2, N2)), got {shape!r}") from None
    if min(m1, n1, m2, n2) < 1 or m1 * m2 != M or n1 * n2 != N:
        raise ValueError(f"kron_shape {shape!r} does not factor a {M} x {N} matrix (need M1*M2 = M, N1*N2 = N)")
    return ((m1, n1), (m2, n2))


__all__ = ["KronShape", "choose_kron_shape", "check_kron_shape", "kron_rank_bound", "kron_params", "divisors"]
