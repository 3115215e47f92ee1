import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from subpop_runner.data import utkface
from subpop_runner.data.utkface import UTKFace, annotate
from subpop_runner.errors import ConfigError

N_ADULTS, N_CHILDREN = 50, 6
MALFORMED = ["39_1_20170116174525125.jpg.chip.jpg", "notes.txt"]  # the first is a real one


def face(number: int, size: tuple[int, int] = (200, 200)) -> Image.Image:
    """A plain image whose colour spells ``number`` (JPEG keeps a flat colour within ±2)."""
    return Image.new("RGB", size, (4 * (number % 64), 4 * (number // 64), 128))


def face_number(x: np.ndarray) -> np.ndarray:
    """``number`` back from scaled images ``[n, 3, 100, 100]``."""
    red, green = (np.rint((x[:, c, 50, 50] + 0.5) * 255 / 4).astype(int) for c in (0, 1))
    return red + 64 * green


def write_faces(folder: Path, seed: int = 0) -> Path:
    """JPEGs named as in the aligned and cropped set, ``{age}_{gender}_{race}_{date}.jpg.chip
    .jpg``: the adults numbered from 0, then some children, and badly named files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    ages = np.concatenate([rng.integers(15, 90, N_ADULTS), rng.integers(1, 15, N_CHILDREN)])
    for number, age in enumerate(ages):
        gender, race = number % 2, rng.integers(0, 5)
        date = 20170100000000000 + number
        face(number).save(folder / f"{age}_{gender}_{race}_{date}.jpg.chip.jpg", quality=95)
    for name in MALFORMED:
        (folder / name).write_bytes(b"not used")
    return folder


def an_adult(folder: Path) -> Path:
    """The first image (by name) of someone aged 15 or more: one that `load` decodes."""
    return next(p for p in sorted(folder.glob("*.chip.jpg")) if int(p.name.split("_")[0]) >= 15)


@pytest.fixture
def faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(utkface, "PART_ROWS", 15)  # 15 / 15 / rest of 50
    return write_faces(tmp_path / "UTKFace")


def test_children_dropped_and_parts_disjoint(faces):
    splits = UTKFace(data_dir=str(faces)).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (15, 15, 20)
    numbers = [set(face_number(p.x)) for p in (splits.train, splits.aux, splits.test)]
    assert set().union(*numbers) == set(range(N_ADULTS))  # every adult, no child
    assert sum(len(n) for n in numbers) == N_ADULTS  # no image in two parts
    assert splits.class_names == ("male", "female")


def test_task_is_gender_and_annotations_are_race_and_age_bucket(faces):
    splits = UTKFace(data_dir=str(faces)).load(seed=0)
    for part in (splits.train, splits.aux, splits.test):
        assert np.array_equal(part.y, face_number(part.x) % 2)  # gender = number % 2 above
        assert list(part.annotations.columns) == ["race", "age_bucket"]
        assert set(part.annotations.race) <= set(utkface.RACES)
        assert set(part.annotations.age_bucket) <= set(utkface.AGE_LABELS)


def test_age_buckets_and_race_names():
    frame = pd.DataFrame(
        {"age": [15, 29, 30, 44, 45, 59, 60, 116], "race": [0, 1, 2, 3, 4, 0, 1, 2]}
    )
    annotations = annotate(frame)
    buckets = ["15-29", "15-29", "30-44", "30-44", "45-59", "45-59", "60+", "60+"]
    assert annotations.age_bucket.tolist() == buckets
    assert annotations.race.tolist()[:5] == ["White", "Black", "Asian", "Indian", "Others"]


def test_pixels_resized_to_100_scaled_channels_first(faces):
    part = UTKFace(data_dir=str(faces)).load(seed=0).test
    assert part.x.shape == (20, 3, 100, 100) and part.x.dtype == np.float32
    assert np.allclose(part.x[:, 2], 128 / 255 - 0.5, atol=3 / 255)  # blue plane of face()
    assert part.y.dtype == np.int64


def test_same_seed_same_split_other_seed_other_split(faces):
    first, again, other = (UTKFace(data_dir=str(faces)).load(seed=s) for s in (2, 2, 3))
    assert np.array_equal(first.train.x, again.train.x)
    assert first.aux.annotations.equals(again.aux.annotations)
    assert set(face_number(first.train.x)) != set(face_number(other.train.x))


def test_max_rows_caps_each_part_at_a_third(faces):
    splits = UTKFace(data_dir=str(faces), max_rows=30).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (10, 10, 10)
    numbers = [set(face_number(p.x)) for p in (splits.train, splits.aux, splits.test)]
    assert len(set().union(*numbers)) == 30


def test_malformed_names_are_counted_and_one_example_logged(faces, caplog):
    with caplog.at_level(logging.WARNING, logger="subpop_runner.data.utkface"):
        UTKFace(data_dir=str(faces)).load(seed=0)
    (record,) = caplog.records
    assert "2 file(s)" in record.getMessage() and repr(MALFORMED[0]) in record.getMessage()


@pytest.mark.parametrize("problem", ["null", "missing", "empty", "no valid names"])
def test_no_usable_folder_is_one_config_error(tmp_path, problem):
    folder = tmp_path / "faces"
    if problem != "missing":
        folder.mkdir()
    if problem == "no valid names":
        for name in MALFORMED:
            (folder / name).write_bytes(b"x")
    data_dir = None if problem == "null" else str(folder)
    expected = {
        "null": "has no download: set dataset.data_dir",
        "missing": "does not exist",
        "empty": "found none among 0 file",
        "no valid names": "found none among 2 file",
    }[problem]
    with pytest.raises(ConfigError, match=expected) as error:
        UTKFace(data_dir=data_dir).load(seed=0)
    assert "\n" not in str(error.value)


def test_too_few_images_for_the_paper_split_names_the_count(faces, monkeypatch):
    monkeypatch.setattr(utkface, "PART_ROWS", 25)
    with pytest.raises(ConfigError, match="expected more than 50 images .* found 50"):
        UTKFace(data_dir=str(faces)).load(seed=0)


def test_other_image_size_needs_verify_false(faces):
    path = an_adult(faces)
    face(0, size=(120, 90)).save(path)
    with pytest.raises(ConfigError, match=f"{path}: expected 200x200 pixels .* found 120x90"):
        UTKFace(data_dir=str(faces)).load(seed=0)
    assert len(UTKFace(data_dir=str(faces), verify=False).load(seed=0).train) == 15


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_undecodable_image_is_one_config_error_naming_it(faces, damage):
    path = an_adult(faces)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"GIF89a junk")
    with pytest.raises(ConfigError, match=f"UTKFace image {path}: expected an image Pillow"):
        UTKFace(data_dir=str(faces), verify=False).load(seed=0)


def test_fingerprint_follows_names_and_contents_not_the_folder(faces, tmp_path):
    original = UTKFace(data_dir=str(faces)).fingerprint()
    assert list(original) == ["utkface"] and len(original["utkface"]) == 64
    copy = tmp_path / "copy"
    shutil.copytree(faces, copy)
    assert UTKFace(data_dir=str(copy)).fingerprint() == original
    path = sorted(copy.glob("*.chip.jpg"))[0]
    path.rename(path.with_name("9" + path.name))  # another age
    renamed = UTKFace(data_dir=str(copy)).fingerprint()
    assert renamed != original
    face(1).save(copy / ("9" + path.name))
    edited = UTKFace(data_dir=str(copy)).fingerprint()
    assert edited != renamed
    (copy / "notes.txt").write_bytes(b"edited")  # not an image: not part of the data
    assert UTKFace(data_dir=str(copy)).fingerprint() == edited
