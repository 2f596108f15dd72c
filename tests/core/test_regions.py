import pytest

from lora_trace.core.regions import region_of, short_name


@pytest.mark.parametrize(
    ("module", "region"),
    [
        ("speech_encoder.model.base_model.model.model.audio_tower.layers.3.self_attn.q_proj",
         "speech_encoder.model.base_model.model.model.audio_tower"),
        ("speech_encoder.model.base_model.model.model.multi_modal_projector.linear",
         "speech_encoder.model.base_model.model.model.multi_modal_projector"),
        ("proj_speech", "proj_speech"),
        ("encoder.0.linear", "encoder"),  # blocks directly under the root: the container names the region
        ("", ""),
    ],
)
def test_region_of(module, region):
    assert region_of(module) == region


def test_short_name_drops_the_peft_chain():
    assert short_name("enc.model.base_model.model.model.audio_tower") == "enc.model.model.audio_tower"
    assert short_name("base_model.model.model.layers") == "model.layers"
