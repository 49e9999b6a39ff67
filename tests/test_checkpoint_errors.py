"""Malformed checkpoints fail with one line that names the file or tensor and what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechkit.errors import CheckpointError
from speechkit.model.loader import load_audio_tower

ENC_KEY = "model.embed_tokens_extend.audio_embed.encoder.encoders.1.self_attn.linear_q.weight"


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def _shard_of(root, key):
    index = json.loads((root / "model.safetensors.index.json").read_text())
    return root / index["weight_map"][key], index


def _rewrite(root, key, new_tensor=None):
    """Rewrite the shard holding ``key`` with that tensor replaced (or dropped when None)."""
    path, index = _shard_of(root, key)
    tensors = load_file(str(path))
    if new_tensor is None:
        del tensors[key]
        del index["weight_map"][key]
        (root / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        tensors[key] = new_tensor
    save_file(tensors, str(path))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_tensor(ckpt):
    _rewrite(ckpt, ENC_KEY)
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert f"missing tensor {ENC_KEY!r}" in _one_line(err) and "re-download" in str(err.value)


def test_wrong_shape(ckpt):
    _rewrite(ckpt, ENC_KEY, torch.zeros(3, 5, dtype=torch.bfloat16))
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert ENC_KEY in _one_line(err) and "shape [3, 5], expected [64, 64]" in str(err.value)


def test_unexpected_tensor(ckpt):
    key = "model.embed_tokens_extend.audio_embed.encoder.mystery.weight"
    path, index = _shard_of(ckpt, ENC_KEY)
    tensors = load_file(str(path))
    tensors[key] = torch.zeros(2)
    save_file(tensors, str(path))
    index["weight_map"][key] = path.name
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert "unexpected tensor" in _one_line(err) and key in str(err.value)


def test_truncated_shard(ckpt):
    path, _ = _shard_of(ckpt, ENC_KEY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert path.name in _one_line(err) and "truncated" in str(err.value)


def test_garbage_shard(ckpt):
    path, _ = _shard_of(ckpt, ENC_KEY)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert "not a safetensors file" in _one_line(err)


def test_pickle_bin_instead_of_safetensors(ckpt):
    for shard in ckpt.glob("*.safetensors"):
        shard.unlink()
    (ckpt / "model.safetensors.index.json").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError) as err:
        load_audio_tower(ckpt)
    assert "never unpickles" in _one_line(err) and "pytorch_model.bin" in str(err.value)


def test_index_pointing_at_bin(ckpt):
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: "pytorch_model-00001-of-00002.bin" for k in index["weight_map"]}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="safetensors only and never unpickles"):
        load_audio_tower(ckpt)


def test_missing_shard_file(ckpt):
    path, _ = _shard_of(ckpt, ENC_KEY)
    path.unlink()
    with pytest.raises(CheckpointError, match=f"{path.name}: shard listed in .* is missing"):
        load_audio_tower(ckpt)


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_audio_tower(ckpt)


def test_malformed_config(ckpt):
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_audio_tower(ckpt)


def test_config_missing_field(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing field 'hidden_size'"):
        load_audio_tower(ckpt)


def test_not_a_directory_nor_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_audio_tower(tmp_path / "nowhere")
