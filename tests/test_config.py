"""Typed configuration: defaults, the documented config.toml, overrides, and clear errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from collections.abc import Iterator

import pytest

import stream
from stream.cli import main
from stream.config import (
    ChunkConfig,
    Config,
    PlayoutConfig,
    from_dict,
    load,
    parse_override,
    to_dict,
)
from stream.errors import ConfigError

CONFIG_TOML = os.path.join(os.path.dirname(os.path.dirname(stream.__file__)), "config.toml")


def test_defaults() -> None:
    c = Config()
    assert c.playout.delay_ms == 800 and c.playout.fallback == "hold"
    assert (c.chunk.chunk_frames, c.chunk.overlap_frames) == (8, 2)
    assert c.face.select == "largest" and c.face.detect_every_frames == 3
    assert c.vad.enabled is True and c.audio.ring_buffer_ms == 12000
    assert c.model.name == "tiny" and c.model.steps == 1  # the shipped model (tiny v2 is trained for one step)
    assert load() == c
    assert load(None, []) == c


def test_config_toml_is_exactly_the_built_in_defaults() -> None:
    assert os.path.isfile(CONFIG_TOML)
    assert load(CONFIG_TOML) == Config()
    with open(CONFIG_TOML, "rb") as fh:
        data = tomllib.load(fh)
    defaults = to_dict(Config())
    # every section and key documented, nothing extra, same values of the same types
    assert data.keys() == defaults.keys()
    for section, values in defaults.items():
        assert data[section].keys() == values.keys(), section
        for key, value in values.items():
            assert data[section][key] == value, f"{section}.{key}"
            assert type(data[section][key]) is type(value), f"{section}.{key}"


def test_set_overrides() -> None:
    c = load(None, ["playout.delay_ms=600"])
    assert c.playout.delay_ms == 600
    assert c == dataclasses.replace(Config(), playout=PlayoutConfig(delay_ms=600))
    c = load(None, ["playout.fallback=rest", "vad.threshold=0.6", "vad.enabled=false", "face.select='leftmost'"])
    assert c.playout.fallback == "rest"  # a bare word is a string
    assert c.vad.threshold == 0.6 and c.vad.enabled is False and c.face.select == "leftmost"
    assert load(None, ["face.crop_scale=2"]).face.crop_scale == 2.0  # an integer where a number goes
    assert isinstance(load(None, ["face.crop_scale=2"]).face.crop_scale, float)
    # later overrides win
    assert load(None, ["playout.delay_ms=600", "playout.delay_ms=700"]).playout.delay_ms == 700


def test_file_then_overrides(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "c.toml"
    path.write_text("[playout]\ndelay_ms = 500\nfallback = 'rest'\n")
    c = load(str(path))
    assert (c.playout.delay_ms, c.playout.fallback) == (500, "rest")
    assert c.chunk == ChunkConfig()
    c = load(str(path), ["playout.delay_ms=650"])
    assert (c.playout.delay_ms, c.playout.fallback) == (650, "rest")


def test_parse_override() -> None:
    assert parse_override("playout.delay_ms=600") == ("playout", "delay_ms", 600)
    assert parse_override(" model.device = cuda:1 ") == ("model", "device", "cuda:1")
    assert parse_override("vad.threshold=0.25") == ("vad", "threshold", 0.25)


@pytest.mark.parametrize(
    ("overrides", "must_name"),
    [
        (["nope.x=1"], ["nope", "nope.x = 1"]),  # unknown section
        (["face.nope=1"], ["face.nope = 1"]),  # unknown key
        (["playout.delay_ms=abc"], ["playout.delay_ms = 'abc'", "integer"]),  # wrong type
        (["playout.delay_ms=0.5"], ["playout.delay_ms = 0.5", "integer"]),
        (["vad.enabled=1"], ["vad.enabled = 1", "true or false"]),
        (["playout.fallback=sometimes"], ["playout.fallback = 'sometimes'", "'hold'", "'rest'"]),
        (["playout.delay_ms=20000"], ["playout.delay_ms = 20000", "10000"]),  # out of range
        (["vad.threshold=1.5"], ["vad.threshold = 1.5", "0.99"]),
        (["chunk.chunk_frames=0"], ["chunk.chunk_frames = 0"]),
        (["chunk.overlap_frames=8"], ["chunk.overlap_frames = 8", "chunk.chunk_frames = 8"]),  # overlap >= chunk
        (["chunk.chunk_frames=4", "chunk.overlap_frames=5"], ["chunk.overlap_frames = 5", "chunk.chunk_frames = 4"]),
    ],
)
def test_bad_config_names_the_key_and_the_value(overrides: list[str], must_name: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for part in must_name:
        assert part in msg, (part, msg)


def test_bad_config_file(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[playout\ndelay_ms = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(bad))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[playout]\ndelay_ms = -1\n")
    with pytest.raises(ConfigError, match="playout.delay_ms = -1"):
        load(str(wrong))


def test_malformed_override() -> None:
    for text in ["playout", "delay_ms=5", "playout.delay_ms"]:
        with pytest.raises(ConfigError, match="section.key=value"):
            load(None, [text])


def test_section_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[playout\]"):
        from_dict({"playout": 5})


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="chunk.overlap_frames"):
        Config(chunk=ChunkConfig(chunk_frames=4, overlap_frames=4))
    with pytest.raises(ConfigError, match="playout.delay_ms"):
        Config(playout=PlayoutConfig(delay_ms=-1))


# -- CLI ------------------------------------------------------------------------------------
@pytest.fixture
def keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("setting", "must_name"),
    [("face.nope=1", ["face.nope = 1"]), ("playout.delay_ms=-5", ["playout.delay_ms = -5"])],
)
def test_cli_bad_key_exits_2_with_one_line(
    setting: str,
    must_name: list[str],
    tmp_path,
    capsys,
    keep_root_logging: None,  # noqa: ANN001
) -> None:
    out = tmp_path / "x.mp4"
    rc = main(["demo", "--set", setting, "-o", str(out)])
    assert rc == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    for part in must_name:
        assert part in lines[0]
    assert captured.out == ""
    assert not out.exists()


def _bad_values(key: str, tp: object) -> list[str]:
    """TOML texts that must be refused for ``key`` of type ``tp``: the wrong type, and for
    numbers NaN, infinities and values beyond the allowed range; for choices an unknown one."""
    import typing

    from stream import config as C

    if typing.get_origin(tp) is typing.Literal:
        return ['"no-such-choice"', "3", "true"]
    if tp is bool:
        return ['"yes"', "1", "nan"]
    if tp is str:
        bad = ["5", "[1, 2]", "true"]
        if key in C._PATTERNS:
            bad += ['"banana"', '"cuda:x"', '"CPU "']
        return bad
    lo, hi = C._RANGES.get(key, (None, None))
    out = ['"ten"', "true", "[1]"]
    if tp is float:
        out += ["nan", "inf", "-inf"]
    else:
        out += ["1.5"]
    if lo is not None:
        out.append(repr(lo - (1 if tp is int else max(1e-3, abs(lo) * 0.01))))
    if hi is not None:
        out.append(repr(hi + (1 if tp is int else max(1e-3, abs(hi) * 0.01))))
    return out


def test_every_config_key_refuses_every_kind_of_bad_value_with_exit_2_and_one_line(
    tmp_path,
    capsys,
    keep_root_logging: None,  # noqa: ANN001
) -> None:
    """Walk every key of every section: each bad value (wrong type, NaN, +-inf, out of range,
    unknown choice, malformed device) gives exit 2 and one line naming the key, from the CLI."""
    import typing

    out = tmp_path / "x.mp4"
    checked = 0
    hints = typing.get_type_hints(Config)
    for sec in dataclasses.fields(Config):
        cls = hints[sec.name]
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{sec.name}.{f.name}"
            for raw in _bad_values(key, types[f.name]):
                rc = main(["file", "missing.mp4", "missing.wav", "--set", f"{key}={raw}", "-o", str(out)])
                captured = capsys.readouterr()
                lines = captured.err.splitlines()
                assert rc == 2 and len(lines) == 1, (key, raw, captured.err)
                assert f"config key {key} = " in lines[0], (key, raw, lines[0])
                checked += 1
    assert checked > 250
    assert not out.exists()


def test_config_file_that_is_a_folder_or_not_utf8_is_one_line(tmp_path, capsys, keep_root_logging) -> None:  # noqa: ANN001
    latin = tmp_path / "latin1.toml"
    latin.write_bytes("[vad]\n# café\nthreshold = 0.5\n".encode("latin-1"))
    for path, says in [(tmp_path, "is a folder"), (latin, "is not UTF-8")]:
        rc = main(["demo", "--config", str(path), "-o", str(tmp_path / "x.mp4")])
        lines = capsys.readouterr().err.splitlines()
        assert rc == 2 and len(lines) == 1 and says in lines[0] and str(path) in lines[0], lines
