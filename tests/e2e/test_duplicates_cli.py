"""``lookalike duplicates`` on a real SQLite file, over a folder of scikit-image photos
with copies made the way people make them: smaller JPEGs, and turned ones."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import photo
from PIL import Image

from .test_cli import run, run_process

ORIGINALS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five photos as PNG; astronaut and coffee also as a half-size JPEG and turned a
    quarter; rocket as a half-size JPEG with metadata-free name."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in ORIGINALS:
        image = Image.fromarray(photo(name))
        image.save(pictures / f"{name}.png")
        if name in ("astronaut", "coffee", "rocket"):
            small = image.resize((image.width // 2, image.height // 2))
            small.save(pictures / f"{name}-small.jpg", quality=85)
        if name in ("astronaut", "coffee"):
            image.rotate(90, expand=True).save(pictures / f"{name}-turned.jpg", quality=90)
    return pictures


@pytest.fixture
def store(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / "store.db"
    added = run(path, "add", str(folder), "--quiet")
    assert added.returncode == 0, added.stderr
    return path


def groups_of(store: Path, *args: str) -> list[dict]:
    found = run(store, "duplicates", "--json", *args)
    assert found.returncode == 0, found.stderr
    parsed: list[dict] = json.loads(found.stdout)
    return parsed


def names(group: dict) -> list[str]:
    return [Path(m["filepath"]).name for m in group["members"]]


def test_groups_of_copies_the_original_first(store: Path, folder: Path) -> None:
    groups = groups_of(store)
    assert [names(g) for g in groups] == [
        ["astronaut.png", "astronaut-turned.jpg", "astronaut-small.jpg"],
        ["coffee.png", "coffee-turned.jpg", "coffee-small.jpg"],
        ["rocket.png", "rocket-small.jpg"],
    ]
    astronaut = groups[0]
    assert astronaut["keep"] == str(folder / "astronaut.png")
    kept, turned, small = astronaut["members"]
    assert (kept["distance"], kept["score"], kept["width"], kept["height"]) == (
        0.0,
        100.0,
        512,
        512,
    )
    assert turned["orientation"] == "rot90" and turned["distance"] < 0.05  # a square picture
    assert small["orientation"] == "identity" and 0 < small["distance"] < 0.2
    assert small["bytes"] == (folder / "astronaut-small.jpg").stat().st_size
    coffee_turned = groups[1]["members"][1]
    assert (coffee_turned["width"], coffee_turned["height"]) == (400, 600)
    assert all(g["min_distance"] <= g["max_distance"] < 0.45 for g in groups)


def test_options_change_the_groups(store: Path, folder: Path) -> None:
    unturned = groups_of(store, "--no-orientations")  # pairs alike: the closest first
    assert sorted(names(g) for g in unturned) == [
        ["astronaut.png", "astronaut-small.jpg"],
        ["coffee.png", "coffee-small.jpg"],
        ["rocket.png", "rocket-small.jpg"],
    ]
    # one `add` gives its images one time: added again later, the turned copy is newest
    turned = folder / "astronaut-turned.jpg"
    assert run(store, "delete", str(turned)).returncode == 0
    assert run(store, "add", str(turned), "--quiet").returncode == 0
    assert names(groups_of(store, "--keep", "newest")[0])[0] == "astronaut-turned.jpg"
    assert names(groups_of(store, "--keep", "oldest")[0])[0] == "astronaut-small.jpg"
    assert len(groups_of(store, "--min-size", "3")) == 2
    assert groups_of(store, "--min-score", "99.9") == [
        g for g in groups_of(store, "--max-distance", "0.001")
    ]
    assert all(len(g["members"]) == 2 for g in groups_of(store, "--min-score", "99.9"))


def test_csv_one_row_per_member(store: Path) -> None:
    found = run(store, "duplicates", "--csv")
    rows = list(csv.DictReader(io.StringIO(found.stdout)))
    assert [(r["group"], r["keep"], Path(r["filepath"]).name) for r in rows][:3] == [
        ("1", "yes", "astronaut.png"),
        ("1", "no", "astronaut-turned.jpg"),
        ("1", "no", "astronaut-small.jpg"),
    ]
    assert len(rows) == 8 and {r["width"] for r in rows} >= {"512", "256"}


def test_a_pair_marked_distinct_stays_apart(store: Path, folder: Path) -> None:
    small, kept = str(folder / "rocket-small.jpg"), str(folder / "rocket.png")
    assert run(store, "duplicates", "--distinct", small, kept).returncode == 0
    listed = run(store, "duplicates", "--list-distinct", "--json")
    assert json.loads(listed.stdout) == [sorted([small, kept])]
    assert [names(g)[0] for g in groups_of(store)] == ["astronaut.png", "coffee.png"]
    # in a process of its own too: the mark is in the store
    again = run_process(store, "duplicates", "--json")
    assert [Path(g["keep"]).name for g in json.loads(again.stdout)] == [
        "astronaut.png",
        "coffee.png",
    ]
    assert run(store, "duplicates", "--not-distinct", kept, small).returncode == 0
    assert len(groups_of(store)) == 3
    missing = run(store, "duplicates", "--distinct", kept, "nowhere.jpg")
    assert missing.returncode == 3 and "nowhere.jpg" in missing.stderr
    # deleted with either image
    run(store, "duplicates", "--distinct", small, kept)
    assert run(store, "delete", small).returncode == 0
    assert run(store, "duplicates", "--list-distinct").stdout == ""


def test_delete_others_removes_exactly_the_others_and_no_file(store: Path, folder: Path) -> None:
    before = set(run(store, "list", "--limit", "100").stdout.split())
    dry = run(store, "duplicates", "--delete-others", "--dry-run")
    assert dry.returncode == 0 and "would remove 5 images" in dry.stderr
    assert set(run(store, "list", "--limit", "100").stdout.split()) == before
    done = run(store, "duplicates", "--delete-others")
    assert done.returncode == 0, done.stderr
    removed = {line.split("removing ", 1)[1].removesuffix(" from the store")
               for line in done.stderr.splitlines() if "removing " in line}  # fmt: skip
    assert {Path(p).name for p in removed} == {
        "astronaut-turned.jpg",
        "astronaut-small.jpg",
        "coffee-turned.jpg",
        "coffee-small.jpg",
        "rocket-small.jpg",
    }
    assert set(run(store, "list", "--limit", "100").stdout.split()) == before - removed
    assert all(Path(p).exists() for p in removed)  # never files on disk
    assert groups_of(store) == []
