"""Carry the real-photo benchmark data (Tiny ImageNet at 64x64, a pool kept outside the repository, --tiny64) to
a GPU machine in packs of JPEG bytes small enough to travel with one run (at most 64 MiB), and decode them there
into course-format files. A pack holds any slice of each class's training images, validation images and several
OOD draws; the selection is tiny64's `build.py select`, so draw K here is exactly `build.py course --ood-draw K`.

Here (needs the pool):
    python benchmarks/tiny64_packs.py pack --out .data/pack1.npz --train 0:150 --val 50 --ood-draws 5
    python benchmarks/tiny64_packs.py pack --out .data/pack2.npz --train 150:400
On the GPU machine (numpy and Pillow), with the packs carried there:
    python3 benchmarks/tiny64_packs.py unpack --out /tmp/t64 .data/pack1.npz .data/pack2.npz
    -> /tmp/t64/train.npz (all train slices, class by class), val.npz, ood.npz (draw 0), ood_draw{K}.npz

Never commit a pack or a decoded file: the images are ImageNet's (non-commercial research and teaching only).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np

SHARED_TINY64 = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny64"


def load_build_module(tiny64_dir: Path = SHARED_TINY64):
    """tiny64's build.py as a module (its `select` defines which image is in which set and draw)."""
    path = tiny64_dir / "build.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: packs are cut where the Tiny ImageNet pool exists (--tiny64)")
    spec = importlib.util.spec_from_file_location("tiny64_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _selection(build, pool, train=0, val=0, ood=0, draw=0) -> dict:
    args = argparse.Namespace(train_per_class=train, val_per_class=val, ood_per_class=ood, ood_draw=draw)
    return build.select(pool, args)


def pool_sets(build, pool, train: tuple[int, int], val: int, ood_draws: int) -> dict[str, np.ndarray]:
    """Pool indices per named set: 'train' (images train[0]..train[1]-1 of every ID class), 'val' (the first
    `val` of each class), 'ood_draw{K}' for K < ood_draws (50 per OOD class, build.py's draw K)."""
    start, stop = train
    sets = {}
    if stop > start:
        upto = _selection(build, pool, train=stop)["train"]
        before = set(_selection(build, pool, train=start)["train"].tolist()) if start else set()
        sets["train"] = np.array([i for i in upto if i not in before], np.int64)
    if val:
        sets["val"] = _selection(build, pool, val=val)["val"]
    for k in range(ood_draws):
        sets[f"ood_draw{k}"] = _selection(build, pool, ood=50, draw=k)["ood"]
    return sets


def write_pack(out: Path, pool, build, sets: dict[str, np.ndarray]) -> None:
    """One npz: the JPEG bytes of every image any set uses (each once), and each set as indices into them."""
    used = np.unique(np.concatenate(list(sets.values())))
    position = {int(i): n for n, i in enumerate(used)}
    off = pool["offsets"]
    parts = [pool["jpeg"][off[i]:off[i + 1]] for i in used]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    arrays = {f"set_{name}": np.array([position[int(i)] for i in idx], np.int64) for name, idx in sets.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, jpeg=np.concatenate(parts), offsets=offsets, labels=pool["labels"][used],
             id_class_names=build.group_names(pool, True), ood_class_names=build.group_names(pool, False),
             **arrays)
    sizes = ", ".join(f"{name} {len(idx)}" for name, idx in sets.items())
    print(f"{out}: {len(used)} images ({sizes}), {offsets[-1] / 2**20:.1f} MiB of JPEG, "
          f"{out.stat().st_size / 2**20:.1f} MiB on disk")


def decode(jpeg: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """JPEG images idx of a pack -> uint8 (N, 64, 64, 3) RGB."""
    from PIL import Image
    images = np.empty((len(idx), 64, 64, 3), np.uint8)
    for n, i in enumerate(idx):
        with Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())) as im:
            images[n] = np.asarray(im.convert("RGB"))
    return images


def unpack(packs: list[Path], out: Path) -> None:
    """Decode every set of every pack; train slices from several packs are joined class by class."""
    gathered: dict[str, list] = {}
    names = {}
    for path in packs:
        with np.load(path) as pack:
            names = {"id": pack["id_class_names"], "ood": pack["ood_class_names"]}
            for key in (k for k in pack.files if k.startswith("set_")):
                idx = pack[key]
                gathered.setdefault(key[4:], []).append((decode(pack["jpeg"], pack["offsets"], idx),
                                                         pack["labels"][idx]))
    out.mkdir(parents=True, exist_ok=True)
    for name, parts in sorted(gathered.items()):
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
        order = np.argsort(labels, kind="stable")       # class by class, each slice in pool order
        class_names = names["ood"] if name.startswith("ood") else names["id"]
        files = [f"{name}.npz"] + (["ood.npz"] if name == "ood_draw0" else [])
        for file in files:
            np.savez(out / file, images=images[order], labels=labels[order], class_names=class_names)
        print(f"{out}/{' = '.join(files)}: {len(labels)} images, {len(np.unique(labels))} classes")


def parse_range(text: str) -> tuple[int, int]:
    start, _, stop = text.partition(":")
    return int(start or 0), int(stop)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="cut a pack here (needs the pool, --tiny64)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny64", type=Path, default=SHARED_TINY64)
    p.add_argument("--train", type=parse_range, default=(0, 0), help="START:STOP images of each ID class")
    p.add_argument("--val", type=int, default=0, help="validation images per ID class (up to 50)")
    p.add_argument("--ood-draws", type=int, default=0, help="OOD draws 0..K-1, 50 images per class each")
    u = sub.add_parser("unpack", help="decode packs into course-format npz files")
    u.add_argument("--out", type=Path, required=True)
    u.add_argument("packs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "pack":
        build = load_build_module(args.tiny64)
        pool = build.load_pool(args.tiny64 / "pool.npz")
        write_pack(args.out, pool, build, pool_sets(build, pool, args.train, args.val, args.ood_draws))
    else:
        unpack(args.packs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
