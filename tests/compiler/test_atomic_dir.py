"""`atomic_directory` and `cache_entry`: a folder appears whole or not at all."""

from __future__ import annotations

import pytest

from edgekiln.compiler.atomic_dir import atomic_directory, cache_entry
from edgekiln.errors import ArtifactError


def test_atomic_directory_appears_whole_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(ArtifactError, match="already exists"):
        with atomic_directory(target):
            pass
    with atomic_directory(target, replace=True) as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_directory_failure_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, replace=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("build failed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "old.txt").is_file()


def test_cache_entry_publishes_keeps_the_first_and_cleans_up(tmp_path):
    final = tmp_path / "cache" / "key"
    with cache_entry(final) as staging:
        (staging / "lib.so").write_text("first")
    assert (final / "lib.so").read_text() == "first"
    with cache_entry(final) as staging:  # a concurrent build of the same key finishing second
        (staging / "lib.so").write_text("second")
    assert (final / "lib.so").read_text() == "first"
    with pytest.raises(ValueError):
        with cache_entry(tmp_path / "cache" / "other") as staging:
            raise ValueError("compiler failed")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["key"]
