"""The file helpers every write and every index/cache read goes through (image_search.paths)."""

from __future__ import annotations

import os
import stat

import pytest

from image_search.errors import UnsafePathError
from image_search.paths import atomic_write, atomic_write_bytes, read_regular, safe_name


def test_atomic_write_replaces_a_regular_file_and_honours_the_umask(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    old = os.umask(0o027)
    try:
        atomic_write_bytes(target, b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["fifo", "dir", "device", "link-to-device"])
def test_atomic_write_refuses_a_target_that_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    else:
        target.symlink_to("/dev/null")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        atomic_write_bytes(target, b"data")
    assert not target.is_file()
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("fifo", "a FIFO"),
        ("dir", "a directory"),
        ("zero", "a character device"),
        ("big", "over the"),
        ("loop", "symlink loop"),
        ("missing", "no such file"),
    ],
)
def test_read_regular_refuses_without_blocking(tmp_path, kind, message):
    path = tmp_path / "f"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    elif kind == "dir":
        path.mkdir()
    elif kind == "zero":
        path.symlink_to("/dev/zero")  # reading it would never end
    elif kind == "big":
        path.write_bytes(b"x" * 101)
    elif kind == "loop":
        path.symlink_to(tmp_path / "g")
        (tmp_path / "g").symlink_to(path)
    with pytest.raises((UnsafePathError, FileNotFoundError), match=message):
        read_regular(path, max_bytes=100)


def test_read_regular_reads_a_file_within_the_limit(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert read_regular(tmp_path / "f", max_bytes=100) == b"x" * 100


def test_safe_name():
    assert safe_name("open_clip:ViT-B-32/laion2b") == "open_clip_ViT-B-32_laion2b"
    assert safe_name("") == "_"
