"""Search methods through the service, with the real EfficientNet encoder on real photos:
the signature finds copies, the embedding finds crops and look-alikes, hybrid both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS
from PIL import Image

from lookalike import InvalidImage, InvalidRequest, Settings
from lookalike.orientations import ORIENTATIONS
from lookalike.records import Record
from lookalike.service import Lookalike
from lookalike.signature import distance as signature_distance
from lookalike.signature import orientations as signature_orientations


def crop(fraction: float, left: float = 0.5) -> Callable[[Image.Image], Image.Image]:
    """Keep ``fraction`` of each side, the window at ``left`` (0: left edge, 1: right)."""

    def apply(image: Image.Image) -> Image.Image:
        w, h = int(image.width * fraction), int(image.height * fraction)
        x, y = int((image.width - w) * left), (image.height - h) // 2
        return image.crop((x, y, x + w, y + h))

    return apply


@pytest.fixture
def service(tmp_path: Path, model_cache: Path) -> Iterator[Lookalike]:
    settings = Settings(
        backend="sqlite:///" + str(tmp_path / "store.db"),
        embeddings=True,
        model_cache=str(model_cache),
        embedding_threads=1,
    )
    with Lookalike(settings) as service:
        yield service


@pytest.fixture
def stored(service: Lookalike, photo_bytes: dict[str, bytes]) -> Lookalike:
    for name, content in photo_bytes.items():
        service.add(name, content, {"kind": "photo"})
    return service


def test_added_images_carry_their_embedding(stored: Lookalike) -> None:
    record = stored.get("chelsea")
    assert record.embedding is not None and record.embedding.shape == (1280,)
    assert abs(float(np.linalg.norm(record.embedding)) - 1.0) < 1e-3
    assert stored.stats()["embeddings"] == len(PHOTOS)


def test_embedding_finds_a_crop_the_signature_misses(stored: Lookalike, edit) -> None:
    query = edit("chelsea", crop(0.6, left=0.2))  # 36 % of the picture, off centre
    assert [m.filepath for m in stored.search(query, method="signature")] == []
    found = stored.search(query, method="embedding")
    assert found[0].filepath == "chelsea"
    assert found[0].method == "embedding"
    assert 0 < found[0].distance < stored.settings.embedding_max_distance
    assert found[0].score == pytest.approx(100 * (1 - found[0].distance))
    assert all(m.distance > found[0].distance for m in found[1:])


def test_embedding_search_with_orientations_finds_a_turned_copy(stored: Lookalike, edit) -> None:
    turned = edit("rocket", lambda im: im.transpose(Image.Transpose.ROTATE_90))
    best = stored.search(turned, method="embedding")[0]
    assert (best.filepath, best.orientation) == ("rocket", "rot270")
    assert best.distance < 0.01


def test_hybrid_puts_what_either_method_is_sure_of_first(stored: Lookalike, edit) -> None:
    copy = edit("astronaut", lambda im: im.resize((im.width // 2, im.height // 2)), quality=60)
    signature_first = stored.search(copy, method="hybrid")[0]
    assert (signature_first.filepath, signature_first.method) == ("astronaut", "signature")
    assert signature_first.distance == stored.search(copy)[0].distance
    cropped = edit("coffee", crop(0.6, left=0.8))
    embedding_first = stored.search(cropped, method="hybrid")
    assert (embedding_first[0].filepath, embedding_first[0].method) == ("coffee", "embedding")
    # on the signature's scale: an embedding distance times the ratio of the cutoffs
    alone = stored.search(cropped, method="embedding")[0].distance
    ratio = stored.settings.max_distance / stored.settings.embedding_max_distance
    assert embedding_first[0].distance == pytest.approx(alone * ratio)
    assert len({m.filepath for m in embedding_first}) == len(embedding_first)


def test_hybrid_embeds_the_query_as_it_is_and_mirrored(
    stored: Lookalike, edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With LOOKALIKE_HYBRID_ORIENTATIONS=mirror, hybrid's query is embedded twice (as it
    is and mirrored), not 8 times, its signature finding turned copies; a match of the
    mirrored embedding is reported mirrored; a turned copy is still found."""
    stored = Lookalike(stored.settings.replace(hybrid_orientations="mirror"), stored.backend)
    query = edit("coffee", crop(0.6, left=0.8))
    pixels = stored.pixels(query)
    flipped = stored.embed([np.ascontiguousarray(pixels[:, ::-1])])[0]
    unrelated = np.random.default_rng(5).integers(-2, 3, 648).astype(np.int8)
    stored.add_many([Record("flipped", unrelated, embedding=flipped)])
    embedded_rows: list[int] = []
    embed = stored.embed
    monkeypatch.setattr(
        stored, "embed", lambda rows: embedded_rows.append(len(rows)) or embed(rows)
    )
    found = {m.filepath: m for m in stored.search(query, method="hybrid")}
    assert (found["flipped"].method, found["flipped"].orientation) == ("embedding", "mirror")
    assert found["flipped"].distance < 0.01
    stored.search(query, method="embedding")
    two, eight = embedded_rows  # and as many of each for the rectangles inside the query
    assert eight - two == 6
    turned = edit("rocket", lambda im: im.transpose(Image.Transpose.ROTATE_90))
    best = stored.search(turned, method="hybrid")[0]
    assert (best.filepath, best.method, best.orientation) == ("rocket", "signature", "rot270")


def test_hybrid_with_all_orientations_embeds_every_turn(
    service: Lookalike, edit, photo_bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirrored = Lookalike(service.settings.replace(hybrid_orientations="mirror"), service.backend)
    alone = Lookalike(service.settings.replace(hybrid_orientations="identity"), service.backend)
    service.add("rocket", photo_bytes["rocket"])
    turned_crop = edit("rocket", lambda im: crop(0.7)(im).transpose(Image.Transpose.ROTATE_90))
    counts = {}
    for name, searcher in (("all", service), ("identity", alone), ("mirror", mirrored)):
        rows: list[int] = []
        embed = searcher.embed
        monkeypatch.setattr(
            searcher, "embed", lambda r, rows=rows, e=embed: rows.append(len(r)) or e(r)
        )
        found = searcher.search(turned_crop, method="hybrid")
        counts[name] = rows[0]
        if name == "all":  # turned back (the network hardly tells a mirror image apart)
            assert found[0].filepath == "rocket"
            assert found[0].orientation in ("rot270", "mirror_rot90")
    assert counts["all"] - counts["mirror"] == 6 and counts["mirror"] - counts["identity"] == 1


def test_filters_limits_and_min_score_apply_to_every_method(stored: Lookalike, edit) -> None:
    stored.add("other", edit("coffee", crop(0.9)), {"kind": "other"})
    query = edit("coffee", crop(0.95))
    for method in ("embedding", "hybrid"):
        found = stored.search(query, method=method, where={"kind": "other"})
        assert [m.filepath for m in found] == ["other"]
        assert len(stored.search(query, method=method, limit=1)) == 1
        best = stored.search(query, method=method)[0]
        assert stored.search(query, method=method, min_score=best.score + 1e-6) == []


def test_search_by_stored_filepath(stored: Lookalike) -> None:
    found = stored.search_stored("chelsea", method="embedding")
    assert found[0].filepath == "chelsea" and found[0].distance < 1e-6


def test_compare_by_embedding(stored: Lookalike, photo_bytes, edit) -> None:
    same = stored.compare(photo_bytes["chelsea"], edit("chelsea", crop(0.7)), method="embedding")
    other = stored.compare(photo_bytes["chelsea"], photo_bytes["coffee"], method="embedding")
    assert same.method == "embedding"
    assert same.score > 100 * (1 - stored.settings.embedding_max_distance) > other.score


def test_methods_need_embeddings_enabled(tmp_path: Path, photo_bytes) -> None:
    with Lookalike(Settings(backend="memory://")) as plain:
        plain.add("cat", photo_bytes["chelsea"])
        assert plain.get("cat").embedding is None
        for method in ("embedding", "hybrid"):
            with pytest.raises(InvalidRequest, match="LOOKALIKE_EMBEDDINGS=true"):
                plain.search(photo_bytes["chelsea"], method=method)
        with pytest.raises(InvalidRequest, match="method must be one of"):
            plain.search(photo_bytes["chelsea"], method="colour")


def test_stored_without_an_embedding_is_refused_by_filepath(service: Lookalike, photo_bytes):
    with Lookalike(service.settings.replace(embeddings=False)) as before:
        before.add("old", photo_bytes["coffee"])  # added before embeddings were enabled
    assert service.search(photo_bytes["coffee"], method="embedding") == []
    assert service.search(photo_bytes["coffee"])[0].filepath == "old"
    with pytest.raises(InvalidRequest, match="without an embedding"):
        service.search_stored("old", method="embedding")


@pytest.mark.slow
def test_add_files_in_worker_processes_stores_embeddings(
    service: Lookalike, photo_files: dict[str, Path]
) -> None:
    results = list(service.add_files(((n, p) for n, p in photo_files.items()), workers=2))
    assert [r.error for r in results] == [None] * len(photo_files)
    single = service.embed([np.asarray(Image.open(photo_files["coins"]).convert("RGB"))])[0]
    record = service.get("coins")
    assert record.embedding is not None
    np.testing.assert_allclose(record.embedding, single, atol=2e-3)


def test_compare_reports_both_scores_when_embeddings_are_enabled(
    stored: Lookalike, photo_bytes, edit
) -> None:
    cropped = edit("chelsea", crop(0.6, left=0.2))
    plain = stored.compare(photo_bytes["chelsea"], cropped)
    assert plain.method == "signature" and set(plain.scores or {}) == {"signature", "embedding"}
    assert plain.score == plain.scores["signature"] < plain.scores["embedding"]
    by_embedding = stored.compare(photo_bytes["chelsea"], cropped, method="embedding")
    assert by_embedding.score == pytest.approx(plain.scores["embedding"])
    hybrid = stored.compare(photo_bytes["chelsea"], cropped, method="hybrid")
    ratio = stored.settings.max_distance / stored.settings.embedding_max_distance
    assert hybrid.method == "embedding"
    assert hybrid.distance == pytest.approx(by_embedding.distance * ratio)
    assert plain.to_json()["scores"] == plain.scores


def test_collapse_with_embeddings(stored: Lookalike, edit) -> None:
    stored.add("again", edit("coffee", crop(0.9)), {"kind": "photo"})
    query = edit("coffee", crop(0.8))
    found = stored.search(query, method="hybrid", max_distance=1.0)
    assert {"coffee", "again"} <= {m.filepath for m in found}
    collapsed = stored.search(query, method="hybrid", max_distance=1.0, collapse="kind")
    assert [m.filepath for m in collapsed] == [found[0].filepath]


def test_hybrid_drops_an_unsure_signature_match_the_embeddings_call_unrelated(
    service: Lookalike, photo_bytes
) -> None:
    """Three stored records whose signatures the signature is unsure of (distance in
    [0.40, 0.45)): one whose embedding is the query's, one whose embedding is unrelated,
    one without an embedding. Hybrid keeps the first and the last."""
    rng = np.random.default_rng(3)
    query = photo_bytes["coffee"]
    sig = service.signature(query)
    embedding = service.embed([service.pixels(query)])[0]

    def unsure(near: np.ndarray = sig) -> np.ndarray:
        changed = near.copy()
        while signature_distance(changed, near) < 0.41:
            i = rng.integers(len(changed))
            changed[i] = rng.integers(-2, 3)
        assert signature_distance(changed, near) < 0.44
        return changed

    unrelated = rng.normal(size=embedding.shape).astype(np.float32)
    unrelated /= np.linalg.norm(unrelated)
    service.add_many(
        [
            Record("ally", unsure(), embedding=embedding),
            Record("decoy", unsure(), embedding=unrelated.astype(np.float16).astype(np.float32)),
            Record("plain", unsure()),
        ]
    )
    by_signature = {m.filepath for m in service.search(query, method="signature")}
    assert by_signature == {"ally", "decoy", "plain"}
    hybrid = service.search(query, method="hybrid")
    assert [(m.filepath, m.method) for m in hybrid] == [
        ("ally", "embedding"),
        ("plain", "signature"),
    ]
    # A decoy the signature finds turned: a hybrid query embedded only as it is and
    # mirrored cannot tell; embedded in every turn (the default), it can.
    turned = signature_orientations(service.pixels(query))[ORIENTATIONS.index("rot90")]
    service.delete("decoy")
    service.add_many(
        [Record("decoy", unsure(turned), embedding=unrelated.astype(np.float16).astype(np.float32))]
    )
    mirrored = Lookalike(service.settings.replace(hybrid_orientations="mirror"), service.backend)
    kept = {m.filepath: m for m in mirrored.search(query, method="hybrid")}
    assert kept["decoy"].orientation == "rot90" and kept["decoy"].method == "signature"
    assert "decoy" not in {m.filepath for m in service.search(query, method="hybrid")}


def test_with_embeddings_a_blank_picture_is_stored_and_found_by_its_embedding(
    stored: Lookalike,
) -> None:
    """A picture with no detail for the signature (one colour) is refused when the
    signature is the only method; with embeddings it is stored, found by embedding and
    hybrid, and two identical ones compare as identical rather than at score 0."""
    import io

    def flat(colour: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), colour).save(buffer, "PNG")
        return buffer.getvalue()

    stored.add("blank-red", flat((200, 30, 30)))
    assert not stored.get("blank-red").signature.any()
    for method in ("embedding", "hybrid"):
        found = stored.search(flat((200, 30, 30)), method=method)
        assert found and found[0].filepath == "blank-red", method
    same = stored.compare(flat((200, 30, 30)), flat((200, 30, 30)), method="hybrid")
    assert same.score > 99
    with pytest.raises(InvalidImage, match="no detail"):
        stored.search(flat((200, 30, 30)), method="signature")
