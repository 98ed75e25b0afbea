"""Rebuild ``data/catalog/`` from the Debian package ``sweethome3d-furniture``.

Run it with ``make catalog`` (which installs the Debian package, OSMesa and the
rendering libraries first). The output is deterministic for a given package
version: every random choice is drawn from a generator seeded by the product id.

What it writes (see ``data/catalog/DATACARD.md`` for the column docs):

* ``products.csv``: one row per shop product (categories in ``SHOP_CATEGORIES``).
* ``icons/<id>.png``: the catalogue icon (the "shop photo"), composited on white.
* ``views/<id>_<n>.jpg``: ``N_VIEWS`` rendered "customer photos" of the 3D model
  with a random viewpoint, elevation, lighting, scale, position and background.
* ``ATTRIBUTION.md``: creator and licence of every item (CC-BY-3.0 needs it).
"""
from __future__ import annotations

import argparse
import colorsys
import csv
import io
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

SOURCE_DIR = Path("/usr/share/sweethome3d/furniture")
OUT_DIR = Path(__file__).resolve().parent / "catalog"
SHOP_CATEGORIES = ("Bathroom", "Bedroom", "Kitchen", "Lights", "Living room", "Miscellaneous", "Office")
LICENCES = {"BlendSwap-CC-0": "CC0-1.0"}  # every other .sh3f file is CC-BY-3.0
N_VIEWS = 4
SIZE = 128
TEST_FRACTION = 0.3
BRANDS = ("Nordhem", "Casaluce", "Oakline", "Brightwood", "Maison Vert", "Kobo", "Ferro&Co", "Lumio")
PRICE_MEDIAN = {"Bathroom": 180, "Bedroom": 320, "Kitchen": 150, "Lights": 60,
                "Living room": 260, "Miscellaneous": 40, "Office": 140}
# Named colours for the dominant-colour attribute: (name, hue range in degrees) for saturated
# pixels; unsaturated pixels are black, grey or white by value.
HUES = (("red", 0, 15), ("orange", 15, 40), ("yellow", 40, 70), ("green", 70, 170),
        ("blue", 170, 260), ("purple", 260, 300), ("pink", 300, 345), ("red", 345, 360))


# --------------------------------------------------------------------------- parsing
def parse_properties(text: str) -> dict[str, str]:
    """Parse a Java ``.properties`` file (continuations, ``\\uXXXX`` escapes, ``=``/``:``)."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.lstrip() if not buf else raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        backslashes = len(line) - len(line.rstrip("\\"))
        if backslashes % 2 == 1:
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    out = {}
    for line in logical:
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[_unescape(m.group(1))] = _unescape(m.group(2))
    return out


def _unescape(s: str) -> str:
    s = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), s)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


@dataclass(frozen=True)
class Item:
    """One furniture item as the catalogue describes it."""

    id: str
    name: str
    category: str
    tags: str
    width: float
    depth: float
    height: float
    creator: str
    licence: str
    source: str
    icon: str
    model: str
    rotation: tuple[float, ...] | None


def read_items(sh3f: Path) -> list[Item]:
    """All items of one ``.sh3f`` archive."""
    with zipfile.ZipFile(sh3f) as z:
        props = parse_properties(z.read("PluginFurnitureCatalog.properties").decode("latin-1"))
    items = []
    n = 1
    while f"id#{n}" in props:
        p = {k[: -len(f"#{n}")]: v for k, v in props.items() if k.endswith(f"#{n}")}
        rot = tuple(float(x) for x in p["modelRotation"].split()) if "modelRotation" in p else None
        raw_id = p["id"]
        items.append(Item(
            id=re.sub(r"[^a-z0-9]+", "-", raw_id.lower()).strip("-"),
            name=p.get("name") or raw_id.split("#")[-1].replace("_", " ").replace("-", " ").capitalize(),
            category=p["category"],
            tags=";".join(t.strip() for t in p.get("tags", "").split(",") if t.strip() and t.strip() != "Blend Swap"),
            width=float(p["width"]), depth=float(p["depth"]), height=float(p["height"]),
            creator=p.get("creator", "").strip(),
            licence=LICENCES.get(sh3f.stem, "CC-BY-3.0"),
            source=sh3f.name, icon=p["icon"].lstrip("/"), model=p["model"].lstrip("/"), rotation=rot))
        n += 1
    return items


# --------------------------------------------------------------------------- attributes
def dominant_colour(icon: Image.Image) -> tuple[str, str]:
    """Name and hex of the most common colour of the product's pixels (alpha > 0, not white)."""
    rgba = np.asarray(icon.convert("RGBA"), dtype=np.float32) / 255
    px = rgba[..., :3][rgba[..., 3] > 0.5]
    px = px[px.min(axis=1) < 0.97] if len(px) else px
    if len(px) == 0:
        return "white", "#ffffff"
    names = np.array([_colour_name(*p) for p in px])
    top = Counter(names).most_common(1)[0][0]
    mean = px[names == top].mean(axis=0)
    return top, "#" + "".join(f"{int(round(c * 255)):02x}" for c in mean)


def _colour_name(r: float, g: float, b: float) -> str:
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.85 else "grey"
    deg = h * 360
    name = next(n for n, lo, hi in HUES if lo <= deg < hi)
    if name in ("orange", "red") and v < 0.6:
        return "brown"
    if name == "yellow" and s < 0.45:
        return "beige"
    return name


def business_fields(item: Item) -> dict[str, object]:
    """Synthetic price, stock and brand, drawn from a generator seeded by the product id."""
    rng = _rng(item.id, "business")
    price = PRICE_MEDIAN[item.category] * math.exp(rng.normal(0, 0.5))
    return {"price": round(price, 2), "in_stock": bool(rng.random() < 0.85),
            "brand": BRANDS[int(rng.integers(len(BRANDS)))]}


def _rng(product_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{product_id}/{purpose}".encode()))


def assign_splits(items: list[Item]) -> dict[str, str]:
    """Train/test split by product, stratified by category, seeded (no product in both)."""
    split = {}
    for cat in SHOP_CATEGORIES:
        ids = sorted(i.id for i in items if i.category == cat)
        rng = np.random.default_rng(zlib.crc32(cat.encode()))
        test = set(rng.permutation(ids)[: round(len(ids) * TEST_FRACTION)])
        split.update({i: "test" if i in test else "train" for i in ids})
    return split


# --------------------------------------------------------------------------- rendering
def load_model(model_dir: Path, obj_name: str, item: Item):
    """Load the OBJ as a trimesh scene: upright (catalogue rotation), sized, centred, unit height."""
    import trimesh

    scene = trimesh.load(model_dir / obj_name, force="scene", process=False)
    meshes = []
    for geom_name, mesh in scene.geometry.items():
        for node in scene.graph.geometry_nodes.get(geom_name, []):
            m = mesh.copy()
            m.apply_transform(scene.graph.get(node)[0])
            meshes.append(_fix_visual(m))
    if item.rotation is not None:
        rot = np.eye(4)
        rot[:3, :3] = np.array(item.rotation).reshape(3, 3)
        for m in meshes:
            m.apply_transform(rot)
    lo = np.min([m.bounds[0] for m in meshes], axis=0)
    hi = np.max([m.bounds[1] for m in meshes], axis=0)
    extent = np.maximum(hi - lo, 1e-6)
    target = np.array([item.width, item.height, item.depth])  # Sweet Home 3D: x width, y height, z depth
    scale = target / extent / target.max()
    tf = np.diag([*scale, 1.0])
    tf[:3, 3] = -(lo + hi) / 2 * scale
    for m in meshes:
        m.apply_transform(tf)
    return meshes


def _fix_visual(mesh):
    """Keep MTL colours; a texture without UVs falls back to the material's diffuse colour."""
    import trimesh

    vis = mesh.visual
    if vis.kind == "texture" or isinstance(vis, trimesh.visual.TextureVisuals):
        mat = vis.material
        has_uv = vis.uv is not None and len(vis.uv) == len(mesh.vertices)
        image = getattr(mat, "image", None) or getattr(mat, "baseColorTexture", None)
        if not has_uv or image is None:
            colour = getattr(mat, "diffuse", None)
            if colour is None:
                colour = getattr(mat, "main_color", np.array([200, 200, 200, 255]))
            mesh.visual = trimesh.visual.ColorVisuals(mesh, face_colors=np.tile(np.asarray(colour, np.uint8), (len(mesh.faces), 1)))
    return mesh


def render_views(meshes, item: Item, n_views: int = N_VIEWS, size: int = SIZE) -> list[Image.Image]:
    """``n_views`` customer-style photos: random view, light, scale, position and background."""
    import pyrender

    scene_meshes = [pyrender.Mesh.from_trimesh(m, smooth=False) for m in meshes]
    rng = _rng(item.id, "views")
    images = []
    renderer = pyrender.OffscreenRenderer(size * 2, size * 2)  # 2x supersampling
    try:
        for v in range(n_views):
            scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[0.25] * 3)
            for pm in scene_meshes:
                scene.add(pm)
            azimuth = math.radians(rng.uniform(-75, 75) + (180 if rng.random() < 0.1 else 0))
            elevation = math.radians(rng.uniform(0, 40))
            distance = rng.uniform(1.5, 2.6)
            target = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), 0.0])
            eye = target + distance * np.array([math.sin(azimuth) * math.cos(elevation),
                                                math.sin(elevation),
                                                math.cos(azimuth) * math.cos(elevation)])
            scene.add(pyrender.PerspectiveCamera(yfov=math.radians(40)), pose=_look_at(eye, target))
            light_dir = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1.5), rng.uniform(-0.2, 1.2)])
            scene.add(pyrender.DirectionalLight(color=_warmth(rng), intensity=rng.uniform(2.0, 5.0)),
                      pose=_look_at(light_dir, np.zeros(3)))
            # OSMesa has no framebuffer objects, so no alpha channel: the depth buffer is the mask.
            rgb, depth = renderer.render(scene)
            rgba = np.dstack([rgb, np.where(depth > 0, 255, 0).astype(np.uint8)])
            fg = Image.fromarray(rgba).resize((size, size), Image.LANCZOS)
            bg = background(rng, size)
            bg.alpha_composite(fg)
            images.append(bg.convert("RGB"))
    finally:
        renderer.delete()
    return images


def _warmth(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(-1, 1)  # -1 cool daylight .. +1 warm tungsten
    return np.clip(np.array([1.0 + 0.15 * t, 1.0, 1.0 - 0.25 * t]), 0, 1)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = eye - target
    forward /= np.linalg.norm(forward)
    right = np.cross([0.0, 1.0, 0.0], forward)
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, forward, eye
    return pose


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A room-like colour: a random colour pulled halfway towards a random grey."""
    return 0.5 * rng.uniform(30, 245, 3) + 0.5 * rng.uniform(60, 230)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A plain, gradient, noise or cluttered background, like a room behind a shopper's photo."""
    kind = rng.choice(["plain", "gradient", "noise", "clutter"])
    base = _muted(rng)
    if kind == "plain":
        arr = np.broadcast_to(base, (size, size, 3))
    elif kind == "gradient":
        other = _muted(rng)
        t = np.linspace(0, 1, size)[:, None, None]
        arr = np.broadcast_to(base * (1 - t) + other * t, (size, size, 3))
    elif kind == "noise":
        arr = base + rng.normal(0, 25, (size, size, 1)) + rng.normal(0, 8, (size, size, 3))
    else:
        img = Image.new("RGB", (size, size), tuple(int(c) for c in base))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 10))):
            x0, y0 = rng.uniform(-size / 4, size, 2)
            w, h = rng.uniform(size / 8, size / 2, 2)
            fill = tuple(int(c) for c in _muted(rng))
            (draw.rectangle if rng.random() < 0.6 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=fill)
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
    return Image.fromarray(np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))).convert("RGBA")


# --------------------------------------------------------------------------- main
def build(out_dir: Path = OUT_DIR, limit: int | None = None) -> None:
    """Rebuild the catalog into ``out_dir`` (atomically replaced at the end)."""
    from tqdm import tqdm

    archives = sorted(SOURCE_DIR.glob("*.sh3f"))
    if not archives:
        raise SystemExit(f"no .sh3f files in {SOURCE_DIR}: apt-get install sweethome3d-furniture")
    items = sorted((i for a in archives for i in read_items(a) if i.category in SHOP_CATEGORIES), key=lambda i: i.id)
    if limit:
        items = items[:limit]
    ids = [i.id for i in items]
    assert len(set(ids)) == len(ids), "product ids must be unique"
    splits = assign_splits(items)
    tmp_out = Path(tempfile.mkdtemp(prefix="catalog-", dir=out_dir.parent))
    (tmp_out / "icons").mkdir()
    (tmp_out / "views").mkdir()
    rows = []
    zips = {a.name: zipfile.ZipFile(a) for a in archives}
    for item in tqdm(items, desc="rendering", unit="product"):
        z = zips[item.source]
        icon = Image.open(io.BytesIO(z.read(item.icon))).convert("RGBA")
        colour, colour_hex = dominant_colour(icon)
        shop = Image.new("RGBA", icon.size, (255, 255, 255, 255))
        shop.alpha_composite(icon)
        shop.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS).save(tmp_out / "icons" / f"{item.id}.png", optimize=True)
        with tempfile.TemporaryDirectory() as model_tmp:
            prefix = item.model.rsplit("/", 1)[0] + "/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    dest = Path(model_tmp) / name[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))
            meshes = load_model(Path(model_tmp), item.model[len(prefix):], item)
        for v, img in enumerate(render_views(meshes, item)):
            img.save(tmp_out / "views" / f"{item.id}_{v}.jpg", quality=90, optimize=True)
        rows.append({"id": item.id, "name": item.name, "category": item.category, "tags": item.tags,
                     "width_cm": item.width, "depth_cm": item.depth, "height_cm": item.height,
                     "colour": colour, "colour_hex": colour_hex, "split": splits[item.id],
                     **business_fields(item), "creator": item.creator, "licence": item.licence,
                     "source": item.source})
    with open(tmp_out / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_attribution(tmp_out / "ATTRIBUTION.md", rows)
    if (out_dir / "DATACARD.md").exists():
        shutil.copy(out_dir / "DATACARD.md", tmp_out / "DATACARD.md")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_out.rename(out_dir)
    print(f"wrote {len(rows)} products to {out_dir}")


def write_attribution(path: Path, rows: list[dict]) -> None:
    """Per-item credit, as CC-BY-3.0 requires."""
    lines = ["# Attribution", "",
             "Products, icons and 3D models come from the Debian package `sweethome3d-furniture` 1.8-1",
             "(Sweet Home 3D furniture libraries, eTeks and contributors). The icons are copied; the",
             "`views/` photos are renderings of the 3D models made by `data/build_catalog.py`.",
             "Items marked CC-BY-3.0 are licensed under the Creative Commons Attribution 3.0 Unported",
             "licence (https://creativecommons.org/licenses/by/3.0/); items marked CC0-1.0 are in the",
             "public domain. Changes: icons composited on white and resized; models re-rendered.", "",
             "| id | name | creator | licence |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['id']} | {r['name']} | {r['creator'] or 'unknown'} | {r['licence']} |" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--limit", type=int, default=None, help="only the first N products (for a quick look)")
    args = parser.parse_args()
    build(args.out, args.limit)
