import pytest
import torch

from acids_core.checkpoint import make_envelope, save_checkpoint
from acids_core.errors import DataError, MissingInput
from acids_export import registry


def test_entry_point_discovery_and_load(tiny_ckpt):
    names = [r["name"] for r in registry.available()]
    assert "tiny" in names
    row = next(r for r in registry.available() if r["name"] == "tiny")
    assert row["target"] == "acids_export_tiny:exportable" and row["package"] == "acids-export-tiny 0.0.1"
    loaded = registry.load(tiny_ckpt, streaming=True)
    assert loaded.family == "tiny" and loaded.spec.streaming
    assert [m.name for m in loaded.spec.methods] == ["forward", "encode", "decode"]
    assert loaded.spec.method("encode").params == [1, 1, 4, 16]
    assert loaded.spec.method("encode").labels()[1][0] == "(latent) 0"
    assert loaded.spec.attributes[0].default == (1.0,) and loaded.spec.attributes[0].type_ids == [2]


def test_bad_inputs_are_one_line_errors(tiny_plugin, tmp_path):
    with pytest.raises(MissingInput):
        registry.load(tmp_path / "absent.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        registry.load(tmp_path / "junk.ckpt")
    good = tiny_plugin.save(tmp_path / "good.ckpt")
    data = good.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        registry.load(tmp_path / "cut.ckpt")
    save_checkpoint(
        tmp_path / "other.ckpt", make_envelope(format="acids-nothing", format_version=1, payload={})
    )
    with pytest.raises(DataError, match="no exportable 'nothing'"):
        registry.load(tmp_path / "other.ckpt")


def test_io_spec_validation():
    with pytest.raises(DataError, match="4 positive ints"):
        registry.ExportSpec.from_io_spec("x", {"methods": {"forward": [1, 0, 1, 1]}, "sample_rate": 8000})
    with pytest.raises(DataError, match="sample_rate"):
        registry.ExportSpec.from_io_spec("x", {"methods": {"forward": [1, 1, 1, 1]}})
    spec = registry.ExportSpec.from_io_spec(
        "x", {"methods": {"forward": [1, 1, 1, 1]}, "sample_rate": 8000, "latent_dims": 3}
    )
    assert spec.extra == {"latent_dims": 3} and not spec.streaming
    assert torch.tensor(spec.methods[0].params).tolist() == [1, 1, 1, 1]
