"""The ablation table: pooled accuracies, paired changes from the full recipe, and its refusals."""

from __future__ import annotations

import json

import pytest

from vinci_edge.evaluation import ablations


def scored(rights: list[bool], categories: list[str]) -> list[dict]:
    return [
        {"clip": f"clips/{i // 2}.mp4", "question": f"q{i}", "category": c, "right": r}
        for i, (r, c) in enumerate(zip(rights, categories))
    ]


CATS = ["vision", "vision", "time", "time"]


def report() -> dict:
    return {
        "split": {"clips": 2, "questions": 4},
        "answers": {
            "none-s0": scored([True, True, True, False], CATS),
            "none-s1": scored([True, False, True, True], CATS),
            "no-crte-s0": scored([True, True, False, False], CATS),
            "no-crte-s1": scored([True, False, False, True], CATS),
        },
    }


def test_pooled_accuracy_and_the_paired_change():
    table = ablations.ablation_table(report())
    assert table["seeds"] == {"none": [0, 1], "no-crte": [0, 1]}
    full, cut = table["rows"]["none"], table["rows"]["no-crte"]
    assert (full["overall"]["right"], full["overall"]["n"]) == (6, 8)
    assert full["time"]["per_seed"] == {0: 0.5, 1: 1.0}
    assert "delta" not in full["overall"]
    # no-crte loses exactly the first time question of each seed: -2 of 4 time questions
    assert cut["time"]["delta"] == pytest.approx(-0.5)
    assert cut["vision"]["delta"] == 0.0 and cut["vision"]["delta_ci95"] == [0.0, 0.0]
    # differences -1, 0, -1, 0: sample sd sqrt(1/3), 4 pairs -> half width 1.96 * sqrt(1/12)
    half = ablations.Z95 * (1 / 12) ** 0.5
    assert cut["time"]["delta_ci95"] == pytest.approx([-0.5 - half, -0.5 + half])
    assert cut["overall"]["delta"] == pytest.approx(-2 / 8)


def test_the_report_files(tmp_path):
    table = ablations.ablation_table(report())
    paths = ablations.write(table, tmp_path, {"clips": 2, "questions": 4})
    assert [p.name for p in paths] == list(ablations.NAMES)
    md = (tmp_path / "ablations.md").read_text()
    assert "| no-crte (seeds 0,1) |" in md and "-50.0" in md
    assert json.loads((tmp_path / "ablations.json").read_text())["rows"]["no-crte"]["time"]["n"] == 4
    assert "<circle" in (tmp_path / "ablations.svg").read_text()


def test_runs_must_be_named_and_comparable(tmp_path):
    bad = report()
    bad["answers"]["fp32"] = bad["answers"].pop("none-s1")
    with pytest.raises(ValueError, match="<ablation>-s<seed>"):
        ablations.ablation_table(bad)
    other = report()
    other["answers"]["no-crte-s1"] = other["answers"]["no-crte-s1"][:3]
    with pytest.raises(ValueError, match="different questions"):
        ablations.ablation_table(other)
    no_base = report()
    del no_base["answers"]["none-s0"], no_base["answers"]["none-s1"]
    with pytest.raises(ValueError, match="full recipe"):
        ablations.ablation_table(no_base)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(bad))
    assert ablations.main(["--report", str(path), "--out", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()


def test_an_out_that_is_a_file_is_refused_before_the_report_is_read(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report()))
    blocker = tmp_path / "table"
    blocker.write_text("not a folder")
    assert ablations.main(["--report", str(path), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"
