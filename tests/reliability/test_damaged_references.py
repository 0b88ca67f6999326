"""Reference files that are not as tiffstore wrote them: combined, edited, pasted, damaged.

``tiffstore.open(refs)`` builds its store from the manifest saved in the file's
attributes, so it must never do that for a file whose references say something
else: kerchunk's ``MultiZarrToZarr`` copies the first input's attributes into the
combination, another file's attributes may be pasted in, chunk references edited.
Those are refused with a :class:`~tiffstore.errors.ReferenceError` naming the file
and fsspec + zarr as the way to read it, while fsspec + zarr still read it. A
damaged saved manifest or attribute (hypothesis deletes keys, puts in values of the
wrong type, truncates and garbles the base64, flips bytes of the ``.npz``) ends in a
tiffstore error naming the file, or in an open that reads the right data; never in
another exception.

The writer stores the digest of the chunk references (``tiffstore.references.digest``);
where it does not (yet), :func:`written` inserts one computed by
:func:`~tiffstore.manifest.saved.chunk_digest` over the references as fsspec reads them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr
from fsspec.implementations.reference import LazyReferenceMapper
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tiffstore
from tiffstore.errors import ReferenceError, SourceError, TiffStoreError
from tiffstore.manifest.saved import chunk_digest
from tiffstore.sample import write_sample

from .corpus import bounded, read_everything

#: Each reference file kind: tiffstore's JSON (version 1 and 0) and Parquet.
KINDS = ("json", "json-v0", "parquet")
#: Examples per fuzz test and kind: the same few every run (derandomized).
EXAMPLES = int(os.environ.get("TIFFSTORE_FUZZ_EXAMPLES", "0")) or 20
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="TIFFSTORE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- reference files, read and edited as another tool would -------------------


def suffix(kind: str) -> str:
    return ".parq" if kind == "parquet" else ".json"


def _json(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JSON reference file and its references (``refs`` of version 1)."""
    doc = json.loads(path.read_text())
    return doc, doc["refs"] if doc.get("version") == 1 else doc


def attributes(path: Path) -> dict[str, Any]:
    """The group's attributes (``.zattrs``)."""
    if path.is_dir():
        return json.loads((path / ".zmetadata").read_text())["metadata"][".zattrs"]
    _, refs = _json(path)
    return json.loads(refs[".zattrs"])


def set_attributes(path: Path, attrs: dict[str, Any]) -> None:
    """Replace the group's attributes, in ``.zattrs`` and the consolidated metadata."""
    if path.is_dir():
        meta = json.loads((path / ".zmetadata").read_text())
        meta["metadata"][".zattrs"] = attrs
        (path / ".zmetadata").write_text(json.dumps(meta))
        return
    doc, refs = _json(path)
    refs[".zattrs"] = json.dumps(attrs)
    if ".zmetadata" in refs:
        meta = json.loads(refs[".zmetadata"])
        meta["metadata"][".zattrs"] = attrs
        refs[".zmetadata"] = json.dumps(meta)
    path.write_text(json.dumps(doc))


def fsspec_references(path: Path) -> Iterator[tuple[str, Any]]:
    """Every reference as fsspec reads it (Parquet through its ``LazyReferenceMapper``)."""
    if not path.is_dir():
        yield from _json(path)[1].items()
        return
    mapper = LazyReferenceMapper(str(path), fs=fsspec.filesystem("file"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 on fastparquet
        for key in list(mapper):
            yield key, mapper[key]


def written(store: tiffstore.TiffStore, path: Path, kind: str) -> Path:
    """``store``'s references written to ``path``, with the digest of their chunks."""
    options: dict[str, Any] = {"format": "parquet" if kind == "parquet" else "json"}
    if kind != "parquet":
        options["version"] = 0 if kind == "json-v0" else 1
    tiffstore.write_references(store, str(path), **options)
    about = attributes(path)["tiffstore"]["references"]
    # The writer's digest is the one fsspec's reading of the file gives.
    assert about["digest"] == chunk_digest(fsspec_references(path), about["image"])
    return path


def read_by_fsspec(path: Path) -> np.ndarray:
    """The image as fsspec + zarr read it, with no tiffstore."""
    fs = fsspec.filesystem("reference", fo=str(path), remote_protocol="file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = zarr.open_group(fs.get_mapper(), mode="r")["image"]
        assert isinstance(image, zarr.Array)
        return np.asarray(image[...])


def read_by_tiffstore(path: Path | str) -> np.ndarray:
    return np.asarray(zarr.open_array(tiffstore.open(path), mode="r")[...])


def edit_chunk(path: Path, key: str, edit: Callable[[list[Any]], list[Any]]) -> None:
    """Replace one chunk reference ``[url, offset, size]`` by ``edit(it)``."""
    if path.is_dir():
        mapper = LazyReferenceMapper(str(path), fs=fsspec.filesystem("file"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mapper[key] = edit(list(mapper[key]))
            mapper.flush()
        return
    doc, refs = _json(path)
    refs[key] = edit(refs[key])
    path.write_text(json.dumps(doc))


@dataclass(frozen=True)
class Acquisition:
    folder: Path
    data: np.ndarray

    @property
    def store(self) -> tiffstore.TiffStore:
        return tiffstore.open(self.folder)


def acquisition(
    folder: Path, seed: int = 0, stacks: int = 4, shape: tuple[int, ...] = (4, 16, 12), **tiff: Any
) -> Acquisition:
    """3 channels x ``stacks`` stacks of ``shape`` uint16: file names that do not depend
    on ``seed``, pixels that do; ``tiff``: tifffile's options (``compression=``...)."""
    write_sample(folder, channels=3, stacks=stacks, shape=shape, seed=seed, **tiff)
    return Acquisition(folder, read_by_tiffstore(folder))


# -- combined, pasted, edited ---------------------------------------------------


def test_kerchunk_combined_references_are_refused_and_fsspec_still_reads_them(tmp_path):
    from kerchunk.combine import MultiZarrToZarr

    first = acquisition(tmp_path / "day1", seed=1)
    second = acquisition(tmp_path / "day2", seed=2)
    inputs = [
        str(written(a.store, tmp_path / f"{name}.json", "json"))
        for name, a in (("day1", first), ("day2", second))
    ]
    _, refs = _json(Path(inputs[0]))
    others = sorted({k.split("/")[0] for k in refs if "/" in k} - {"image"})
    combined = MultiZarrToZarr(
        inputs,
        concat_dims=["acq"],
        coo_map={"acq": "INDEX"},
        identical_dims=others,
        remote_protocol="file",
    ).translate()
    target = tmp_path / "both.json"
    target.write_text(json.dumps(combined))
    # kerchunk copied the first input's attributes, tiffstore's manifest of day1 with them.
    assert attributes(target)["tiffstore"] == attributes(Path(inputs[0]))["tiffstore"]

    with pytest.raises(ReferenceError) as refused:
        tiffstore.open(target)
    message = str(refused.value)
    assert str(target) in message
    assert "has shape (2, 3, 4, 4, 16, 12)" in message
    assert "the tiffstore manifest saved in it describes shape (3, 4, 4, 16, 12)" in message
    assert "combined with other references or edited by another tool" in message
    assert 'fsspec.filesystem("reference"' in message
    # The combination itself is fine: fsspec + zarr read both acquisitions from it.
    np.testing.assert_array_equal(read_by_fsspec(target), np.stack([first.data, second.data]))


@pytest.mark.parametrize("kind", KINDS)
def test_edited_chunk_references_are_refused_by_their_digest(tmp_path, kind):
    sample = acquisition(tmp_path / "raw")
    target = written(sample.store, tmp_path / f"refs{suffix(kind)}", kind)
    np.testing.assert_array_equal(read_by_tiffstore(target), sample.data)

    edit_chunk(target, "image/0.1.0.0.0", lambda ref: [ref[0], ref[1] + 2, ref[2]])
    with pytest.raises(ReferenceError, match="other than those tiffstore wrote") as refused:
        tiffstore.open(target)
    assert str(target) in str(refused.value)
    assert 'fsspec.filesystem("reference"' in str(refused.value)


@pytest.mark.parametrize("kind", ["json", "parquet"])
def test_a_chunk_pointed_at_another_file_is_refused(tmp_path, kind):
    """Same offsets and sizes (the digest leaves URLs out), another file: refused."""
    sample = acquisition(tmp_path / "raw")
    target = written(sample.store, tmp_path / f"refs{suffix(kind)}", kind)
    stranger = tmp_path / "elsewhere" / "stranger.tif"
    stranger.parent.mkdir()
    edit_chunk(target, "image/0.1.0.0.0", lambda ref: [str(stranger), *ref[1:]])
    with pytest.raises(ReferenceError, match=r"stranger\.tif', which is none of the 12 files"):
        tiffstore.open(target)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("other", ["same names and layout", "other shape"])
def test_attributes_pasted_from_another_acquisition_are_refused(tmp_path, kind, other):
    this = acquisition(tmp_path / "this", seed=1)
    that = acquisition(tmp_path / "that", seed=2, stacks=4 if other.startswith("same") else 3)
    target = written(this.store, tmp_path / f"this{suffix(kind)}", kind)
    donor = written(that.store, tmp_path / f"that{suffix(kind)}", kind)
    if other.startswith("same"):  # nothing but the place tells them apart
        assert (
            attributes(donor)["tiffstore"]["references"]["digest"]
            == (attributes(target)["tiffstore"]["references"]["digest"])
        )
    set_attributes(target, attributes(donor))

    with pytest.raises(ReferenceError) as refused:
        tiffstore.open(target)
    message = str(refused.value)
    assert str(target) in message
    if other.startswith("same"):
        assert f"read the TIFF files from {tmp_path / 'this'}" in message
        assert f"the manifest reads them from {tmp_path / 'that'}" in message
    else:
        assert "has shape (3, 4, 4, 16, 12)" in message
        assert "describes shape (3, 3, 4, 16, 12)" in message
    np.testing.assert_array_equal(read_by_fsspec(target), this.data)


def test_references_without_a_digest_are_checked_by_their_array_alone(tmp_path):
    """Files written before the digest: an edited chunk is not seen, another array is."""
    sample = acquisition(tmp_path / "raw")
    target = written(sample.store, tmp_path / "refs.json", "json")
    attrs = attributes(target)
    del attrs["tiffstore"]["references"]["digest"]
    set_attributes(target, attrs)
    edit_chunk(target, "image/0.1.0.0.0", lambda ref: [ref[0], ref[1] + 2, ref[2]])
    tiffstore.open(target)  # not seen: nothing to compare the references with

    doc, refs = _json(target)
    zarray = json.loads(refs["image/.zarray"])
    refs["image/.zarray"] = json.dumps(dict(zarray, dtype=">u2"))
    target.write_text(json.dumps(doc))
    with pytest.raises(ReferenceError, match=r"has dtype '>u2' but .* describes dtype '<u2'"):
        tiffstore.open(target)


def test_a_missing_image_array_is_refused(tmp_path):
    sample = acquisition(tmp_path / "raw")
    target = written(sample.store, tmp_path / "refs.json", "json")
    doc, refs = _json(target)
    del refs["image/.zarray"]
    target.write_text(json.dumps(doc))
    with pytest.raises(ReferenceError, match=r"'image' has no \.zarray document"):
        tiffstore.open(target)


def test_chunk_digest_leaves_out_urls_and_what_is_no_chunk():
    refs = [
        ("image/.zarray", "{}"),
        ("image/1.0", ["s3://b/a.tif", 8, 1024]),
        ("image/0.0", b"pixels"),
        ("image/10.0", ["{{u}}/b.tif"]),
        ("ch/0", b"\x00"),
    ]
    digest = chunk_digest(refs, "image")
    moved = [
        (k, [f"https://elsewhere/{v[0]}", *v[1:]] if isinstance(v, list) else v) for k, v in refs
    ]
    assert chunk_digest(moved, "image") == digest
    extra = [*refs, ("image/.zattrs", "{}"), ("image/0.x", [1]), ("ch/1", b"")]
    assert chunk_digest(reversed(extra), "image") == digest
    # Inlined bytes as a JSON file holds them count as the bytes.
    as_json = [
        (k, "base64:" + base64.b64encode(v).decode()) if isinstance(v, bytes) else (k, v)
        for k, v in refs
    ]
    assert chunk_digest(as_json, "image") == digest
    for key, value in [("image/1.0", ["s3://b/a.tif", 9, 1024]), ("image/0.0", b"pixelz")]:
        changed = [(k, value if k == key else v) for k, v in refs]
        assert chunk_digest(changed, "image") != digest
    lines = "image/0.0 inline {}\nimage/1.0 8 1024\nimage/10.0 whole\n".format(
        hashlib.sha256(b"pixels").hexdigest()
    )
    assert digest == hashlib.sha256(lines.encode()).hexdigest()


# -- damaged: hypothesis ------------------------------------------------------------


#: The fuzzed files: a container and the TIFFs' layout ("tiles": zlib, predictor).
CASES = ("json", "parquet", "json-tiles", "parquet-tiles")


@dataclass
class Fixture:
    """A reference file of each case, pristine, and a mutant to damage in place."""

    data: dict[str, np.ndarray]
    pristine: dict[str, Path]
    mutant: dict[str, Path]

    def attributes(self, case: str) -> dict[str, Any]:
        return attributes(self.pristine[case])

    def with_attributes(self, case: str, attrs: dict[str, Any]) -> Path:
        mutant = self.mutant[case]
        set_attributes(mutant, attrs)
        return mutant

    def with_manifest(self, case: str, text: str) -> Path:
        attrs = self.attributes(case)
        attrs["tiffstore"]["manifest"] = text
        return self.with_attributes(case, attrs)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    tmp = tmp_path_factory.mktemp("damaged")
    samples = {
        "raw": acquisition(tmp / "raw"),
        "tiles": acquisition(
            tmp / "tiles", shape=(4, 32, 32), compression="zlib", tile=(16, 16), predictor=True
        ),
    }
    data, pristine, mutant = {}, {}, {}
    for case in CASES:
        kind, _, layout = case.partition("-")
        sample = samples[layout or "raw"]
        data[case] = sample.data
        pristine[case] = written(sample.store, tmp / f"pristine-{case}{suffix(kind)}", kind)
        mutant[case] = tmp / f"mutant-{case}{suffix(kind)}"
        if kind == "parquet":
            shutil.copytree(pristine[case], mutant[case])
        else:
            shutil.copy(pristine[case], mutant[case])
    return Fixture(data, pristine, mutant)


def open_and_read(path: Path, expected: np.ndarray | None) -> str:
    """Open ``path`` and read everything: a tiffstore error naming the file at the open,
    else (``expected`` given) exactly ``expected``; no other exception, ever. Returns
    what happened, for hypothesis' statistics."""

    def run() -> None:
        try:
            store = tiffstore.open(path)
        except TiffStoreError as exc:
            assert path.name in str(exc), f"the error does not name the file: {exc}"
            outcomes.append(f"refused: {type(exc).__name__}")
            return
        try:
            data = read_everything(store)
        except TiffStoreError as exc:
            assert expected is None, f"a damage that opened read wrong: {exc}"
            outcomes.append(f"opened, read refused: {type(exc).__name__}")
            return
        if expected is not None:
            np.testing.assert_array_equal(data, expected)
        outcomes.append("opened and read")

    outcomes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bounded(run, 30)
    return outcomes[0]


#: Values of the wrong type (and some of the right type, wrong).
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, 1, 2, 3, 4, 16]),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ATTRIBUTE_PATHS = [
    ("tiffstore",),
    ("tiffstore", "manifest"),
    ("tiffstore", "references"),
    ("tiffstore", "references", "image"),
    ("tiffstore", "references", "url"),
    ("tiffstore", "references", "digest"),
    ("tiffstore", "made_from"),
    ("tiffstore", "axes"),
]


def _replace(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@pytest.mark.parametrize("case", ["json", "parquet"])
@FUZZ
@given(path=st.sampled_from(ATTRIBUTE_PATHS), delete=st.booleans(), value=JUNK)
def test_damaged_attributes(made, case, path, delete, value):
    attrs = made.attributes(case)
    _replace(attrs, path, value, delete)
    event(open_and_read(made.with_attributes(case, attrs), made.data[case]))


BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@pytest.mark.parametrize("case", ["json", "parquet"])
@FUZZ
@given(data=st.data())
def test_truncated_or_garbled_base64(made, case, data):
    text = made.attributes(case)["tiffstore"]["manifest"]
    if data.draw(st.booleans(), "truncate"):
        text = text[: data.draw(st.integers(0, len(text) - 1), "at")]
    for _ in range(data.draw(st.integers(0, 3), "garbles")):
        at = data.draw(st.integers(0, max(len(text) - 1, 0)), "where")
        char = data.draw(st.one_of(st.sampled_from(BASE64), st.characters()), "char")
        text = text[:at] + char + text[at + 1 :]
    event(open_and_read(made.with_manifest(case, text), made.data[case]))


@pytest.mark.parametrize("case", CASES)
@FUZZ
@given(data=st.data())
def test_flipped_bytes_of_the_npz(made, case, data):
    npz = bytearray(base64.b64decode(made.attributes(case)["tiffstore"]["manifest"]))
    # Half the flips where the zip's structure is: headers, names, the directory.
    near_ends = st.one_of(st.integers(0, 200), st.integers(len(npz) - 1200, len(npz) - 1))
    for _ in range(data.draw(st.integers(1, 3), "flips")):
        at = data.draw(st.one_of(near_ends, st.integers(0, len(npz) - 1)), "at")
        npz[at] ^= 1 << data.draw(st.integers(0, 7), "bit")
    if data.draw(st.integers(0, 4), "cut") == 0:
        npz = npz[: data.draw(st.integers(0, len(npz)), "length")]
    text = base64.b64encode(bytes(npz)).decode()
    event(open_and_read(made.with_manifest(case, text), made.data[case]))


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index below ``node``, as paths from it."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield (*here, key)
        yield from _paths(child, (*here, key))


def _repacked(doc: dict[str, Any], arrays: dict[str, Any]) -> str:
    buf = io.BytesIO()
    np.savez_compressed(buf, manifest=np.frombuffer(json.dumps(doc).encode(), np.uint8), **arrays)
    return base64.b64encode(buf.getvalue()).decode()


def _damaged_array(a: np.ndarray, how: str) -> np.ndarray:
    if how == "shorter":
        return a.reshape(-1)[:-1]
    if how == "longer":
        return np.concatenate([a.reshape(-1), a.reshape(-1)[:1]])
    if how == "float":
        return a.astype(np.float64)
    if how == "bool":
        return a.astype(bool)
    if how == "negative":
        return -np.abs(a.astype(np.int64)) - 2
    if how == "huge":
        return np.full_like(a, np.iinfo(a.dtype).max if a.dtype.kind in "iu" else True)
    return np.zeros_like(a)


@pytest.mark.parametrize("case", CASES)
@FUZZ
@given(data=st.data())
def test_damaged_fields_of_the_saved_manifest(made, case, data):
    """Fields of the ``.npz`` (its JSON document and arrays) deleted, of the wrong type
    or size, out of range; the archive itself intact. An open that succeeds may read
    other pixels (a field changed to another valid value), but never fails otherwise
    than with a tiffstore error."""
    with np.load(
        io.BytesIO(base64.b64decode(made.attributes(case)["tiffstore"]["manifest"]))
    ) as npz:
        doc = json.loads(npz["manifest"].tobytes())
        arrays = {name: npz[name] for name in npz.files if name != "manifest"}
    for _ in range(data.draw(st.integers(1, 2), "damages")):
        if data.draw(st.booleans(), "in the document"):
            path = data.draw(st.sampled_from(sorted(_paths(doc), key=str)), "path")
            _replace(doc, path, data.draw(JUNK, "value"), data.draw(st.booleans(), "delete"))
        else:
            name = data.draw(st.sampled_from(sorted(arrays)), "array")
            how = data.draw(
                st.sampled_from(
                    ["shorter", "longer", "float", "bool", "negative", "huge", "zero", "gone"]
                ),
                "how",
            )
            if how == "gone":
                del arrays[name]
            else:
                arrays[name] = _damaged_array(arrays[name], how)
    event(open_and_read(made.with_manifest(case, _repacked(doc, arrays)), None))


def test_the_fixture_files_open_and_read_right(made):
    for case in CASES:
        mutant = made.with_attributes(case, made.attributes(case))
        assert open_and_read(mutant, made.data[case]) == "opened and read"
        np.testing.assert_array_equal(read_by_tiffstore(made.pristine[case]), made.data[case])


def test_damage_messages_name_the_file_the_field_and_the_way_out(made):
    attrs = made.attributes("json")
    attrs["tiffstore"]["references"]["url"] = 7
    with pytest.raises(SourceError) as damaged:
        tiffstore.open(made.with_attributes("json", attrs))
    message = str(damaged.value)
    assert message.startswith(str(made.mutant["json"]))
    assert "tiffstore.references.url 7 is no URL or path" in message
    assert 'fsspec.filesystem("reference"' in message

    with np.load(
        io.BytesIO(base64.b64decode(made.attributes("json")["tiffstore"]["manifest"]))
    ) as npz:
        doc = json.loads(npz["manifest"].tobytes())
        arrays = {name: npz[name] for name in npz.files if name != "manifest"}
    doc["layouts"][0]["shape"][1] = -3
    with pytest.raises(SourceError) as damaged:
        tiffstore.open(made.with_manifest("json", _repacked(doc, arrays)))
    assert "the saved tiffstore manifest is damaged: layouts[0].shape[1] is -3, less than 1" in str(
        damaged.value
    )

    with pytest.raises(SourceError, match=r"tiffstore\.manifest is not base64"):
        tiffstore.open(made.with_manifest("json", "not base64!"))
