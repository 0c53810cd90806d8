"""Timing shared by the benchmarks: one whole sampling run by a guider, on the wall clock.

On CUDA the clock starts and stops on a synchronised device, so it sees the GPU's work and not just its queueing.
Import after ``host.import_in_process`` (it uses the host's torch).
"""
from __future__ import annotations

import time
from typing import Any


def timed_sample(guider: Any, noise: Any, latent: Any, sampler: Any, sigmas: Any, device: Any) -> float:
    """Seconds for ``guider.sample`` over ``sigmas`` (seed 0, no progress bar, inference mode) on ``device``, the
    torch device the models run on."""
    import torch  # noqa: PLC0415

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start
