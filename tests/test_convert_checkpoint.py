"""convert/checkpoint.py and convert/arch: config.json in transformers v4 and v5 layouts.

ORACLE: the config layouts transformers writes (v4: rope_theta + rope_scaling{type|rope_type};
v5: rope_parameters, per layer type for sliding-window models) and convert_hf_to_gguf's reading of
them (TextModel.__init__ / set_gguf_parameters).
"""
from __future__ import annotations

import json

import pytest

from ggq.convert.arch import arch_for, params_from_config
from ggq.convert.arch.base import common_metadata
from ggq.convert.checkpoint import load_config, resolve_source, rope_parameters
from ggq.errors import GGQError


def test_v4_and_v5_llama3_rope_read_the_same():
    v4 = {"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}
    v5 = {"rope_parameters": {"rope_type": "llama3", "factor": 32.0, "rope_theta": 500000.0}}
    assert rope_parameters(v4) == rope_parameters(v5) == {"rope_type": "llama3", "factor": 32.0,
                                                          "rope_theta": 500000.0}


def test_old_type_spelling_and_local_base():
    cfg = {"rope_theta": 1e6, "rope_local_base_freq": 10000.0, "rope_scaling": {"type": "linear", "factor": 8.0}}
    assert rope_parameters(cfg) == {"type": "linear", "rope_type": "linear", "factor": 8.0, "rope_theta": 1e6,
                                    "sliding_attention": {"rope_theta": 10000.0}}


def test_v5_per_layer_type_gemma3():
    cfg = {"architectures": ["Gemma3ForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": 512,
           "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}
    md = common_metadata("gemma3", params_from_config(cfg, arch_for("Gemma3ForCausalLM").config_defaults))
    assert md["gemma3.rope.freq_base"] == 1e6 and md["gemma3.rope.freq_base_swa"] == 10000.0
    assert md["gemma3.rope.scaling.type"] == "linear" and md["gemma3.rope.scaling.factor"] == 8.0
    assert md["gemma3.attention.layer_norm_rms_epsilon"] == 1e-6  # Gemma3Model's default
    assert md["gemma3.context_length"] == 131072 and md["gemma3.attention.key_length"] == 256


def test_text_config_is_lifted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"], "text_config": {"hidden_size": 8}}))
    assert load_config(tmp_path)["hidden_size"] == 8


@pytest.mark.parametrize("bad", [{"hidden_size": "big"}, {"num_hidden_layers": -1}, {"rms_norm_eps": None},
                                 {"num_attention_heads": 3}])
def test_bad_config_values(bad):
    cfg = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
           "rms_norm_eps": 1e-5, **bad}
    with pytest.raises(GGQError, match="config.json"):
        params_from_config(cfg, {})


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(GGQError, match="cannot read config"):
        load_config(tmp_path)


def test_revision_on_local_folder_refused(tmp_path):
    with pytest.raises(GGQError, match="--revision"):
        resolve_source(str(tmp_path), revision="main")
