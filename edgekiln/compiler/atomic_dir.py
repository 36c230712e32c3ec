"""Write a folder all at once: into a temporary sibling, then one rename.

A reader (or a crash) never sees a half-written artifact: either the old folder, or the
complete new one.  With `replace=True` an existing folder is swapped out and removed only
after the new one is in place.  `cache_entry` is the same for content-keyed build caches
(the C runtime, its library objects, the qemu plugin), where two processes may build the
same entry at once: the first rename wins and the other build is dropped, since both hold
the same content.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekiln.errors import ArtifactError


@contextlib.contextmanager
def atomic_directory(destination: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `destination`."""
    destination = Path(destination)
    if destination.exists() and not replace:
        raise ArtifactError(
            f"output {destination} already exists; choose another path or pass --force to replace it"
        )
    if destination.exists() and not destination.is_dir():
        raise ArtifactError(f"output {destination} exists and is not a folder; remove it or choose another path")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    # mkdtemp makes the folder private (0700); an artifact gets the permissions of any new folder.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        if destination.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
            os.replace(destination, retired / "old")
            os.replace(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def cache_entry(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to `final`; on success it becomes `final` (or is dropped
    when another process published the same content-keyed entry first); on failure it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, final)
    except OSError:  # built concurrently: keep the first
        shutil.rmtree(staging, ignore_errors=True)
