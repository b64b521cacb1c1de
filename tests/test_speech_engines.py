"""The recorded-speech engines (Festival, Flite) without their program: one line naming the
package to install, before any work. These run whether or not the engines are installed."""

from __future__ import annotations

import shutil

import pytest

from model.train.festival import Festival
from model.train.flite import Flite
from stream.errors import ModelError


@pytest.mark.parametrize(("engine", "package"), [(Festival, "festival"), (Flite, "flite")])
def test_a_missing_engine_is_one_line_naming_the_package(monkeypatch, tmp_path, engine, package) -> None:  # noqa: ANN001
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ModelError, match=f"not installed: apt-get install {package}") as e:
        engine()
    assert "\n" not in str(e.value)
    # a given path that is not a program says the same
    (tmp_path / package).write_text("not a program")
    for path in (str(tmp_path / "nothing"), str(tmp_path / package), str(tmp_path)):
        with pytest.raises(ModelError, match=f"apt-get install {package}"):
            engine(executable=path)
