"""Near-duplicate and crop retrieval with EfficientNet-Lite0 embeddings (lookalike.embeddings).

Answers five design questions for an ``embedding`` search method (score = 100 × cosine):

1. **Cutoff.** Positives: the cosine between a stored image and its edited copy (the
   ``EDITS``: JPEG, resize, blur, tone, grayscale, watermark, padding, crops keeping
   90/75/60/50 % of the area centred and at a random corner, 5° rotation, mirror, quarter
   turns). Negatives: the cosine between a query and every stored image of another source.
   Queries are every stored image (as it is) and every edited copy. A query is a *false
   match* at cutoff ``t`` when any unrelated stored image scores ``>= t``. For a store of N
   images the rate is ``mean over queries of 1 - (1 - p)^N``, with ``p`` the query's share of
   unrelated pool images above ``t`` (a store of N drawn at random from the pool, with
   replacement); "pool" is the rate against the whole pool as it is. Reported per query
   group: photos & tiles, and 1/f images (a collection of look-alike pictures). The 1 %
   cutoff is the lowest on a 0.005 grid with a false-match rate <= 1 % for N = 1,000; its
   uncertainty is a bootstrap over query sources (stored images kept fixed). The
   recommended cutoff is the photos & tiles bootstrap p95, rounded up to a multiple of 0.05.
2. **Centring.** Cosine after subtracting a mean embedding and re-normalising: (a) the mean
   of the stored collection, (b) a fixed mean from a separate set. Sources are split into
   two folds; each fold is stored and searched on its own, (b) takes the other fold's mean,
   so the mean never saw the test images. Compared by AUC (positives against all negative
   pairs) and by recall at the cutoff giving 1 % false matches for N = 1,000.
3. **Rotations.** Each query image (as it is, JPEG q30, and a 75 % corner crop) is
   embedded in all 8 orientations. A rotated or mirrored copy, searched with the identity
   embedding only, scores the cosine of that orientation; searched with all 8, the max over
   them (the same for every orientation of one copy). Cost: every stored photo and tile,
   embedded in 8 orientations, searched against the pool: identity against max of 8.
4. **crop=True** (the model's centred 224/256 crop, default) against **crop=False** (the
   whole image squashed to 224×224) for the crop and pad edits.
5. **Throughput** of ``Encoder.embed`` at batch 8 (640×480 photos, preprocessing included)
   with 1 and 2 onnxruntime threads: median of repeated, interleaved runs. Run it on an
   idle machine: the load average is printed.

Data, all offline: scikit-image's photos (plus its horse, checkerboard and phantom images),
non-overlapping tiles of 128 and 256 px cut from them (only tiles with some contrast, at
most 24 and 6 per source) and generated colour 1/f "photos" (``pink_photo``). Tiles of one
photo are NOT independent images (same camera, lighting, often the same object): every
tile carries its photo as its *source*, and pairs of the same source are neither positives
nor negatives. Each 1/f image is its own source. There are only 22 independent real
images, so the tiles stand in for a larger collection: the numbers are indicative, not a
substitute for a calibration on real, varied photos. The embedding model is cached in
``bench/results/cache/models``.

    python bench/embeddings.py [--quick] [--pink 300] [--queries 150] [--seed 2025]

writes bench/results/embeddings.json (embeddings-quick.json with ``--quick``).
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: see quality.py

import argparse
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
from common import (
    CACHE,
    RGB,
    as_rgb,
    blur,
    brightness,
    contrast,
    grayscale,
    jpeg,
    median,
    mirror,
    pad,
    photos,
    pink_photo,
    resize_to,
    rot90,
    rotate,
    scale,
    table,
    watermark,
    write_results,
)

from lookalike.embeddings import Encoder

Vectors = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Edit = Callable[[RGB, np.random.Generator], RGB]

GRID: Floats = np.round(np.arange(0.0, 1.0, 0.005), 3)  # cutoffs searched
CANDIDATES = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
TARGET = 0.01  # false-match rate the cutoff must keep
STORE = 1000  # store size the false-match rate is quoted for
EXTRA_IMAGES = ("horse", "checkerboard", "shepp_logan_phantom")  # skimage.data, offline
TILE_SIZES = (128, 256)
MIN_TILE_STD = 12.0  # grey-level std below which a tile is blank (sky, black background)
PINK_SIZES = ((384, 512), (512, 384), (480, 640), (512, 512), (256, 256))


def crop_area(image: RGB, area: float, rng: np.random.Generator | None = None) -> RGB:
    """Keep ``area`` of the image (same aspect): centred, or at a random corner given rng."""
    h, w = image.shape[:2]
    side = math.sqrt(area)
    ch, cw = round(h * side), round(w * side)
    top, left = (h - ch) // 2, (w - cw) // 2
    if rng is not None:
        top, left = (h - ch) * int(rng.integers(2)), (w - cw) * int(rng.integers(2))
    return np.ascontiguousarray(image[top : top + ch, left : left + cw])


def _crop_edits() -> dict[str, Edit]:
    edits: dict[str, Edit] = {}
    for area in (0.9, 0.75, 0.6, 0.5):
        edits[f"crop {area:.0%} centre"] = lambda im, _, a=area: crop_area(im, a)
        edits[f"crop {area:.0%} corner"] = lambda im, rng, a=area: crop_area(im, a, rng)
    return edits


EDITS: dict[str, Edit] = {
    "JPEG q30": lambda im, _: jpeg(im, 30),
    "resize 50 %": lambda im, _: scale(im, 0.5),
    "blur r=2": lambda im, _: blur(im, 2),
    "brightness +30 %": lambda im, _: brightness(im, 1.3),
    "contrast +30 %": lambda im, _: contrast(im, 1.3),
    "grayscale": lambda im, _: grayscale(im),
    "watermark": lambda im, _: watermark(im),
    "pad 10 % white": lambda im, _: pad(im, 0.1, 255),
    **_crop_edits(),
    "rotate 5°": lambda im, _: rotate(im, 5),
    "mirror": lambda im, _: mirror(im),
    "rot90": lambda im, _: rot90(im, 1),
    "rot180": lambda im, _: rot90(im, 2),
}
CROP_PAD = [name for name in EDITS if name.startswith(("crop", "pad"))]
GROUPS = {"photos & tiles": ("photo", "tile"), "1/f": ("1/f",), "all": ("photo", "tile", "1/f")}
NATURAL = "photos & tiles"  # the query group the recommended cutoff is set on
DIHEDRAL = ("mirror", "rot90", "rot180")  # edits that the 8 orientations undo
CENTRING = ("raw", "collection mean", "fixed mean")
CROP_MODES = ("crop=True", "crop=False")
THREADS = (1, 2)

# The 8 orientations (mirror first, then turn counter-clockwise), identity first.
ORIENTATIONS: dict[str, Callable[[RGB], RGB]] = {
    f"{'mirror ' if m else ''}rot{90 * k}".replace(" rot0", "").replace("rot0", "identity"): (
        lambda im, m=m, k=k: rot90(mirror(im) if m else im, k)
    )
    for m in (False, True)
    for k in range(4)
}
ROTATION_BASES: dict[str, Edit] = {
    "as it is": lambda im, _: im,
    "JPEG q30": EDITS["JPEG q30"],
    "crop 75% corner": EDITS["crop 75% corner"],
}


# -- the images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    key: str
    source: str  # images of one source are never negatives of each other
    kind: str  # "photo", "tile" or "1/f"
    image: RGB


def whole_images() -> dict[str, RGB]:
    """scikit-image's photos and the few other images it bundles that load offline."""
    from skimage import data

    images = dict(photos())
    for name in EXTRA_IMAGES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images[name] = as_rgb(np.asarray(getattr(data, name)(), dtype=np.float64))
    return images


def tiles(image: RGB, size: int, most: int, rng: np.random.Generator) -> list[RGB]:
    """At most ``most`` non-overlapping ``size``-px tiles with some contrast, at random."""
    h, w = image.shape[:2]
    found = [
        image[top : top + size, left : left + size]
        for top in range(0, h - size + 1, size)
        for left in range(0, w - size + 1, size)
        if image[top : top + size, left : left + size].mean(axis=2).std() >= MIN_TILE_STD
    ]
    keep = rng.permutation(len(found))[:most]
    return [np.ascontiguousarray(found[i]) for i in sorted(keep)]


def build_pool(rng: np.random.Generator, per_source: Sequence[int], n_pink: int) -> list[Item]:
    """The stored images: whole photos, their tiles (same source) and 1/f images."""
    pool = []
    for name, image in whole_images().items():
        pool.append(Item(name, name, "photo", image))
        for size, most in zip(TILE_SIZES, per_source, strict=True):
            for i, tile in enumerate(tiles(image, size, most, rng)):
                pool.append(Item(f"{name}/{size}px-{i}", name, "tile", tile))
    for i in range(n_pink):
        height, width = PINK_SIZES[int(rng.integers(len(PINK_SIZES)))]
        pool.append(Item(f"1/f {i}", f"1/f {i}", "1/f", pink_photo(rng, height, width)))
    return pool


def pick_queries(pool: Sequence[Item], n: int, rng: np.random.Generator) -> list[int]:
    """Pool indices to edit: every whole photo, then tiles and 1/f images (3:1) at random."""
    photo = [i for i, item in enumerate(pool) if item.kind == "photo"]
    tile = [i for i, item in enumerate(pool) if item.kind == "tile"]
    pink = [i for i, item in enumerate(pool) if item.kind == "1/f"]
    rest = max(n - len(photo), 0)
    n_tile = min(len(tile), round(rest * 0.75))
    picked = rng.choice(tile, n_tile, replace=False).tolist()
    picked += rng.choice(pink, min(len(pink), rest - n_tile), replace=False).tolist()
    return photo + sorted(picked)


# -- embeddings and scores ----------------------------------------------------------------


def embed(encoder: Encoder, images: Sequence[RGB], label: str) -> Vectors:
    start = perf_counter()
    vectors = encoder.embed(images, batch_size=8)
    rate = len(images) / (perf_counter() - start)
    print(f"  embedded {len(images)} {label} ({rate:.0f}/s)", file=sys.stderr)
    return vectors


def centred(vectors: Vectors, mean: Vectors | None) -> Vectors:
    """Subtract ``mean`` and scale back to unit length (``None``: unchanged)."""
    if mean is None:
        return vectors
    shifted = vectors - mean
    out: Vectors = shifted / np.linalg.norm(shifted, axis=-1, keepdims=True)
    return out


@dataclass
class Negatives:
    """Queries against the stored images of other sources: the unrelated cosines."""

    sims: Floats  # (queries, stored); -inf where the stored image shares the query's source
    kinds: npt.NDArray[np.str_]  # the kind of image each query was made from
    sources: npt.NDArray[np.str_]
    counts: npt.NDArray[np.int64]  # (queries, len(GRID)): unrelated images >= each cutoff

    @staticmethod
    def of(
        sims: Floats, kinds: Sequence[str], sources: Sequence[str], stored_sources: Sequence[str]
    ) -> Negatives:
        same = np.asarray(sources)[:, None] == np.asarray(stored_sources)[None, :]
        masked = np.where(same, -np.inf, sims)
        counts = np.stack([len(row) - np.searchsorted(np.sort(row), GRID) for row in masked])
        return Negatives(masked, np.asarray(kinds), np.asarray(sources), counts)

    @property
    def top(self) -> Floats:
        """The best unrelated cosine of each query."""
        return np.asarray(self.sims.max(axis=1))

    def pairs(self) -> Floats:
        """Every unrelated cosine, sorted."""
        return np.sort(self.sims[np.isfinite(self.sims)])

    def group(self, name: str) -> Negatives:
        rows = np.isin(self.kinds, GROUPS[name])
        return Negatives(self.sims[rows], self.kinds[rows], self.sources[rows], self.counts[rows])

    def rate(self, store: int | None, weights: Floats | None = None) -> Floats:
        """False-match rate per ``GRID`` cutoff: a random store of ``store`` unrelated
        images, or the whole pool (``None``); queries weighted by ``weights``."""
        if store is None:
            hit = (self.top[:, None] >= GRID).astype(np.float64)
        else:
            valid = np.isfinite(self.sims).sum(axis=1)
            hit = 1.0 - (1.0 - self.counts / valid[:, None]) ** store
        return np.asarray(np.average(hit, axis=0, weights=weights), dtype=np.float64)

    @staticmethod
    def join(parts: Sequence[Negatives]) -> Negatives:
        """Queries of separate searches (``sims`` rows are padded to the widest store)."""
        width = max(p.sims.shape[1] for p in parts)
        return Negatives(
            np.concatenate(
                [
                    np.pad(p.sims, ((0, 0), (0, width - p.sims.shape[1])), constant_values=-np.inf)
                    for p in parts
                ]
            ),
            np.concatenate([p.kinds for p in parts]),
            np.concatenate([p.sources for p in parts]),
            np.concatenate([p.counts for p in parts]),
        )


def at(curve: Floats, cutoff: float) -> float:
    """The value of a ``GRID`` curve at ``cutoff``."""
    return float(curve[min(int(np.searchsorted(GRID, cutoff - 1e-9)), len(GRID) - 1)])


def cutoff_for(curve: Floats, target: float = TARGET) -> float:
    """The lowest ``GRID`` cutoff whose false-match rate is at most ``target``."""
    ok = np.flatnonzero(curve <= target)
    return float(GRID[ok[0]]) if len(ok) else 1.0


def auc(positives: Floats, negative_pairs: Floats) -> float:
    """P(positive > negative), ties half; ``negative_pairs`` sorted."""
    below = np.searchsorted(negative_pairs, positives, side="left")
    equal = np.searchsorted(negative_pairs, positives, side="right") - below
    return float(np.mean((below + equal / 2) / len(negative_pairs)))


def bootstrap_cutoffs(neg: Negatives, rng: np.random.Generator, rounds: int) -> Floats:
    """The 1 %-cutoff for N = STORE over ``rounds`` resamplings of the query sources."""
    names, index = np.unique(neg.sources, return_inverse=True)
    out = []
    for _ in range(rounds):
        draws = np.bincount(rng.integers(len(names), size=len(names)), minlength=len(names))
        out.append(cutoff_for(neg.rate(STORE, draws[index].astype(np.float64))))
    return np.asarray(out)


# -- the studies --------------------------------------------------------------------------


@dataclass
class Edited:
    """Edited copies of the query images, per edit: ``origin`` = their pool indices."""

    origin: npt.NDArray[np.int64]
    vectors: dict[str, Vectors]  # edit → (queries, 1280)

    def positives(self, stored: Vectors) -> dict[str, Floats]:
        """Cosine of each edited copy with its own original, per edit."""
        own = stored[self.origin]
        return {
            k: np.einsum("ij,ij->i", v, own).astype(np.float64) for k, v in self.vectors.items()
        }

    def subset(
        self, rows: npt.NDArray[np.bool_], origin: npt.NDArray[np.int64], mean: Vectors | None
    ) -> Edited:
        return Edited(origin, {k: centred(v[rows], mean) for k, v in self.vectors.items()})


def edit_queries(
    encoder: Encoder, pool: Sequence[Item], origin: Sequence[int], edits: Sequence[str], seed: int
) -> Edited:
    vectors = {}
    for name in edits:
        rng = np.random.default_rng([seed, list(EDITS).index(name)])
        images = [EDITS[name](pool[i].image, rng) for i in origin]
        vectors[name] = embed(encoder, images, f"'{name}' copies")
    return Edited(np.asarray(origin), vectors)


def all_negatives(stored: Vectors, pool: Sequence[Item], edited: Edited) -> Negatives:
    """Every pool image as it is and every edited copy, against the unrelated pool."""
    copies = [pool[i] for i in edited.origin] * len(edited.vectors)
    queries = [*pool, *copies]
    vectors = np.concatenate([stored, *edited.vectors.values()])
    return Negatives.of(
        (vectors @ stored.T).astype(np.float64),
        [q.kind for q in queries],
        [q.source for q in queries],
        [item.source for item in pool],
    )


def calibration(
    stored: Vectors, pool: Sequence[Item], edited: Edited, rng: np.random.Generator, rounds: int
) -> dict[str, Any]:
    """Question 1: positives per edit, the negatives per query group, the cutoffs."""
    everything = all_negatives(stored, pool, edited)
    groups = {}
    for name in GROUPS:
        neg = everything.group(name)
        curves = {"pool": neg.rate(None), STORE: neg.rate(STORE), 10 * STORE: neg.rate(10 * STORE)}
        best = neg.sims.argmax(axis=1)
        worst = np.argsort(neg.top)[::-1][:5]
        groups[name] = {
            "negatives": neg,
            "curves": curves,
            "cutoff_for_1pc": cutoff_for(curves[STORE]),
            "bootstrap": bootstrap_cutoffs(neg, rng, rounds),
            "closest": [(neg.sources[i], pool[best[i]].key, float(neg.top[i])) for i in worst],
        }
    return {
        "positives": edited.positives(stored),
        "groups": groups,
        "recommended": round(
            math.ceil(np.percentile(groups[NATURAL]["bootstrap"], 95) * 20) / 20, 2
        ),
    }


def centring(
    stored: Vectors, pool: Sequence[Item], edited: Edited, rng: np.random.Generator
) -> dict[str, dict[str, Any]]:
    """Question 2: raw against centred cosine, on two folds of sources (see the docstring)."""
    names = sorted({item.source for item in pool})
    fold_of = dict(zip(names, rng.permutation(len(names)) % 2, strict=True))
    folds = np.asarray([fold_of[item.source] for item in pool])
    parts: dict[str, list[tuple[dict[str, Floats], Negatives]]] = {m: [] for m in CENTRING}
    for fold in (0, 1):
        inside = np.flatnonzero(folds == fold)
        local = np.full(len(pool), -1)
        local[inside] = np.arange(len(inside))
        rows = folds[edited.origin] == fold
        means = {
            "collection mean": stored[inside].mean(axis=0),
            "fixed mean": stored[folds != fold].mean(axis=0),
        }
        for method in CENTRING:
            base = centred(stored[inside], means.get(method))
            shifted = edited.subset(rows, local[edited.origin[rows]], means.get(method))
            parts[method].append(
                (shifted.positives(base), all_negatives(base, [pool[i] for i in inside], shifted))
            )
    out = {}
    for method, folds_out in parts.items():
        pos = {k: np.concatenate([p[k] for p, _ in folds_out]) for k in EDITS}
        every = np.concatenate(list(pos.values()))
        crop_pad = np.concatenate([pos[k] for k in CROP_PAD])
        joined = Negatives.join([n for _, n in folds_out])
        out[method] = {}
        for group in (NATURAL, "all"):
            neg = joined.group(group)
            cut = cutoff_for(neg.rate(STORE))
            out[method][group] = {
                "auc": auc(every, neg.pairs()),
                "cutoff_for_1pc": cut,
                "recall": float(np.mean(every >= cut)),
                "recall_crop_pad": float(np.mean(crop_pad >= cut)),
            }
    return out


def oriented(encoder: Encoder, images: Sequence[RGB], label: str) -> Vectors:
    """(images, 8, 1280): each image embedded in the 8 ``ORIENTATIONS``."""
    turned = [turn(image) for image in images for turn in ORIENTATIONS.values()]
    vectors = embed(encoder, turned, f"orientations of {label}")
    return vectors.reshape(len(images), len(ORIENTATIONS), -1)


def rotations(
    encoder: Encoder,
    stored: Vectors,
    pool: Sequence[Item],
    origin: Sequence[int],
    seed: int,
    cutoff: float,
    positives: dict[str, Floats],
) -> dict[str, Any]:
    """Question 3: the identity embedding against the max over the 8 orientations."""
    natural = [i for i, item in enumerate(pool) if item.kind in GROUPS[NATURAL]]
    wanted = sorted(set(natural) | set(origin))
    row = {i: r for r, i in enumerate(wanted)}
    as_is = oriented(encoder, [pool[i].image for i in wanted], "pool images")
    cosines = {}  # base → (queries, 8): each orientation of the copy against its original
    for b, (base, edit) in enumerate(ROTATION_BASES.items()):
        rng = np.random.default_rng([seed, 100 + b])
        if base == "as it is":
            vectors = as_is[[row[i] for i in origin]]
        else:
            vectors = oriented(encoder, [edit(pool[i].image, rng) for i in origin], f"'{base}'")
        cosines[base] = np.einsum("iod,id->io", vectors, stored[np.asarray(origin)])
    sims = (as_is[[row[i] for i in natural]] @ stored.T).astype(np.float64)  # (n, 8, stored)
    args = ([pool[i].kind for i in natural], [pool[i].source for i in natural])
    searches = {
        "identity": (Negatives.of(sims[:, 0], *args, [it.source for it in pool]), False),
        "all 8": (Negatives.of(sims.max(axis=1), *args, [it.source for it in pool]), True),
    }
    others = np.concatenate([v for k, v in positives.items() if k not in DIHEDRAL])
    costs = {}
    for search, (neg, best_of_8) in searches.items():
        cut = cutoff_for(neg.rate(STORE))
        turned = [c.max(axis=1) if best_of_8 else c[:, 1:] for c in cosines.values()]
        costs[search] = {
            "queries": len(neg.kinds),
            "rate_at_cutoff": at(neg.rate(STORE), cutoff),
            "cutoff_for_1pc": cut,
            "turned_found": float(np.mean(np.concatenate([t.ravel() for t in turned]) >= cut)),
            "others_found": float(np.mean(others >= cut)),
        }
    per_base = {
        base: {
            "median": dict(zip(ORIENTATIONS, map(median, cos.T), strict=True))
            | {"all 8": median(cos.max(axis=1))},
            "found": dict(zip(ORIENTATIONS, np.mean(cos >= cutoff, axis=0).tolist(), strict=True))
            | {"all 8": float(np.mean(cos.max(axis=1) >= cutoff))},
        }
        for base, cos in cosines.items()
    }
    return {"per_base": per_base, "false_matches": costs}


def crop_modes(
    encoders: dict[str, Encoder],
    stored: dict[str, Vectors],
    pool: Sequence[Item],
    origin: Sequence[int],
    seed: int,
    cutoff: float,
) -> dict[str, Any]:
    """Question 4: crop=True against crop=False on the crop and pad edits."""
    out = {}
    for mode, encoder in encoders.items():
        edited = edit_queries(encoder, pool, origin, CROP_PAD, seed)
        curve = all_negatives(stored[mode], pool, edited).group(NATURAL).rate(STORE)
        own = cutoff_for(curve)
        out[mode] = {
            "cutoff_for_1pc": own,
            "rate_at_cutoff": at(curve, cutoff),
            "per_edit": {
                name: {
                    "median": median(cos),
                    "found": float(np.mean(cos >= cutoff)),
                    "found_at_own_1pc": float(np.mean(cos >= own)),
                }
                for name, cos in edited.positives(stored[mode]).items()
            },
        }
    return out


def throughput(images: Sequence[RGB], repeats: int) -> dict[int, list[float]]:
    """Images/s of ``embed`` at batch 8 per thread count, runs interleaved (load drifts)."""
    encoders = {t: Encoder.load(CACHE / "models", threads=t) for t in THREADS}
    rates: dict[int, list[float]] = {t: [] for t in THREADS}
    for encoder in encoders.values():
        encoder.embed(images[:8])  # warm-up
    for _ in range(repeats):
        for t, encoder in encoders.items():
            start = perf_counter()
            encoder.embed(images, batch_size=8)
            rates[t].append(len(images) / (perf_counter() - start))
    return rates


# -- report -------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def report_calibration(cal: dict[str, Any]) -> None:
    rec = cal["recommended"]
    cutoffs = sorted({*CANDIDATES, rec})
    positives = cal["positives"] | {"all edits": np.concatenate(list(cal["positives"].values()))}
    print(
        "\n1. positives: cosine of each edited copy with its original; % found at each cutoff "
        "(* the recommended one)"
    )
    print(
        table(
            ["edit", "n", "median", "min", *(f"{c:.2f}{'*' * (c == rec)}" for c in cutoffs)],
            [
                [
                    k,
                    len(v),
                    f"{median(v):.3f}",
                    f"{v.min():.3f}",
                    *(pct(np.mean(v >= c)) for c in cutoffs),
                ]
                for k, v in positives.items()
            ],
        )
    )
    print("\n1. negatives: cosine of a query with the stored images of other sources")
    rows = []
    for name, g in cal["groups"].items():
        neg = g["negatives"]
        pairs, top = neg.pairs(), neg.top
        rows.append(
            [
                f"{name}: every pair",
                len(pairs),
                *(f"{v:.3f}" for v in (pairs[-1], *np.percentile(pairs, [99.9, 99, 50]))),
            ]
        )
        rows.append(
            [
                f"{name}: best per query",
                len(top),
                *(f"{v:.3f}" for v in (top.max(), *np.percentile(top, [99.9, 99, 50]))),
            ]
        )
    print(table(["queries", "n", "max", "p99.9", "p99", "p50"], rows))
    print(
        "\n1. false matches: % of queries with an unrelated stored image >= cutoff; "
        "found: % of all edited copies"
    )
    groups = cal["groups"]
    natural = groups[NATURAL]["curves"]
    every = positives["all edits"]
    print(
        table(
            [
                "cutoff",
                "found",
                "photos&tiles pool",
                f"N={STORE:,}",
                f"N={10 * STORE:,}",
                f"1/f N={STORE:,}",
                f"all N={STORE:,}",
            ],
            [
                [
                    f"{c:.2f}{'*' * (c == rec)}",
                    pct(np.mean(every >= c)),
                    *(pct(at(natural[k], c)) for k in ("pool", STORE, 10 * STORE)),
                    pct(at(groups["1/f"]["curves"][STORE], c)),
                    pct(at(groups["all"]["curves"][STORE], c)),
                ]
                for c in cutoffs
            ],
        )
    )
    print(f"\n1. cutoff for <= 1 % false matches at N={STORE:,} (bootstrap over query sources)")
    print(
        table(
            [
                "queries",
                "queries n",
                "sources",
                "cutoff",
                "bootstrap p5",
                "p50",
                "p95",
                "found at cutoff %",
            ],
            [
                [
                    name,
                    len(g["negatives"].kinds),
                    len(set(g["negatives"].sources)),
                    f"{g['cutoff_for_1pc']:.3f}",
                    *(f"{v:.3f}" for v in np.percentile(g["bootstrap"], [5, 50, 95])),
                    pct(np.mean(every >= g["cutoff_for_1pc"])),
                ]
                for name, g in groups.items()
            ],
        )
    )
    print(
        f"  recommended: the {NATURAL} bootstrap p95, rounded up to a multiple of 0.05: {rec:.2f}"
    )
    for name in (NATURAL, "1/f"):
        closest = "; ".join(f"{q} ~ {s} {c:.3f}" for q, s, c in groups[name]["closest"])
        print(f"  closest unrelated ({name}): {closest}")


def report_centring(cen: dict[str, dict[str, Any]]) -> None:
    print(
        "\n2. centring: two folds of sources, each stored and searched on its own; recall of "
        f"all edited copies at the cutoff giving 1 % false matches, N={STORE:,}"
    )
    rows = []
    for method, by_group in cen.items():
        row = [method]
        for v in by_group.values():
            row += [
                f"{v['auc']:.4f}",
                f"{v['cutoff_for_1pc']:.3f}",
                pct(v["recall"]),
                pct(v["recall_crop_pad"]),
            ]
        rows.append(row)
    headers = ["cosine"]
    for group in next(iter(cen.values())):
        headers += [f"{group}: AUC", "1 % cutoff", "recall %", "crop/pad %"]
    print(table(headers, rows))


def report_rotations(rot: dict[str, Any], cutoff: float) -> None:
    names = [*ORIENTATIONS, "all 8"]
    print(
        f"\n3. rotated/mirrored copies: % found at {cutoff:.2f} searching the identity "
        "embedding (per orientation of the copy) or the max over all 8; then median cosines"
    )
    print(
        table(
            ["copy of", *names],
            [[b, *(pct(v["found"][o]) for o in names)] for b, v in rot["per_base"].items()],
        )
    )
    print(
        table(
            ["median cosine", *names],
            [[b, *(f"{v['median'][o]:.3f}" for o in names)] for b, v in rot["per_base"].items()],
        )
    )
    print(
        "\n3. cost of all 8: every stored photo & tile as a query, against the pool, "
        f"N={STORE:,}; found at each search's own 1 % cutoff: the turned copies above, and "
        "the other edits of table 1 (identity scores: a lower bound for all 8)"
    )
    headers = ["search", "queries", f"false % at {cutoff:.2f}", "1 % cutoff"]
    print(
        table(
            [*headers, "turned copies found %", "other edits found %"],
            [
                [
                    k,
                    v["queries"],
                    pct(v["rate_at_cutoff"]),
                    f"{v['cutoff_for_1pc']:.3f}",
                    pct(v["turned_found"]),
                    pct(v["others_found"]),
                ]
                for k, v in rot["false_matches"].items()
            ],
        )
    )


def report_crop_modes(modes: dict[str, Any], cutoff: float) -> None:
    print(
        "\n4. crop=True (centre 224/256 of the short side) against crop=False (whole image "
        f"squashed): median cosine, % found at {cutoff:.2f} and at each mode's own 1 % cutoff "
        "(set on photo & tile queries)"
    )
    headers, rows = ["edit"], {name: [name] for name in CROP_PAD}
    for mode, v in modes.items():
        headers += [f"{mode} median", f"at {cutoff:.2f}", f"at {v['cutoff_for_1pc']:.3f}"]
        for name, e in v["per_edit"].items():
            rows[name] += [f"{e['median']:.3f}", pct(e["found"]), pct(e["found_at_own_1pc"])]
    print(table(headers, rows.values()))
    for mode, v in modes.items():
        print(
            f"  {mode}: {pct(v['rate_at_cutoff'])} % false matches at {cutoff:.2f}; "
            f"1 % cutoff {v['cutoff_for_1pc']:.3f}"
        )


def report_throughput(speed: dict[int, list[float]], n: int) -> None:
    print(
        f"\n5. throughput: embed() at batch 8, {n} photos of 640×480 (preprocessing included, "
        f"decoding not); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        table(
            ["threads", "runs", "median img/s", "min", "max"],
            [
                [t, len(r), f"{median(r):.1f}", f"{min(r):.1f}", f"{max(r):.1f}"]
                for t, r in speed.items()
            ],
        )
    )


def json_results(cal: dict[str, Any], cen: Any, rot: Any, modes: Any, speed: Any) -> dict[str, Any]:
    rec = cal["recommended"]
    cutoffs = sorted({*CANDIDATES, rec})
    groups = {
        name: {
            "cutoff_for_1pc": g["cutoff_for_1pc"],
            "bootstrap_p5_p50_p95": np.percentile(g["bootstrap"], [5, 50, 95]),
            "negative_pairs": {
                "n": len(pairs := g["negatives"].pairs()),
                "max": pairs[-1],
                "p99.9": np.percentile(pairs, 99.9),
                "p99": np.percentile(pairs, 99),
            },
            "false_match_rate": {
                str(k): {f"{c:.2f}": at(v, c) for c in cutoffs} for k, v in g["curves"].items()
            },
            "closest": g["closest"],
        }
        for name, g in cal["groups"].items()
    }
    positives = {
        k: {
            "median": median(v),
            "min": v.min(),
            **{f"found_{c:.2f}": np.mean(v >= c) for c in cutoffs},
        }
        for k, v in cal["positives"].items()
    }
    return {
        "recommended_cutoff": rec,
        "positives": positives,
        "negatives": groups,
        "centring": cen,
        "rotations": rot,
        "crop_modes": modes,
        "throughput_images_per_s": {str(t): r for t, r in speed.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run on fewer images")
    parser.add_argument("--pink", type=int, help="stored 1/f images (default 300, quick 40)")
    parser.add_argument("--queries", type=int, help="images edited (default 150, quick 40)")
    parser.add_argument(
        "--bootstrap", type=int, default=500, help="rounds for the cutoff's interval"
    )
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args(argv)
    per_source = (4, 1) if args.quick else (24, 6)
    n_pink = args.pink if args.pink is not None else (40 if args.quick else 300)
    n_queries = args.queries or (40 if args.quick else 150)
    rng = np.random.default_rng(args.seed)

    pool = build_pool(rng, per_source, n_pink)
    origin = pick_queries(pool, n_queries, rng)
    kinds = {k: sum(item.kind == k for item in pool) for k in ("photo", "tile", "1/f")}
    sources = len({item.source for item in pool})
    description = (
        f"pool: {len(pool)} stored images from {sources} sources ({kinds['photo']} whole "
        f"scikit-image images, {kinds['tile']} tiles of them, {kinds['1/f']} 1/f images); "
        f"{len(origin)} of them "
        "edited. Tiles of one photo are not independent: same-source pairs are never negatives."
    )
    print(description, file=sys.stderr)

    encoders = {
        mode: Encoder.load(CACHE / "models", crop=mode == "crop=True") for mode in CROP_MODES
    }
    stored = {
        mode: embed(enc, [item.image for item in pool], f"pool images ({mode})")
        for mode, enc in encoders.items()
    }
    encoder, base = encoders["crop=True"], stored["crop=True"]
    edited = edit_queries(encoder, pool, origin, list(EDITS), args.seed)
    cal = calibration(base, pool, edited, rng, args.bootstrap)
    cutoff = cal["recommended"]
    cen = centring(base, pool, edited, rng)
    rot = rotations(encoder, base, pool, origin, args.seed, cutoff, cal["positives"])
    modes = crop_modes(encoders, stored, pool, origin, args.seed, cutoff)
    speed_images = [resize_to(image, 640, 480) for image in whole_images().values()][:16]
    speed = throughput(speed_images, 3 if args.quick else 9)

    print(f"\n{description}")
    report_calibration(cal)
    report_centring(cen)
    report_rotations(rot, cutoff)
    report_crop_modes(modes, cutoff)
    report_throughput(speed, len(speed_images))
    config = {
        "pool": len(pool),
        "sources": sources,
        "kinds": kinds,
        "edited": len(origin),
        "tiles_per_source": dict(zip(TILE_SIZES, per_source, strict=True)),
        "min_tile_std": MIN_TILE_STD,
        "edits": list(EDITS),
        "store": STORE,
        "target": TARGET,
        "seed": args.seed,
        "bootstrap": args.bootstrap,
    }
    name = "embeddings-quick" if args.quick else "embeddings"  # a quick run keeps the full one
    path = write_results(name, config, json_results(cal, cen, rot, modes, speed))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
