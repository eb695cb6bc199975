"""choose_kron_shape: the documented rule, checked against a brute-force enumeration written independently."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dkp_deploy.kron_shape import check_kron_shape, choose_kron_shape


def _brute_min_params(M: int, N: int) -> int:
    """Fewest M1*N1 + M2*N2 over all exact factorizations whose kron can have rank min(M, N)."""
    best = None
    for m1, n1 in itertools.product(range(1, M + 1), range(1, N + 1)):
        if M % m1 or N % n1:
            continue
        m2, n2 = M // m1, N // n1
        if min(m1, n1) * min(m2, n2) == min(M, N):
            p = m1 * n1 + m2 * n2
            best = p if best is None else min(best, p)
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 120), st.integers(1, 120))
def test_rule_is_minimal_full_rank(M: int, N: int) -> None:
    (m1, n1), (m2, n2) = choose_kron_shape(M, N)
    assert m1 * m2 == M and n1 * n2 == N
    assert min(m1, n1) * min(m2, n2) == min(M, N)
    assert m1 * n1 + m2 * n2 == _brute_min_params(M, N)


def test_known_shapes() -> None:
    assert choose_kron_shape(100, 100) == ((10, 10), (10, 10))  # the paper's section 3.1 example
    (m1, n1), (m2, n2) = choose_kron_shape(2600, 1300)  # the medium LM's LSTM matrix
    assert m1 * n1 + m2 * n2 == 3852 < 52 * 65 + 50 * 20  # fewer than the paper's appendix-B shapes
    assert min(m1, n1) * min(m2, n2) == 1300


def test_check_kron_shape_rejects_non_factors() -> None:
    assert check_kron_shape(6, 4, [[2, 2], [3, 2]]) == ((2, 2), (3, 2))
    for bad in (((2, 2), (2, 2)), ((0, 4), (6, 1)), "nonsense"):
        try:
            check_kron_shape(6, 4, bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
