"""patches/schedule.py by hand-computed values: sigma windows and the step index the window-attention shift uses.

(Added for the surviving mutants of the mutmut run, docs/tests.md: each assertion is a value worked out by hand.)
"""
from __future__ import annotations

import math

import pytest
import torch

from megapixel.patches.schedule import SigmaWindow, step_index


class _Linear:
    """percent_to_sigma of a made-up model: sigma 10 at 0 % (noise), 0 at 100 %."""

    @staticmethod
    def percent_to_sigma(percent: float) -> float:
        return 10.0 * (1.0 - percent)


def test_a_window_from_fractions_is_the_sigmas_at_its_ends():
    window = SigmaWindow.from_fractions(_Linear(), 0.2, 0.5)
    assert (window.high, window.low) == (8.0, 5.0)
    assert window.contains(8.0) and window.contains(5.1)
    assert not window.contains(5.0) and not window.contains(8.1)


@pytest.mark.parametrize("start,end", [(0.5, 0.5), (0.6, 0.4)])
def test_an_end_at_or_before_the_start_is_the_empty_window(start, end):
    window = SigmaWindow.from_fractions(_Linear(), start, end)
    assert (window.high, window.low) == (0.0, 0.0) and window.empty
    assert not any(window.contains(s) for s in (0.0, 1.0, 5.0, 10.0))


def test_windows_overlap_only_where_they_share_an_interval():
    a, b = SigmaWindow(8.0, 5.0), SigmaWindow(5.0, 2.0)
    assert not a.overlaps(b) and not b.overlaps(a)  # they touch at 5: no call is in both
    assert a.overlaps(SigmaWindow(6.0, 4.0)) and SigmaWindow(6.0, 4.0).overlaps(a)
    assert not a.overlaps(SigmaWindow(3.0, 3.0))  # empty
    assert not SigmaWindow(3.0, 3.0).overlaps(a)


SCHEDULE = [14.6, 5.0, 1.0, 0.0]


def _options(values=SCHEDULE) -> dict:
    return {"sample_sigmas": torch.tensor(values)}


@pytest.mark.parametrize("sigma,index", [(14.6, 0), (5.0, 1), (1.0, 2), (0.0, 3)])
def test_a_sigma_of_the_schedule_is_its_position(sigma, index):
    assert step_index(_options(), sigma) == index


@pytest.mark.parametrize("sigma,index", [(9.0, 1), (3.0, 2), (0.5, 3), (20.0, 0)])
def test_an_intermediate_sigma_counts_as_the_step_it_leads_to(sigma, index):
    """A multi-stage sampler's intermediate sigma: the number of schedule entries above it."""
    assert step_index(_options(), sigma) == index


def test_a_sigma_within_float_noise_of_an_entry_is_that_entry():
    assert step_index(_options(), 5.0 * (1 + 5e-5)) == 1  # inside rtol 1e-4: entry 1, not "above entry 2"
    assert step_index(_options(), 5.0 * (1 + 1e-3)) == 1  # outside: one entry (14.6) above it, also 1
    assert step_index(_options(), 5.0 * (1 - 1e-3)) == 2  # outside, below: two entries above it


def test_the_cache_answers_only_for_the_same_schedule_and_sigma():
    options = _options()
    assert step_index(options, 5.0) == 1
    assert step_index(options, 5.0) == 1  # cached
    assert step_index(options, 1.0) == 2  # same schedule, another sigma
    other = _options([9.0, 5.0, 0.0])
    assert step_index(other, 1.0) == 2  # another schedule with the same sigma: recomputed
    assert step_index(_options([5.0, 1.0, 0.0]), 5.0) == 0


@pytest.mark.parametrize("options", [{}, {"sample_sigmas": None}, {"sample_sigmas": torch.tensor([])},
                                     {"sample_sigmas": [14.6, 5.0]}])
def test_without_a_schedule_the_index_comes_from_the_sigma(options):
    assert step_index(options, 1.0) == 0  # floor(8 ln 1)
    assert step_index(options, math.e) == 8  # floor(8 ln e)
    assert step_index(options, math.exp(0.3)) == 2  # floor(2.4)
    assert step_index(options, math.exp(-0.3)) == -3  # floor(-2.4)
    assert step_index(options, 0.0) == 0 and step_index(options, -1.0) == 0
