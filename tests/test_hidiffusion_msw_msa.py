"""MSW-MSA: window geometry, exactness against per-window attention, gating, composition with other attn1 patches."""
from __future__ import annotations

import pytest
import torch

from megapixel.patches import families, msw_msa
from megapixel.patches.msw_msa import MswMsa, SigmaGate, WindowGeometry, partition, reverse, token_grid
from megapixel.patches.schedule import step_index
from test_hidiffusion_support import HostReads, batch_noise, denoise_once, sample, schedule, snapshot


def official_msw(model, start=0.0, end=1.0, shift_mode="cycle"):
    layout = families.detect_layout(model)
    return msw_msa.apply_msw_msa(model, msw_msa.official_blocks(layout, model), start, end, shift_mode)


# --- geometry -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(8, 8), (7, 9), (1 + 2, 5), (16, 4), (13, 52), (125, 125)])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_partition_and_reverse_are_exact_inverses(h, w, k):
    g = WindowGeometry.for_offset(h, w, k)
    x = torch.randn(3, h * w, 5)
    windows = partition(x, g)
    assert windows.shape == (12, g.wh * g.ww, 5)
    assert torch.equal(reverse(windows, g), x)


def test_windows_are_the_four_quadrants_of_the_shifted_grid():
    h, w = 8, 12
    ids = torch.arange(h * w, dtype=torch.float32).reshape(1, h * w, 1)
    grid = ids.reshape(h, w)
    g0 = WindowGeometry.for_offset(h, w, 0)
    windows = partition(ids, g0).reshape(4, 4, 6)
    assert torch.equal(windows[0], grid[:4, :6]) and torch.equal(windows[1], grid[:4, 6:])
    assert torch.equal(windows[2], grid[4:, :6]) and torch.equal(windows[3], grid[4:, 6:])
    g2 = WindowGeometry.for_offset(h, w, 2)  # official offset 2: (2 * 4 // 4, 2 * 6 // 4) = (2, 2)
    assert g2.shift == (2, 2)
    shifted = torch.roll(grid, shifts=(-2, -2), dims=(0, 1))
    assert torch.equal(partition(ids, g2).reshape(4, 4, 6)[0], shifted[:4, :6])


def test_official_offsets():
    assert [WindowGeometry.for_offset(64, 32, k).shift for k in range(4)] == [(0, 0), (8, 4), (16, 8), (24, 12)]
    assert [msw_msa.shift_offset("cycle", s) for s in range(6)] == [0, 1, 2, 3, 0, 1]
    assert {msw_msa.shift_offset("pseudo-random", s) for s in range(40)} == {0, 1, 2, 3}
    assert [msw_msa.shift_offset("pseudo-random", s) for s in range(8)] == \
           [msw_msa.shift_offset("pseudo-random", s) for s in range(8)]
    assert {msw_msa.shift_offset("none", s) for s in range(8)} == {0}


@pytest.mark.parametrize("latent", [(125, 125), (64, 256), (127, 79), (96, 96), (1, 9)])
def test_token_grid_recovers_every_level(latent):
    for k in range(6):
        h, w = -(-latent[0] // 2 ** k), -(-latent[1] // 2 ** k)
        assert token_grid(h * w, latent) == (h, w)


def test_token_grid_falls_back_to_the_closest_aspect():
    # 1.5x Deep-Shrink-like factor: 64x96 latent -> 43x64 features
    assert token_grid(43 * 64, (64, 96)) == (43, 64)


def test_step_index_from_the_schedule():
    sigmas = torch.tensor([14.6, 8.0, 3.0, 1.0, 0.0])
    assert [step_index({"sample_sigmas": sigmas}, s) for s in (14.6, 8.0, 3.0, 1.0)] == [0, 1, 2, 3]
    assert step_index({"sample_sigmas": sigmas}, 5.0) == 2  # a second-order sampler's midpoint
    assert step_index({}, 5.0) == step_index({}, 5.0)


# --- exactness in a real transformer block ------------------------------------------------------------------
def _options(patch, h, w):
    return {"patches": {"attn1_patch": [patch.attn1_patch], "attn1_output_patch": [patch.attn1_output_patch]},
            "block": ("input", 1), "block_index": 0, "original_shape": [1, 4, h, w],
            "sigmas": torch.tensor([5.0]), "sample_sigmas": torch.tensor([5.0, 0.0])}


@pytest.mark.parametrize("h, w", [(8, 8), (7, 11)])
def test_windowed_block_equals_the_block_run_per_window(sd15, h, w):
    """Everything in a transformer block but attn1 works per token, so MSW-MSA must equal running the unpatched
    block on the four windows as a batch (odd sides: padded with edge tokens, cropped back)."""
    block = sd15.model.diffusion_model.input_blocks[1][1].transformer_blocks[0]
    gate = SigmaGate(sd15.get_model_object("model_sampling"), 0.0, 1.0)
    patch = MswMsa([("input", 1)], gate)
    x = torch.randn(2, h * w, block.attn1.to_q.in_features)
    context = torch.randn(2, 7, 32)
    with torch.no_grad():
        windowed = block(x, context=context, transformer_options=_options(patch, h, w))
        g = WindowGeometry.for_offset(h, w, 0)
        expected = reverse(block(partition(x, g), context=context.repeat_interleave(4, 0),
                                 transformer_options={}), g)
        plain = block(x, context=context, transformer_options={})
    assert torch.allclose(windowed, expected, atol=1e-5)
    assert not torch.allclose(windowed, plain, atol=1e-3)


def test_tokens_only_attend_within_their_window(sd15):
    block = sd15.model.diffusion_model.input_blocks[1][1].transformer_blocks[0]
    patch = MswMsa([("input", 1)], SigmaGate(sd15.get_model_object("model_sampling"), 0.0, 1.0))
    x = torch.randn(1, 64, block.attn1.to_q.in_features)
    bumped = x.clone()
    bumped[0, 0] += 1.0  # token (0, 0): window 0
    context = torch.randn(1, 7, 32)
    with torch.no_grad():
        a = block(x, context=context, transformer_options=_options(patch, 8, 8)).reshape(8, 8, -1)
        b = block(bumped, context=context, transformer_options=_options(patch, 8, 8)).reshape(8, 8, -1)
    changed = (a - b).abs().amax(-1) > 1e-6
    assert changed[:4, :4].any() and not changed[4:, :].any() and not changed[:, 4:].any()


# --- in sampling --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["sd15", "sdxl"])
def test_inactive_window_is_bit_identical(fixture, request):
    model = request.getfixturevalue(fixture)
    patched = official_msw(model, 0.5, 1.0)
    sigma = float(model.get_model_object("model_sampling").sigma_max)  # before the window starts
    assert torch.equal(denoise_once(patched, (18, 22), sigma, batch=2), denoise_once(model, (18, 22), sigma, batch=2))
    late = model.get_model_object("model_sampling").percent_to_sigma(0.8)
    assert not torch.equal(denoise_once(patched, (18, 22), late), denoise_once(model, (18, 22), late))


@pytest.mark.parametrize("fixture, hw", [("sd15", (25, 19)), ("sd2v", (9, 36)), ("sdxl", (79, 127)),
                                         ("sdxl", (33, 17))])
def test_odd_sizes_and_batches(fixture, hw, request):
    model = request.getfixturevalue(fixture)
    patched = official_msw(model)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    noise = batch_noise(hw, 2, seed=4)
    batch = denoise_once(patched, hw, sigma, noise=noise)
    assert batch.shape == (2, 4, *hw) and torch.isfinite(batch).all()
    single = denoise_once(patched, hw, sigma, noise=noise[:1])
    assert torch.allclose(batch[:1], single, rtol=0, atol=1e-5 * float(batch.abs().max()))


def test_deterministic_and_shift_modes_differ(sd15):
    sigmas = schedule(sd15, 4)
    cycle = official_msw(sd15, shift_mode="cycle")
    a = sample(cycle, (16, 20), sigmas, seed=2, cfg=3.0)
    b = sample(cycle, (16, 20), sigmas, seed=2, cfg=3.0)
    assert torch.equal(a, b)
    none = sample(official_msw(sd15, shift_mode="none"), (16, 20), sigmas, seed=2, cfg=3.0)
    assert not torch.equal(a, none)


def test_input_model_is_not_mutated(sdxl):
    before = snapshot(sdxl)
    sample(official_msw(sdxl), (16, 16), schedule(sdxl, 2))
    assert snapshot(sdxl) == before


def test_chains_with_other_attn1_patches(sd15):
    """Patches already on the model see the whole token map; our output patch runs first, so every output patch,
    including ones added later, sees whole token maps too."""
    seen = []

    def before_patch(n, context, value, extra_options):
        if extra_options["block"] == ("input", 1):
            seen.append(("attn1", n.shape[0], n.shape[1]))
        return n * 1.0, context, value

    def output_patch(n, extra_options):
        if extra_options["block"] == ("input", 1):
            seen.append(("out", n.shape[0], n.shape[1]))
        return n

    def later_output_patch(n, extra_options):
        if extra_options["block"] == ("input", 1):
            seen.append(("later", n.shape[0], n.shape[1]))
        return n

    base = sd15.clone()
    base.set_model_attn1_patch(before_patch)
    base.set_model_attn1_output_patch(output_patch)
    patched = official_msw(base)
    patches = patched.model_options["transformer_options"]["patches"]
    assert patches["attn1_patch"][0] is before_patch and len(patches["attn1_patch"]) == 2
    assert patches["attn1_output_patch"][1] is output_patch and len(patches["attn1_output_patch"]) == 2
    assert base.model_options["transformer_options"]["patches"]["attn1_output_patch"] == [output_patch]
    patched.set_model_attn1_output_patch(later_output_patch)
    out = denoise_once(patched, (16, 20), 5.0, batch=2, cfg=3.0)
    assert torch.isfinite(out).all()
    # cond + uncond = batch 4 of 16*20 tokens, never the 16 windows of 80 tokens
    assert set(seen) == {("attn1", 4, 320), ("out", 4, 320), ("later", 4, 320)}


def test_extra_reference_tokens_are_shared_by_all_windows(sd15):
    def add_reference(n, context, value, extra_options):
        extra = torch.zeros_like(n[:, :5])
        return n, torch.cat([context, extra], 1), torch.cat([value, extra], 1)

    base = sd15.clone()
    base.set_model_attn1_patch(add_reference)
    out = denoise_once(official_msw(base), (16, 16), 5.0)
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_block_selection_is_validated(sd15):
    with pytest.raises(ValueError, match="no self-attention"):
        msw_msa.apply_msw_msa(sd15, [("input", 3)], node="MSW-MSA")
    with pytest.raises(ValueError, match="cannot read"):
        msw_msa.parse_blocks("input one")
    assert msw_msa.parse_blocks("auto") is None
    assert msw_msa.parse_blocks("input 1, output 9;output 10") == [("input", 1), ("output", 9), ("output", 10)]
    assert msw_msa.official_blocks(families.detect_layout(sd15), sd15) == [
        ("input", 1), ("input", 2), ("output", 9), ("output", 10), ("output", 11)]


# --- first principles: odd grids and the sigma gate, expectations built by hand -------------------------------------
def windowed_by_hand(block, x, context, h, w, shift):
    """MSW-MSA as HiDiffusion defines it, in plain torch: pad an odd side by repeating the last row / column, roll the
    padded grid by -shift, cut it into 2x2 windows of ceil(h/2) x ceil(w/2), run the block on each window alone,
    put the windows back, roll by +shift and crop the padding."""
    b, _, c = x.shape
    grid = x.reshape(b, h, w, c)
    if h % 2:
        grid = torch.cat([grid, grid[:, h - 1:h]], dim=1)
    if w % 2:
        grid = torch.cat([grid, grid[:, :, w - 1:w]], dim=2)
    grid = torch.roll(grid, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    wh, ww = grid.shape[1] // 2, grid.shape[2] // 2
    out = torch.empty_like(grid)
    for i in range(2):
        for j in range(2):
            window = grid[:, i * wh:(i + 1) * wh, j * ww:(j + 1) * ww].reshape(b, wh * ww, c)
            result = block(window, context=context, transformer_options={})
            out[:, i * wh:(i + 1) * wh, j * ww:(j + 1) * ww] = result.reshape(b, wh, ww, c)
    out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out[:, :h, :w].reshape(b, h * w, c)


@pytest.mark.parametrize("h, w", [(9, 11), (7, 8), (8, 13)])
@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_odd_grids_match_windows_built_by_hand(sd15, h, w, step):
    block = sd15.model.diffusion_model.input_blocks[1][1].transformer_blocks[0]
    patch = MswMsa([("input", 1)], SigmaGate(sd15.get_model_object("model_sampling"), 0.0, 1.0))
    schedule_ = torch.tensor([9.0, 7.0, 5.0, 3.0, 1.0, 0.0])
    options = {"patches": {"attn1_patch": [patch.attn1_patch], "attn1_output_patch": [patch.attn1_output_patch]},
               "block": ("input", 1), "block_index": 0, "original_shape": [2, 4, h, w],
               "sigmas": schedule_[step:step + 1], "sample_sigmas": schedule_}
    # The official offsets: step k of the cycle shifts by k quarters of a window (window // 4 * k, rounded down).
    shift = ((-(-h // 2)) // 4 * step, (-(-w // 2)) // 4 * step)
    x = torch.randn(2, h * w, block.attn1.to_q.in_features, generator=torch.Generator().manual_seed(step))
    context = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(10 + step))
    with torch.no_grad():
        got = block(x, context=context, transformer_options=options)
        expected = windowed_by_hand(block, x, context, h, w, shift)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def _float32_after(x: float) -> float:
    return float(torch.nextafter(torch.tensor(x, dtype=torch.float32), torch.tensor(float("inf"))))


def test_gate_is_open_for_sigma_end_below_sigma_up_to_sigma_start(sd15):
    """Windowing acts for sigma_end < sigma <= sigma_start (the model's percent_to_sigma of end and start): a call
    exactly at sigma_end runs whole-map attention, one exactly at sigma_start runs windows."""
    ms = sd15.get_model_object("model_sampling")
    start, end = 0.2, 0.6
    sigma_start, sigma_end = float(ms.percent_to_sigma(start)), float(ms.percent_to_sigma(end))
    seen = []

    def probe(n, context, value, extra_options):  # added after MSW-MSA's patch: sees the windows when it acts
        if extra_options["block"] == ("input", 1):
            seen.append((float(extra_options["sigmas"][0]), n.shape[0]))
        return n, context, value

    patched = official_msw(sd15, start, end).clone()
    patched.set_model_attn1_patch(probe)
    expected = {sigma_end: False, _float32_after(sigma_end): True, sigma_start: True,
                _float32_after(sigma_start): False, sigma_end * 0.5: False}
    for sigma, active in expected.items():
        seen.clear()
        denoise_once(patched, (16, 16), sigma)
        assert seen == [(sigma, 4 if active else 1)], (sigma, active)


def test_msw_msa_reads_sigma_and_schedule_from_the_device_once_per_step(sd15):
    """Every windowed block of a model call asks for the sigma and the step: the tensors are read to the host once
    per step, not once per block (on a GPU each read is a sync)."""
    patch = MswMsa([("input", 1), ("input", 2)], SigmaGate(sd15.get_model_object("model_sampling"), 0.0, 1.0))
    options = {"block": ("input", 1), "original_shape": [1, 4, 8, 8],
               "sigmas": torch.tensor([5.0]).as_subclass(HostReads),
               "sample_sigmas": torch.tensor([9.0, 5.0, 0.0]).as_subclass(HostReads)}
    n = torch.randn(1, 64, 8)
    HostReads.count = 0
    patch.attn1_output_patch(patch.attn1_patch(n, n, n, options)[0], options)
    first = HostReads.count
    for block in [("input", 1), ("input", 2)] * 8:
        options["block"] = block
        windows, _, _ = patch.attn1_patch(n, n, n, options)
        assert windows.shape[0] == 4
        patch.attn1_output_patch(windows, options)
    assert first >= 1 and HostReads.count == first
