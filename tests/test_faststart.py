"""The faststart rewrite (gridserve.media.faststart): synthetic boxes built here, a sparse file
with chunk offsets past 4 GiB, and real MP4/MOV files made by ffmpeg, checked with ffprobe and
by comparing decoded frames."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gridserve.media import faststart
from tests.mediafiles import ffprobe, framemd5, media_dir

__all__ = ["media_dir"]


def box(kind: bytes, payload: bytes, *, large: bool = False) -> bytes:
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def stco(offsets: list[int]) -> bytes:
    return box(b"stco", b"\0\0\0\0" + struct.pack(f">I{len(offsets)}I", len(offsets), *offsets))


def co64(offsets: list[int]) -> bytes:
    return box(b"co64", b"\0\0\0\0" + struct.pack(f">I{len(offsets)}Q", len(offsets), *offsets))


def moov(*tables: bytes) -> bytes:
    traks = b""
    for table in tables:
        stbl = box(b"stbl", box(b"stsd", b"\0" * 8) + table + box(b"stsz", b"\0" * 12))
        minf = box(b"minf", box(b"vmhd", b"\0" * 12) + stbl)
        traks += box(
            b"trak", box(b"tkhd", b"\1" * 84) + box(b"mdia", box(b"mdhd", b"\2" * 24) + minf)
        )
    return box(b"moov", box(b"mvhd", b"\3" * 100) + traks + box(b"udta", b"opaque"))


def tables_of(data: bytes) -> list[tuple[bytes, list[int]]]:
    """(type, offsets) of every chunk offset table in ``data`` (a whole file or a moov)."""
    found = []
    position = 0
    while (
        at := min(
            i
            for i in (data.find(b"stco", position), data.find(b"co64", position), len(data))
            if i >= 0
        )
    ) < len(data):
        kind = data[at : at + 4]
        count = struct.unpack(">I", data[at + 8 : at + 12])[0]
        width = 8 if kind == b"co64" else 4
        values = struct.unpack(
            f">{count}{'Q' if width == 8 else 'I'}", data[at + 12 : at + 12 + width * count]
        )
        found.append((kind, list(values)))
        position = at + 12 + width * count
    return found


def render(plan: faststart.Plan, source: bytes) -> bytes:
    return b"".join(p if isinstance(p, bytes) else source[p[0] : p[1]] for p in plan.pieces)


def test_moov_after_mdat_moves_first_and_offsets_follow_the_media() -> None:
    ftyp = box(b"ftyp", b"isom\0\0\2\0isomiso2")
    media = bytes(range(256)) * 4
    mdat = box(b"mdat", media)
    media_start = len(ftyp) + 8
    offsets_a = [media_start, media_start + 100, media_start + 700]
    offsets_b = [media_start + 50]
    index = moov(stco(offsets_a), co64(offsets_b))
    source = ftyp + mdat + index + box(b"free", b"tail")
    boxes = faststart.top_level_boxes(lambda o, n: source[o : o + n], len(source))
    assert [b.type for b in boxes] == [b"ftyp", b"mdat", b"moov", b"free"]
    assert faststart.moov_first(boxes) is False

    plan = faststart.plan(boxes, index)
    assert plan is not None and plan.upgraded == 0
    out = render(plan, source)
    assert len(out) == len(source) == plan.length
    assert out[: len(ftyp)] == ftyp
    new_moov = out[len(ftyp) : len(ftyp) + len(index)]
    assert new_moov[4:8] == b"moov" and len(new_moov) == len(index)
    # Everything but the offsets is byte-for-byte the old moov; the rest keeps its order.
    assert out[len(ftyp) + len(index) :] == mdat + box(b"free", b"tail")
    shift = len(index)
    assert tables_of(new_moov) == [
        (b"stco", [o + shift for o in offsets_a]),
        (b"co64", [o + shift for o in offsets_b]),
    ]
    # Each chunk offset points at the same media bytes as before.
    for old, new in zip(
        offsets_a + offsets_b, [o + shift for o in offsets_a + offsets_b], strict=True
    ):
        assert out[new : new + 16] == source[old : old + 16]
    again = faststart.top_level_boxes(lambda o, n: out[o : o + n], len(out))
    assert faststart.moov_first(again) is True
    assert faststart.plan(again, b"") is None  # already faststart: nothing to do


def test_not_iso_media_or_no_moov_is_left_alone() -> None:
    assert faststart.plan_for(lambda o, n: b"\x1aE\xdf\xa3webm"[o : o + n], 8) is None
    only_mdat = box(b"ftyp", b"isom") + box(b"mdat", b"x" * 10)
    assert faststart.plan_for(lambda o, n: only_mdat[o : o + n], len(only_mdat)) is None


@pytest.mark.parametrize(
    "broken",
    [
        box(b"ftyp", b"isom") + struct.pack(">I4s", 4000, b"mdat"),  # runs past the end
        box(b"ftyp", b"isom") + struct.pack(">I4s", 3, b"mdat") + b"xxxx",  # shorter than a header
        box(b"ftyp", b"isom") + b"\0\0",  # truncated header
    ],
)
def test_malformed_files_raise_faststart_error(broken: bytes) -> None:
    with pytest.raises(faststart.FaststartError):
        faststart.plan_for(lambda o, n: broken[o : o + n], len(broken))


def test_fragmented_and_offsets_into_nothing_are_refused() -> None:
    ftyp = box(b"ftyp", b"isom")
    fragmented = ftyp + box(b"mdat", b"m" * 32) + moov(stco([20])) + box(b"moof", b"f")
    with pytest.raises(faststart.FaststartError, match="fragmented"):
        faststart.plan_for(lambda o, n: fragmented[o : o + n], len(fragmented))
    index = moov(stco([10_000]))
    wild = ftyp + box(b"mdat", b"m" * 32) + index
    with pytest.raises(faststart.FaststartError, match="outside"):
        faststart.plan_for(lambda o, n: wild[o : o + n], len(wild))


def test_sparse_file_past_4_gib_upgrades_stco_to_co64(tmp_path: Path) -> None:
    """An mdat (64-bit header) ending past 4 GiB on a sparse file: offsets that fit in 32 bits
    before the move do not after it, so that stco becomes co64; co64 stays co64."""
    ftyp = box(b"ftyp", b"isom\0\0\2\0isom")
    mdat_size = (1 << 32) + 4096
    mdat_start = len(ftyp)
    near_end = (1 << 32) - 16  # fits now; + the moov size does not
    small = mdat_start + 16 + 8
    index = moov(stco([small, near_end]), stco([small + 8]), co64([(1 << 32) + 100]))
    path = tmp_path / "sparse.mp4"
    with path.open("wb") as out:
        out.write(ftyp + struct.pack(">I4sQ", 1, b"mdat", mdat_size))
        for offset, marker in ((small, b"SMALL"), (near_end, b"NEAR"), ((1 << 32) + 100, b"FAR")):
            out.seek(offset)
            out.write(marker)
        out.seek(mdat_start + mdat_size)
        out.write(index)
    length = path.stat().st_size
    assert length > 1 << 32
    with path.open("rb") as source:
        read_at = faststart.file_reader(source)
        plan = faststart.plan_for(read_at, length)
        assert plan is not None and plan.upgraded == 1
        new_moov = plan.pieces[1]
        assert isinstance(new_moov, bytes)
        assert plan.pieces[0] == (0, len(ftyp)) and plan.pieces[2] == (
            mdat_start,
            length - len(index),
        )
        shift = len(new_moov)
        assert shift == len(index) + 4 * 2  # the two-entry stco grew by 4 bytes an entry
        assert tables_of(new_moov) == [
            (b"co64", [small + shift, near_end + shift]),
            (b"stco", [small + 8 + shift]),
            (b"co64", [(1 << 32) + 100 + shift]),
        ]
        # Same media under each new offset (output offset -> source byte via the plan).
        for new, marker in ((small + shift, b"SMALL"), (near_end + shift, b"NEAR")):
            assert read_at(new - shift, len(marker)) == marker
        assert plan.length == length + 8
        # The new moov parses as a box tree of the size its header says.
        assert struct.unpack(">I", new_moov[:4])[0] == len(new_moov)


@pytest.mark.media
@pytest.mark.parametrize("name", ["clip-end.mp4", "clip-end.mov"])
def test_real_files_from_ffmpeg_rewrite_to_identical_frames(
    media_dir: Path, tmp_path: Path, name: str
) -> None:
    source = media_dir / name
    target = tmp_path / ("fast-" + name)
    with source.open("rb") as src:
        boxes = faststart.top_level_boxes(faststart.file_reader(src), source.stat().st_size)
        assert faststart.moov_first(boxes) is False  # ffmpeg's default
        with target.open("wb") as out:
            assert faststart.rewrite_file(src, out) is True
    with target.open("rb") as out_file:
        rewritten = faststart.top_level_boxes(
            faststart.file_reader(out_file), target.stat().st_size
        )
    assert faststart.moov_first(rewritten) is True
    assert target.stat().st_size == source.stat().st_size
    before, after = ffprobe(source), ffprobe(target)
    assert [s["codec_name"] for s in after["streams"]] == [
        s["codec_name"] for s in before["streams"]
    ]
    assert after["format"]["duration"] == before["format"]["duration"]
    assert framemd5(target) == framemd5(source)


@pytest.mark.media
def test_faststart_file_is_left_alone(media_dir: Path, tmp_path: Path) -> None:
    with (media_dir / "clip-fast.mp4").open("rb") as src, (tmp_path / "x").open("wb") as out:
        assert faststart.rewrite_file(src, out) is False
    assert (tmp_path / "x").stat().st_size == 0
