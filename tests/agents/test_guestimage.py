"""agents/guestimage.py: images built from the host's packages, cached by recipe, written whole."""

from __future__ import annotations

import threading
from pathlib import Path

from agents.guestimage import build_image, check_host


def _names(cpio: bytes) -> set[str]:
    """File names of a newc archive."""
    out, pos = set(), 0
    while pos < len(cpio) and cpio[pos : pos + 6] == b"070701":
        fields = [int(cpio[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = cpio[pos + 110 : pos + 110 + namesize - 1].decode()
        out.add(name)
        pos += (110 + namesize + 3) // 4 * 4
        pos += (size + 3) // 4 * 4
    return out


def test_images_are_cached_by_recipe_and_written_whole(tmp_path: Path) -> None:
    kver = check_host()
    args = {"name": "t", "modules": ("virtio_console",), "boot_modules": ("virtio_console",)}
    results: list[Path] = []

    def build(init: str) -> None:
        results.append(
            build_image(kver, init=init, cache_root=tmp_path, files={"etc/x": (b"y", 0o600)}, **args)
        )

    threads = [threading.Thread(target=build, args=("#!/bin/sh\n",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    image = results[0]
    folder = image.parent
    assert [p.name for p in folder.iterdir()] == [image.name]  # no temporary file left behind
    names = _names(image.read_bytes())
    assert {"init", "bin/busybox", "etc/x", "modules.boot", "lib/modules/virtio_console.ko"} <= names
    assert "TRAILER!!!" in names
    # the same recipe again: the cached file; another recipe: a new image, the old one removed
    assert (
        build_image(kver, init="#!/bin/sh\n", cache_root=tmp_path, files={"etc/x": (b"y", 0o600)}, **args)
        == image
    )
    other = build_image(kver, init="#!/bin/sh\n# v2\n", cache_root=tmp_path, **args)
    assert other != image and [p.name for p in folder.iterdir()] == [other.name]
