"""Rebuild ``data/real_photos/``: real photographs of household products for a cross-domain check.

The catalog's photos are all renderings. This small set of real photos (and photo cut-outs), each
labelled with one of the catalog's product types, shows how far a model trained on renderings
carries over to photographs. They come from three openly licensed Debian packages:

* ``gcompris-qt-data``: the photos of GCompris's "categorization" activity (Wikimedia Commons and
  publicdomainpictures.net, CC0 or public domain; each credited in a README beside it). They live
  in Qt resource files (``.rcc``), which :func:`read_rcc` unpacks.
* ``scratch``: photo cut-outs of Scratch 1.4's media library (MIT, CC-BY-SA-3.0).
* ``python3-skimage``: scikit-image's sample photo of a coffee cup (CC0).

Run it with ``make catalog`` (or alone: ``python data/build_real_photos.py``); it needs
``apt-get download`` and ``dpkg``. Images are downsized to at most ``MAX_SIDE`` pixels, transparency
composited on white, and saved as JPEG; ``real_photos.csv`` records each one's type, source package,
original path, licence, author and source.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from PIL import Image

OUT_DIR = Path(__file__).resolve().parent / "real_photos"
MAX_SIDE = 256
GCOMPRIS = "categorization/resource/images/"
SCRATCH = "usr/share/scratch/Media/Costumes/Things/"
SKIMAGE = "usr/lib/python3/dist-packages/skimage/data/"
# (package, file, product type of data/build_catalog.py's TYPE_RULES); checked by eye.
SELECTION = (
    ("gcompris-qt-data", GCOMPRIS + "others/chair.webp", "chair"),
    ("gcompris-qt-data", GCOMPRIS + "others/cup.webp", "cup or glass"),
    ("gcompris-qt-data", GCOMPRIS + "others/buffetset.webp", "cup or glass"),
    ("gcompris-qt-data", GCOMPRIS + "others/plate.webp", "tableware"),
    ("gcompris-qt-data", GCOMPRIS + "others/spoons.webp", "tableware"),
    ("gcompris-qt-data", GCOMPRIS + "others/knife.webp", "tableware"),
    ("gcompris-qt-data", GCOMPRIS + "others/pan.webp", "kitchenware"),
    ("gcompris-qt-data", GCOMPRIS + "others/bucket.webp", "container"),
    ("gcompris-qt-data", GCOMPRIS + "others/weighingMachine.webp", "small appliance"),
    ("gcompris-qt-data", GCOMPRIS + "others/pencil.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "others/erasers.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "others/blackslate.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "others/baseball.webp", "sports equipment"),
    ("gcompris-qt-data", GCOMPRIS + "others/volleyball.webp", "sports equipment"),
    ("gcompris-qt-data", GCOMPRIS + "tools/scissors1.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "tools/scissors2.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "tools/scissors4.webp", "stationery"),
    ("gcompris-qt-data", GCOMPRIS + "tools/spray.webp", "bottle"),
    ("gcompris-qt-data", GCOMPRIS + "tools/hammer1.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/hammer5.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/hammer8.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/measuringTape1.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/measuringTape3.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/measuringTape6.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/plier1.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/plier3.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/screwDriver1.webp", "tool"),
    ("gcompris-qt-data", GCOMPRIS + "tools/wrench.webp", "tool"),
    ("scratch", SCRATCH + "lamp.gif", "lamp"),
    ("scratch", SCRATCH + "flower-vase.gif", "plant"),
    ("scratch", SCRATCH + "fruit_platter.gif", "food"),
    ("scratch", SCRATCH + "cheesy-puffs.gif", "food"),
    ("scratch", SCRATCH + "fortune_cookie.gif", "food"),
    ("scratch", SCRATCH + "lego.gif", "toy or game"),
    ("scratch", SCRATCH + "tennisball.png", "sports equipment"),
    ("scratch", SCRATCH + "trampoline.gif", "sports equipment"),
    ("scratch", SCRATCH + "umbrella.gif", "accessory"),
    ("python3-skimage", SKIMAGE + "coffee.png", "cup or glass"),
)
PREFIX = {"gcompris-qt-data": "gcompris", "scratch": "scratch", "python3-skimage": "skimage"}
CREDITS = {  # the packages' copyright files (scratch, skimage) and scikit-image's data docstrings
    "scratch": ("Scratch Team, Massachusetts Institute of Technology", "CC-BY-SA-3.0", ""),
    SKIMAGE + "coffee.png": ("Rachel Michetti (courtesy of Pikolo Espresso Bar)", "CC0-1.0", ""),
}


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Every file of a Qt resource file (``.rcc``, format versions 1 to 3, zlib-compressed or not)
    by its path."""
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    entry = 14 if version == 1 else 22
    out: dict[str, bytes] = {}

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str) -> None:
        at = tree + index * entry
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        path = prefix + (name(name_offset) if index else "")
        if flags & 2:  # a directory: its children follow
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, path + "/" if path else "")
            return
        (offset,) = struct.unpack(">I", data[at + 10 : at + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed entries are not supported")
        out[path] = zlib.decompress(blob[4:]) if flags & 1 else blob

    walk(0, "")
    return out


def gcompris_credits(readme: str) -> dict[str, tuple[str, str, str]]:
    """``file name -> (author, licence, source)`` from a GCompris image folder's README."""
    credits = {}
    for block in re.split(r"\n\s*\n", readme):
        fields = dict(re.findall(r"^(Copyright|Source|License):\s*(.*)$", block, re.M))
        for file in re.findall(r"^\s*(\S+\.(?:webp|png|jpg|svg))\s*$", block, re.M):
            credits[file] = (
                fields.get("Copyright", ""),
                fields.get("License", ""),
                fields.get("Source", ""),
            )
    return credits


def to_photo(data: bytes) -> Image.Image:
    """The first frame, composited on white, at most ``MAX_SIDE`` pixels a side."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    photo = canvas.convert("RGB")
    photo.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return photo


def _package(name: str, work: Path) -> tuple[Path, str]:
    """Download and unpack a Debian package; its folder and version."""
    subprocess.run(["apt-get", "download", name], cwd=work, check=True, capture_output=True)
    deb = next(work.glob(f"{name}_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(work / name)], check=True)
    return work / name, deb.name.split("_")[1]


def build(out_dir: Path = OUT_DIR) -> None:
    """Rebuild ``out_dir`` (atomically replaced at the end)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        packages = {name: _package(name, work) for name in sorted({p for p, _, _ in SELECTION})}
        gc_root, _ = packages["gcompris-qt-data"]
        rcc = read_rcc((gc_root / "usr/share/gcompris-qt/rcc/categorization.rcc").read_bytes())
        files = {path.removeprefix("gcompris/src/activities/"): blob for path, blob in rcc.items()}
        tmp_out = Path(tempfile.mkdtemp(prefix="real_photos-", dir=out_dir.parent))
        rows = []
        for package, path, type_ in SELECTION:
            root, version = packages[package]
            if package == "gcompris-qt-data":
                data = files[path]
                readme = files[path.rsplit("/", 1)[0] + "/README"].decode("utf-8")
                author, licence, source = gcompris_credits(readme)[path.rsplit("/", 1)[1]]
                original = f"usr/share/gcompris-qt/rcc/categorization.rcc:{path}"
            else:
                data = (root / path).read_bytes()
                author, licence, source = CREDITS.get(path) or CREDITS[package]
                original = path
            name = f"{PREFIX[package]}_{Path(path).stem}.jpg"
            to_photo(data).save(tmp_out / name, quality=90, optimize=True)
            rows.append(
                {
                    "file": name,
                    "type": type_,
                    "source_package": f"{package} {version}",
                    "original_path": original,
                    "licence": licence,
                    "author": author,
                    "source": source,
                }
            )
    with open(tmp_out / "real_photos.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_attribution(tmp_out / "ATTRIBUTION.md", rows)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_out.rename(out_dir)
    print(f"wrote {len(rows)} real photos to {out_dir}")


def write_attribution(path: Path, rows: list[dict]) -> None:
    lines = [
        "# Attribution: real photos",
        "",
        "Real photographs and photo cut-outs of household products, from three Debian packages,",
        "downsized to at most 256 pixels a side (transparency on white) by "
        "`data/build_real_photos.py`.",
        "Licences: CC0-1.0 and public domain (GCompris's categorization photos, from Wikimedia "
        "Commons",
        "and publicdomainpictures.net, as the README beside them says; scikit-image's coffee "
        "photo);",
        "CC-BY-SA-3.0 (Scratch 1.4 media, © MIT: https://creativecommons.org/licenses/by-sa/3.0/;",
        "the downsized copies here are shared under the same licence).",
        "",
        "| file | type | package | author | licence | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['file']} | {r['type']} | {r['source_package']} | {r['author'] or 'unknown'} | "
        f"{r['licence']} | {r['source'] or r['original_path']} |"
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    build()
