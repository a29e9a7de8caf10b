import pytest

torch = pytest.importorskip("torch")

from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint  # noqa: E402
from acids_core.errors import DataError, MissingInput  # noqa: E402


def _env(version=1, **payload):
    return make_envelope(
        format="acids-test",
        format_version=version,
        payload={"state": {"w": torch.arange(4.0)}, "step": 7, **payload},
        config={"channels": 4, "ratios": [2, 2]},
        package="acids-test",
        package_version="0.1.0",
    )


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", _env())
    env = load_checkpoint(path, format="acids-test", max_version=1)
    assert env["payload"]["step"] == 7
    assert torch.equal(env["payload"]["state"]["w"], torch.arange(4.0))
    assert env["config"]["ratios"] == [2, 2]
    assert env["package_version"] == "0.1.0"


def test_newer_version_is_refused_with_what_to_upgrade(tmp_path):
    save_checkpoint(tmp_path / "new.ckpt", _env(version=3))
    with pytest.raises(DataError, match=r"version 3 is newer .* upgrade acids-test"):
        load_checkpoint(tmp_path / "new.ckpt", format="acids-test", max_version=2)


def test_other_format_and_garbage_and_missing(tmp_path):
    save_checkpoint(tmp_path / "a.ckpt", _env())
    with pytest.raises(DataError, match="is a 'acids-test' checkpoint, expected 'acids-rave'"):
        load_checkpoint(tmp_path / "a.ckpt", format="acids-rave")
    (tmp_path / "junk.ckpt").write_bytes(b"hello, not a checkpoint")
    with pytest.raises(DataError, match="not a readable checkpoint") as junk:
        load_checkpoint(tmp_path / "junk.ckpt")
    # one short line, not torch's paragraphs about weights_only
    assert "\n" not in str(junk.value) and len(str(junk.value)) < 200 + len(str(tmp_path))
    assert "PyTorch 2.6" not in str(junk.value)
    real = tmp_path / "a.ckpt"
    (tmp_path / "cut.ckpt").write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable checkpoint") as cut:
        load_checkpoint(tmp_path / "cut.ckpt")
    assert "\n" not in str(cut.value)
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(DataError, match="not an acids checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(MissingInput):
        load_checkpoint(tmp_path / "missing.ckpt")


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_weights_only_refuses_code(tmp_path):
    env = _env()
    env["payload"]["evil"] = Evil()
    torch.save(env, tmp_path / "evil.ckpt")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "a.ckpt", _env())
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _env(step=8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary left behind
