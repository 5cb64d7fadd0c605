"""`python -m bench.variants`: set-ups side by side on choosing worlds, one tiny run end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.variants import main

CHOOSING = '[benchmark]\npurpose = "choosing"\n'


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.toml": "[joiner]\ncredit = 'equal'\n"}, 'expected \\[benchmark\\] purpose = "choosing"'),
        ({"a.toml": '[benchmark]\npurpose = "report"\n'}, 'expected \\[benchmark\\] purpose = "choosing"'),
        ({"a.toml": CHOOSING + "[learner]\nmin_probability = 2\n"}, "learner.min_probability"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([write(tmp_path, name, text) for name, text in files.items()])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(("seeds", "message"), [("201", "only choosing worlds and telecom; got g201 \\(held out\\)"),
                                                ("11", "got g11")])  # fmt: skip
def test_only_choosing_worlds(tmp_path: Path, capsys: pytest.CaptureFixture[str], seeds: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([write(tmp_path, "a.toml", CHOOSING), "--seeds", seeds])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_two_variants_on_one_tiny_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path, "raw.toml", CHOOSING + '[features]\nnumeric_default = "raw"\n')
    floor = write(tmp_path, "floor.toml", CHOOSING + "[learner]\nmin_probability = 0.02\n")
    main(["--worlds", "1", "--days", "35", "--decisions", "400", "--jobs", "1", "--json", raw, floor])
    result = json.loads(capsys.readouterr().out)
    (world,) = result["worlds"]
    assert world["world"] == "g101" and set(world["share"]) == {"raw", "floor"} and world["decisions"] > 300
    assert set(result["summary"]) == {"raw", "floor"} and result["summary"]["floor"]["median_share"] == world["share"]["floor"]
    assert world["tuning"] == {"raw": [], "floor": []} and result["summary"]["raw"]["promotions"] == 0  # [tuning] is off
