"""MPtrj / Alexandria JSON → sharded ``.aselmdb`` files, once, by a streaming parse (``ijson``).

    python -m engine.data.convert MPtrj_2022.9_full.json data/mptrj/   # → data/mptrj/MPtrj_2022.9_full-0000.aselmdb …
    python -m engine.data.convert alexandria_000.json.bz2 data/alex --shard-size 50000 --skip-bad-records

``engine.data.readers`` parses these files whole (``json.load``: MPtrj's 1.58 M frames need tens of
GB). Here ``ijson.kvitems`` yields one top-level entry at a time (an mp_id's frames, an Alexandria
entry's trajectories); each frame becomes a :class:`~engine.data.records.Record` by the readers' own
converters (units and signs as documented there: kBar with VASP's sign → eV/Å³ with ASE's) and is
written in chunks to shards of ``shard_size`` rows, each renamed into place only when complete. Rows
keep ``uid`` and ``group`` (the mp_id or entry id) as key-value pairs. Read the result with
:class:`engine.data.lazy.LazyAseDB` (or ``--data`` of the engine, which reads ``.aselmdb`` folders).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.records import Record
from engine.errors import DataError


@dataclass
class ConvertResult:
    files: list[Path] = field(default_factory=list)
    records: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uid, reason)


class _StreamedMapping:
    """The ``.items()`` the readers' MPtrj/Alexandria iterators need, fed by ijson one entry at a time."""

    def __init__(self, items: Iterator[tuple[str, object]]) -> None:
        self._items = items

    def items(self) -> Iterator[tuple[str, object]]:
        return self._items


def stream_json_records(path: Path) -> Iterator[tuple[str, Callable[[str], Record]]]:
    """(key, build(uid) → Record) for each frame of an MPtrj or Alexandria JSON file, parsed incrementally."""
    import ijson

    from engine.data import readers

    name = path.name.lower()
    opener = bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        entries = ijson.kvitems(fh, "", use_float=True)
        first = next(entries, None)
        if first is None:
            raise DataError(f"{path} holds no top-level entries; expected MPtrj or Alexandria JSON")
        stream = _StreamedMapping(itertools.chain([first], entries))
        if isinstance(first[1], list):
            yield from readers._iter_alexandria(stream)  # type: ignore[arg-type]
        elif isinstance(first[1], dict):
            yield from readers._iter_mptrj(stream)  # type: ignore[arg-type]
        else:
            raise DataError(f"{path}: top-level values are {type(first[1]).__name__}; expected MPtrj or Alexandria")


class _ShardWriter:
    """Rows into ``<out>/<stem>-NNNN.aselmdb``; a shard is written as a hidden partial file and renamed when full."""

    def __init__(self, out_dir: Path, stem: str, shard_size: int, chunk: int) -> None:
        self.out_dir, self.stem, self.shard_size, self.chunk = out_dir, stem, shard_size, chunk
        self.files: list[Path] = []
        self._pending: list[Record] = []
        self._in_shard = 0
        self._partial: Path | None = None

    def add(self, record: Record) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.chunk or self._in_shard + len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        import ase.db

        if not self._pending:
            return
        if self._partial is None:
            self._partial = self.out_dir / f".{self.stem}-{len(self.files):04d}.partial.aselmdb"
            self._partial.unlink(missing_ok=True)
        db = ase.db.connect(str(self._partial), type="aselmdb")
        with db:  # one write transaction per chunk; leaving the block closes the environment
            for r in self._pending:
                db.write(r.to_atoms(), uid=r.uid, **({"group": r.group} if r.group is not None else {}))
        self._in_shard += len(self._pending)
        self._pending = []
        if self._in_shard >= self.shard_size:
            self.close_shard()

    def close_shard(self) -> None:
        if self._pending:
            self._flush()
        if self._partial is None:
            return
        final = self.out_dir / f"{self.stem}-{len(self.files):04d}.aselmdb"
        os.replace(self._partial, final)
        Path(f"{self._partial}-lock").unlink(missing_ok=True)
        self.files.append(final)
        self._partial, self._in_shard = None, 0

    def abandon(self) -> None:
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
            Path(f"{self._partial}-lock").unlink(missing_ok=True)


def convert_json(
    src: str | Path, out_dir: str | Path, shard_size: int = 100_000, chunk: int = 2_000, skip_bad: bool = False
) -> ConvertResult:
    """Convert one MPtrj/Alexandria JSON (``.json``, ``.json.gz``, ``.json.bz2``) into ``.aselmdb`` shards."""
    from engine.data.readers import _BadRecordError

    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise DataError(f"{src} does not exist; give an MPtrj or Alexandria JSON file")
    if shard_size < 1 or chunk < 1:
        raise DataError("--shard-size and --chunk must be ≥ 1 record")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = src.name.split(".json")[0]
    result = ConvertResult()
    writer = _ShardWriter(out_dir, stem, shard_size, chunk)
    try:
        for key, build in stream_json_records(src):
            uid = f"{src.name}:{key}"
            try:
                record = build(uid).validate(where=str(src))
            except (_BadRecordError, DataError, ValueError, KeyError, TypeError, IndexError) as exc:
                if not skip_bad:
                    raise DataError(
                        f"malformed record {uid!r} in {src}: {exc}; fix it or pass --skip-bad-records"
                    ) from exc
                result.skipped.append((uid, str(exc)))
                continue
            writer.add(record)
            result.records += 1
        writer.close_shard()
    except Exception as exc:
        writer.abandon()  # completed shards stay; the partial one goes
        if isinstance(exc, DataError):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"cannot parse {src} ({type(exc).__name__}: {first}); check the file is complete") from exc
    result.files = writer.files
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.data.convert", description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="MPtrj or Alexandria JSON (.json, .json.gz, .json.bz2)")
    p.add_argument("out_dir", type=Path, help="folder for the .aselmdb shards")
    p.add_argument("--shard-size", type=int, default=100_000, help="rows per .aselmdb file")
    p.add_argument("--skip-bad-records", action="store_true", help="skip (and count) malformed frames")
    args = p.parse_args(argv)
    try:
        res = convert_json(args.src, args.out_dir, args.shard_size, skip_bad=args.skip_bad_records)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {res.records} records into {len(res.files)} file(s) in {args.out_dir}; skipped {len(res.skipped)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
