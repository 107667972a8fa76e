"""What one per-frequency matrix costs on this machine: the LAPACK calls the spectra could be built on.

    PYTHONPATH=. python benchmarks/bench_eigensolvers.py     # about a minute

For the sizes of ResNet-50's Gram matrices (64, 128, 256, 512), times per matrix, one thread, best of 3:
numpy (OpenBLAS) and torch (MKL) ``eigvalsh`` in complex128 (the tool's default) and complex64, a real
float64 ``eigvalsh`` of the same size (what a real problem would cost), and ``svdvals`` of complex64
matrices (a float32 SVD of W_hat itself). Then the tool's eigensolver on two threads side by side, to show
how far two cores scale on this machine. It explains the floor that ``bench_spectra.py`` reports.

    PYTHONPATH=. python benchmarks/bench_eigensolvers.py --mixed-stages   # the mixed route's cost model

``--mixed-stages`` instead times the stages of the mixed route of ``cbn_inspect.analysis._eigen`` on square
random Gram matrices (n = 128, 256, 512; process CPU time, one thread, median of 5) against one plain solve:
the first stage (complex64 reduction and all values) and the refinement of the values below the threshold,
as shares of the plain solve. These are the constants of ``_eigen._COST``.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SIZES = ((64, 400), (128, 200), (256, 40), (512, 10))  # (n, matrices timed)


def best(func, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def mixed_stages() -> int:
    import numpy as np

    from cbn_inspect.analysis import _eigen, configure_threads

    configure_threads(1)
    lapack = _eigen._scipy_lapack()
    rng = np.random.default_rng(0)

    def cpu_ms(func, repeat: int = 5) -> float:
        times = []
        for _ in range(repeat):
            start = time.process_time()
            func()
            times.append(time.process_time() - start)
        return 1e3 * sorted(times)[len(times) // 2]

    print(f"plain route: {_eigen.plain_route()}; ms per matrix, process CPU, one thread, median of 5")
    print("n | refined k | plain | first stage | refine | first / plain | per value x n / plain | mixed / plain")
    for n in (128, 256, 512):
        a = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
        gram = a @ a.conj().T
        plain = cpu_ms(lambda: _eigen.hermitian_eigenvalues(gram[None], "plain"))
        stage = _eigen._mixed_first_stage(lapack, gram)
        k = _eigen._small_count(stage[4])
        first = cpu_ms(lambda: _eigen._mixed_first_stage(lapack, gram))
        refine = cpu_ms(lambda: _eigen._mixed_refine(lapack, gram, stage, k))
        print(f"{n} | {k} | {plain:.2f} | {first:.2f} | {refine:.2f} | {first / plain:.2f} | "
              f"{refine / plain * n / k:.2f} | {(first + refine) / plain:.2f}")
    configure_threads(None)
    return 0


def main() -> int:
    if "--mixed-stages" in sys.argv[1:]:
        return mixed_stages()
    import numpy as np
    import torch

    from cbn_inspect.analysis import configure_threads

    configure_threads(1)  # one thread per call, as in the tool
    rng = np.random.default_rng(0)
    print("ms per matrix, one thread (best of 3)")
    header = ("n", "np eigvalsh c128", "np eigvalsh c64", "torch eigvalsh c128", "torch eigvalsh c64",
              "np eigvalsh real f64", "torch svdvals c64", "2 threads c128")
    print(" | ".join(header))
    for n, count in SIZES:
        a = rng.standard_normal((count, n, n)) + 1j * rng.standard_normal((count, n, n))
        gram = a @ a.conj().transpose(0, 2, 1)
        gram64 = gram.astype(np.complex64)
        real = np.ascontiguousarray(gram.real)
        t128, t64 = torch.from_numpy(gram), torch.from_numpy(gram64)
        w64 = torch.from_numpy(a.astype(np.complex64))
        row = [
            best(lambda: np.linalg.eigvalsh(gram)),
            best(lambda: np.linalg.eigvalsh(gram64)),
            best(lambda: torch.linalg.eigvalsh(t128)),
            best(lambda: torch.linalg.eigvalsh(t64)),
            best(lambda: np.linalg.eigvalsh(real)),
            best(lambda: torch.linalg.svdvals(w64)),
        ]
        halves = [gram[: count // 2], gram[count // 2:]]
        with ThreadPoolExecutor(2) as pool:
            row.append(best(lambda: list(pool.map(np.linalg.eigvalsh, halves))))
        print(" | ".join([str(n)] + [f"{1e3 * t / count:.2f}" for t in row])
              + f"   (2-thread speed-up {row[0] / row[-1]:.2f}x)")
    configure_threads(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
