"""Relay stage specs: parsing, every bad spec, the step split and the schedule slices (pure functions)."""
from __future__ import annotations

import pytest
import torch

from megapixel.samplers.relay_stages import (StageSpecError, check_spec, default_split, parse_split, parse_stages,
                                             slice_sigmas, split_steps, stage_sizes)


@pytest.mark.parametrize("text, factors", [
    ("1, 1.5, 2", (1.0, 1.5, 2.0)),
    ("1 -> 1.5 -> 2", (1.0, 1.5, 2.0)),
    ("1 1.5 2", (1.0, 1.5, 2.0)),
    ("1;2", (1.0, 2.0)),
    ("1", (1.0,)),
])
def test_factor_specs_parse(text, factors):
    assert parse_stages(text).factors == factors


@pytest.mark.parametrize("text, sizes", [
    ("512x512, 768x768, 1024x1024", ((512, 512), (768, 768), (1024, 1024))),
    ("512 x 768 -> 1024 x 1536", ((512, 768), (1024, 1536))),
    ("1024×1024, 2048×2048", ((1024, 1024), (2048, 2048))),
])
def test_size_specs_parse(text, sizes):
    assert parse_stages(text).sizes == sizes


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("  ", "is empty"),
    ("1, 0.5", "below 1"),
    ("0.5, 1", "below 1"),
    ("1, 2, 2", "not increasing"),
    ("1, 2, 1.5", "not increasing"),
    ("2, 3", "must be 1"),
    ("1, 40", "above 16"),
    ("1, nan", "below 1"),
    ("1, two", "cannot read 'two'"),
    ("512x512, 1.5", "mixes sizes and scale factors"),
    ("512x512, 700x700", "not a multiple of 8"),
    ("512x510, 1024x1024", "not a multiple of 8"),
    ("512x512, 512x512", "not increasing"),
    ("768x768, 512x512", "not increasing"),
    ("512x512, 1024x384", "not increasing"),
    ("1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8", "at most 8"),
])
def test_bad_stage_specs_are_rejected_with_the_input_and_a_fix(text, fragment):
    with pytest.raises(StageSpecError, match="^stages: ") as err:
        parse_stages(text)
    assert fragment in str(err.value)
    assert "Fix:" in str(err.value)
    assert err.value.input_name == "stages"


def test_stage_sizes_from_factors_and_sizes():
    assert stage_sizes(parse_stages("1, 1.5, 2"), 64, 64) == [(64, 64), (96, 96), (128, 128)]
    assert stage_sizes(parse_stages("1, 1.5"), 64, 96) == [(64, 96), (96, 144)]
    assert stage_sizes(parse_stages("1, 1.5"), 7, 5) == [(7, 5), (11, 8)]  # rounded to whole latent pixels
    assert stage_sizes(parse_stages("512x512, 768x1024"), 64, 64) == [(64, 64), (128, 96)]


@pytest.mark.parametrize("side, factor, expected", [
    # exact halves round UP (Python's round() gives the even neighbour: 10, 16, 4, 6 for the first four)
    (7, 1.5, 11), (11, 1.5, 17), (3, 1.5, 5), (5, 1.3, 7), (9, 1.5, 14), (5, 1.5, 8), (10, 1.25, 13),
    # everything else to the nearest
    (10, 1.24, 12), (10, 1.26, 13), (64, 1.5, 96), (9, 2, 18),
])
def test_factor_sizes_round_half_up(side, factor, expected):
    """side x factor to the nearest whole latent pixel, halves up: floor(side * factor + 1/2), by hand."""
    assert stage_sizes(parse_stages(f"1, {factor}"), side, side)[1] == (expected, expected)


def test_first_size_must_be_the_latents():
    with pytest.raises(StageSpecError, match="first stage is 512x512 but the input latent is 640x640"):
        stage_sizes(parse_stages("512x512, 1024x1024"), 80, 80)


def test_factors_that_round_to_the_same_size_are_rejected():
    with pytest.raises(StageSpecError, match="round to the same size"):
        stage_sizes(parse_stages("1, 1.05"), 8, 8)


@pytest.mark.parametrize("steps, n, expected", [
    (50, 3, [25, 13, 12]), (50, 2, [25, 25]), (20, 3, [10, 5, 5]), (10, 3, [5, 3, 2]), (28, 2, [14, 14]),
    (4, 3, [2, 1, 1]), (3, 3, [1, 1, 1]), (7, 1, [7]), (11, 4, [6, 2, 2, 1]), (30, 4, [15, 5, 5, 5]),
    (25, 4, [13, 4, 4, 4]), (2, 2, [1, 1]), (5, 2, [3, 2]),
])
def test_default_split_gives_the_first_stage_half_the_steps(steps, n, expected):
    assert default_split(steps, n) == expected
    assert split_steps(steps, n, parse_split("", n)) == expected


@pytest.mark.parametrize("steps, n, expected", [
    (50, 3, [40, 5, 5]), (50, 2, [40, 10]), (28, 3, [22, 3, 3]), (10, 3, [8, 1, 1]), (3, 3, [1, 1, 1]),
])
def test_flow_models_default_split_gives_the_first_stage_80_percent(steps, n, expected):
    from megapixel.samplers.relay_stages import FLOW_FIRST_STAGE_SHARE

    assert default_split(steps, n, FLOW_FIRST_STAGE_SHARE) == expected


@pytest.mark.parametrize("text, steps, expected", [
    ("80/10/10", 50, [40, 5, 5]),
    ("40, 5, 5", 50, [40, 5, 5]),
    ("40, 5, 5", 10, [8, 1, 1]),
    ("80% 10% 10%", 20, [16, 2, 2]),
    ("1:1", 9, [5, 4]),
    ("70/30", 10, [7, 3]),
    ("2, 1, 1", 6, [3, 2, 1]),  # remainders: ties go to the earlier stage
])
def test_explicit_split_is_apportioned(text, steps, expected):
    n = len(expected)
    assert split_steps(steps, n, parse_split(text, n)) == expected
    assert sum(expected) == steps


@pytest.mark.parametrize("text, n, steps, fragment", [
    ("80/20", 3, 50, "2 shares but there are 3 stages"),
    ("80/a/10", 3, 50, "cannot read 'a'"),
    ("80/-10/30", 3, 50, "non-negative"),
    ("0/0", 2, 50, "positive sum"),
    ("100/0", 2, 50, "stage 2 gets 0 of the 50 steps"),
    ("98/1/1", 3, 10, "stage 2 gets 0 of the 10 steps"),
])
def test_bad_splits_are_rejected(text, n, steps, fragment):
    with pytest.raises(StageSpecError, match="^step_split: ") as err:
        split_steps(steps, n, parse_split(text, n))
    assert fragment in str(err.value) and "Fix:" in str(err.value)


def test_more_stages_than_steps_is_rejected():
    with pytest.raises(StageSpecError, match="^steps: 2 steps cannot be split over 3 stages"):
        default_split(2, 3)
    with pytest.raises(StageSpecError, match="^steps: "):
        check_spec("1, 1.5, 2", "", steps=2)
    check_spec("1, 1.5, 2", "", steps=3)


def test_slices_are_consecutive_and_share_boundaries():
    sigmas = torch.linspace(10, 0, 11)
    slices = slice_sigmas(sigmas, [8, 1, 1])
    assert [len(s) - 1 for s in slices] == [8, 1, 1]
    assert torch.equal(slices[0], sigmas[:9])
    assert slices[0][-1] == slices[1][0] and slices[1][-1] == slices[2][0]
    assert slices[2][-1] == 0
    with pytest.raises(ValueError):
        slice_sigmas(sigmas, [8, 1])
