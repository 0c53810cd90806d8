"""The one-click node's native_size input: models trained at another size than their family's (SD1.5 fine-tunes at
768 px, the quality lab's 128 px model) get the rows counted from their own training size."""
from __future__ import annotations

import pytest
import torch

from megapixel.nodes.hidiffusion import HiDiffusion
from megapixel.patches.hidiffusion import OfficialSchedule
from megapixel.patches import families
from test_hidiffusion_support import denoise_once, sample, schedule, with_probe


def one_click(model, **inputs):
    return HiDiffusion.execute(model=model, **inputs).result[0]


def test_schema_default_is_auto():
    inputs = {i.id: i for i in HiDiffusion.define_schema().inputs}
    assert inputs["native_size"].optional and inputs["native_size"].default == 0 and inputs["native_size"].tooltip
    # Appended last: workflows saved before the input existed keep their widget order.
    assert list(inputs)[-1] == "native_size"


@pytest.mark.parametrize("native, px, row", [
    (0, (512, 512), None), (0, (1024, 1024), "sd15_1024"), (0, (2048, 2048), "sd15_2048"),
    (128, (128, 128), None), (128, (136, 128), "sd15_1024"), (128, (256, 256), "sd15_1024"),
    (128, (512, 512), "sd15_2048"), (128, (512, 384), "sd15_1024"),
    (768, (768, 768), None), (768, (1024, 1024), "sd15_1024"), (768, (3072, 3072), "sd15_2048"),
])
def test_rows_count_from_the_native_size(sd15, native, px, row):
    layout = families.detect_layout(sd15)
    chosen = OfficialSchedule(layout, sd15.get_model_object("model_sampling"), native_px=native)
    # The latent of a px[1] x px[0] image (h, w) in latent pixels.
    assert chosen.row((px[1] // 8, px[0] // 8)) == row


def test_at_its_native_size_the_model_is_untouched(sd15):
    patched = one_click(sd15, native_size=128)
    sigma = float(sd15.get_model_object("model_sampling").sigma_max)
    assert torch.equal(denoise_once(patched, (16, 16), sigma), denoise_once(sd15, (16, 16), sigma))
    # 2x the native side acts (and would not with the family's 512 px: 256 px is below it).
    assert not torch.equal(denoise_once(patched, (32, 32), sigma), denoise_once(sd15, (32, 32), sigma))
    auto = one_click(sd15)
    assert torch.equal(denoise_once(auto, (32, 32), sigma), denoise_once(sd15, (32, 32), sigma))


def test_four_times_native_takes_the_2048_row(sd15):
    patched, probe = with_probe(one_click(sd15, native_size=128, msw_msa=False))
    sample(patched, (64, 64), schedule(sd15, 10))
    conv_steps = sum(hw == (16, 16) for _, hw in probe.at_block(3))  # stride-4 conv: 64 -> 16 instead of 32
    assert conv_steps == pytest.approx(7, abs=1)  # the 2048 row's T1 = 0.7


@pytest.mark.parametrize("bad", [8, 60, 129])
def test_bad_native_size_names_node_and_input(sd15, bad):
    with pytest.raises(ValueError, match="HiDiffusion: native_size"):
        one_click(sd15, native_size=bad)


def test_out_of_list_block_choice_names_node_and_input():
    from megapixel.nodes.hidiffusion import phase_for

    with pytest.raises(ValueError, match=r"HiDiffusion RAU-Net \(advanced\): t1_blocks: 'pool at input 5' is not one"):
        phase_for("pool at input 5", "T1", "SD1", 0.0, 0.4)
