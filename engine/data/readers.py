"""Readers for real data, all into :class:`engine.data.records.Record` (eV, eV/Å, eV/Å³ ASE sign).

Formats, chosen from the file name:

- ``.aselmdb`` (OMat24's format; needs ``ase-db-backends``) and ASE SQLite ``.db``
- MPtrj JSON ``{mp_id: {frame_id: {structure, uncorrected_total_energy, force, stress}}}``
- Alexandria trajectories ``{id: [{"steps": [{structure, energy, forces, stress}]}]}``
  (``.json``, ``.json.bz2``, ``.json.gz``; the two JSON layouts are told apart by their shape)
- anything else ASE reads with labels: extxyz, VASP OUTCAR, vasprun.xml, FHI-aims output, ...

MPtrj and Alexandria give stress in kBar with VASP's sign (positive = compressive); it is
converted with :func:`engine.data.records.vasp_kbar_to_ase_stress` (×(−0.1) GPa). Structures
are pymatgen ``Structure.as_dict()`` dicts, parsed here without pymatgen.

Each record's uid is ``<file name>:<key>`` (for a directory: the path relative to it), stable
across runs. Its split group (``Record.group``, see :mod:`engine.data.splits`) is MPtrj's ``mp_id``,
Alexandria's entry id, or for ASE formats the value of ``group_key`` (``data.group_key``) looked up in
the row's ``key_value_pairs``, then its ``data``, then ``atoms.info``; without one, the uid.
A malformed record raises :class:`DataError` naming the file and the record;
``skip_bad=True`` skips it instead, logs a warning and lists it in ``ReadResult.skipped``.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from engine.data.records import Record, vasp_kbar_to_ase_stress
from engine.errors import DataError

log = logging.getLogger(__name__)

_SKIP_NAMES = ("-lock",)  # LMDB lock files beside .aselmdb
ENGINE_FORMATS = ("aselmdb", "db", "json")  # formats read by the engine itself; any other name goes to ASE


@dataclass
class ReadResult:
    """Records read, and the (uid, reason) of every record skipped with ``skip_bad=True``."""

    records: list[Record] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _BadRecordError(Exception):
    """A record that cannot be converted; carries the reason (file and uid are added by the caller)."""


# ---------------------------------------------------------------------------------------
# entry point


def read_records(
    path: str | Path, skip_bad: bool = False, group_key: str | None = None, fmt: str | None = None
) -> ReadResult:
    """Read every labelled structure in ``path`` (a file, or a directory of files read in sorted order).

    ``fmt`` overrides the format guessed from each file's name: an ASE format name (``extxyz``,
    ``vasp-out``, ...), ``aselmdb`` or ``db`` (ASE databases) or ``json`` (MPtrj/Alexandria). A file
    holding no energy, forces or stress at all is an error (it would "train" to a loss of 0).

    ``group_key`` names the key (of an ASE row's key_value_pairs/data, or atoms.info) holding each
    structure's split group; a record without it is malformed.
    """
    p = Path(path).expanduser()
    fmt = check_format(fmt)
    if not p.exists():
        raise DataError(f"dataset path {p} does not exist; check --data (or data.path), or omit it for the EMT default")
    result = ReadResult()
    if p.is_dir():
        # hidden files and folders are not data (the lazy path's .engine-index/, a converter's partial shard)
        files = sorted(f for f in p.rglob("*") if f.is_file() and not _ignored(f) and not _hidden(f.relative_to(p)))
        if not files:
            raise DataError(f"dataset folder {p} holds no data files; point --data at a file or a folder of files")
        for f in files:
            _read_file(f, f.relative_to(p).as_posix(), skip_bad, result, group_key, fmt)
    else:
        _read_file(p, p.name, skip_bad, result, group_key, fmt)
    if result.skipped:
        log.warning("skipped %d bad record(s) in %s (first: %s: %s)", len(result.skipped), p, *result.skipped[0])
    return result


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _ignored(f: Path) -> bool:
    return f.name.startswith(".") or f.name.endswith(_SKIP_NAMES)


def _read_file(
    path: Path, label: str, skip_bad: bool, result: ReadResult, group_key: str | None = None, fmt: str | None = None
) -> None:
    """Append the records of one file; ``label`` prefixes uids and names the file in errors."""
    first = len(result.records)
    for key, build in _iter_raw(path, group_key, fmt):
        uid = f"{label}:{key}"
        try:
            record = build(uid)
            record.validate(where=str(path))
        except (_BadRecordError, DataError, ValueError, KeyError, TypeError, IndexError) as exc:
            reason = str(exc) if isinstance(exc, (_BadRecordError, DataError)) else f"{type(exc).__name__}: {exc}"
            if not skip_bad:
                if isinstance(exc, DataError):
                    raise
                raise DataError(
                    f"malformed record {uid!r} in {path}: {reason}; fix it or pass --skip-bad-records"
                ) from exc
            result.skipped.append((uid, reason))
            continue
        result.records.append(record)
    added = result.records[first:]
    if added and all(r.energy is None and r.forces is None and r.stress is None for r in added):
        raise DataError(
            f"no energy, forces or stress in {path} ({len(added)} structure(s), no labels at all); give a labelled "
            "file (e.g. extxyz with energy= and forces, an OUTCAR) or pass --data-format if ASE misreads it"
        )


def _iter_raw(
    path: Path, group_key: str | None = None, fmt: str | None = None
) -> Iterator[tuple[str, Callable[[str], Record]]]:
    """(key, build(uid) -> Record) for each record of ``path``; conversion is deferred so errors name it.

    The reader is chosen by ``fmt`` when given, else from the file name."""
    name = path.name.lower()
    if fmt in ENGINE_FORMATS[:2] or (fmt is None and (name.endswith(".aselmdb") or name.endswith(".db"))):
        yield from _with_group(_iter_ase_db(path, fmt), group_key)
    elif fmt == "json" or (fmt is None and name.endswith((".json", ".json.bz2", ".json.gz"))):
        yield from _iter_json(path)  # MPtrj / Alexandria carry their own groups
    else:
        yield from _with_group(_iter_ase_io(path, fmt), group_key)


def check_format(fmt: str | None) -> str | None:
    """``fmt`` if the engine or ASE knows it (``None`` = guess from names), else one-line :class:`DataError`."""
    if fmt is None or fmt in ENGINE_FORMATS:
        return fmt
    from ase.io.formats import ioformats

    if fmt not in ioformats:
        near = sorted(name for name in ioformats if fmt.lower() in name or name in fmt.lower())[:6]
        hint = f" (close: {', '.join(near)})" if near else ""
        raise DataError(
            f"unknown data format {fmt!r}{hint}; pass --data-format (data.format) as an ASE format name such as "
            "extxyz, vasp-out, vasp-xml, aims-output, or aselmdb, db, json"
        )
    if not ioformats[fmt].can_read:
        raise DataError(f"ASE cannot read format {fmt!r} (it only writes it); pass another --data-format")
    return fmt


def _with_group(items: Iterator, group_key: str | None) -> Iterator[tuple[str, Callable[[str], Record]]]:
    """Builders whose record takes its split group from ``group_key`` (see :func:`_group_of`)."""
    for key, build, source in items:
        if group_key is None:
            yield key, build
        else:
            yield key, lambda uid, build=build, source=source: _set_group(build(uid), _group_of(source, group_key))


def _set_group(record: Record, group: str) -> Record:
    record.group = group
    return record


def _group_of(source: object, group_key: str) -> str:
    """``group_key``'s value in an ASE row's key_value_pairs, then its data; or in an Atoms' info."""
    places = [getattr(source, "key_value_pairs", None), getattr(source, "data", None), getattr(source, "info", None)]
    for place in places:
        if isinstance(place, dict) and group_key in place and place[group_key] is not None:
            value = place[group_key]
            return str(value.item() if hasattr(value, "item") else value)
    _bad(f"no group key {group_key!r} in its key_value_pairs, data or info; fix data.group_key or the file")


# ---------------------------------------------------------------------------------------
# ASE databases (.aselmdb, SQLite .db)


def _iter_ase_db(path: Path, fmt: str | None = None) -> Iterator[tuple[str, Callable[[str], Record], object]]:
    import ase.db

    from engine.data.store import row_to_record

    kind = fmt or ("aselmdb" if path.name.lower().endswith(".aselmdb") else "db")
    if kind == "aselmdb":
        _check_lmdb(path)
    try:
        db = ase.db.connect(str(path), type=kind, **({"readonly": True} if kind == "aselmdb" else {}))
        try:
            rows = list(db.select())
        finally:
            if kind == "aselmdb":
                db.close()
    except Exception as exc:
        raise DataError(f"cannot read ASE database {path}: {exc}; check that it is a valid .{kind} file") from exc
    for row in rows:
        yield str(row.id), lambda uid, row=row: row_to_record(row, uid), row


def _check_lmdb(path: Path) -> None:
    """Check the LMDB file is whole before mapping it (a truncated file is a SIGBUS, not an error)."""
    from engine.data.store import check_lmdb_file

    check_lmdb_file(path)


# ---------------------------------------------------------------------------------------
# any labelled format ASE reads


def _iter_ase_io(path: Path, fmt: str | None = None) -> Iterator[tuple[str, Callable[[str], Record], object]]:
    import ase.io

    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:
        named = f"as format {fmt!r}" if fmt else f"(format guessed from its name: {_guess_format(path)})"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DataError(
            f"cannot read {path} with ASE {named}: {type(exc).__name__}: {first}; name the format with --data-format "
            "(data.format), e.g. extxyz, vasp-out, vasp-xml, or give a supported file (.aselmdb, .db, .extxyz, OUTCAR, "
            "vasprun.xml, MPtrj .json, Alexandria .json.bz2)"
        ) from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        how = f"read as format {fmt!r}" if fmt else f"format guessed from its name: {_guess_format(path)}"
        raise DataError(
            f"ASE found no structures in {path} ({how}); if that format is wrong, name the right one with "
            "--data-format (data.format, e.g. extxyz); else give a supported, labelled file "
            "(.aselmdb, .db, .extxyz, OUTCAR, vasprun.xml, MPtrj .json, Alexandria .json.bz2)"
        )
    for k, atoms in enumerate(frames):
        yield str(k), lambda uid, atoms=atoms: Record.from_atoms(atoms, uid=uid), atoms


def _guess_format(path: Path) -> str:
    from ase.io.formats import filetype

    try:
        return str(filetype(str(path)))
    except Exception:
        return "unknown"


# ---------------------------------------------------------------------------------------
# MPtrj and Alexandria JSON


def _load_json(path: Path) -> object:
    opener = (
        bz2.open if path.name.lower().endswith(".bz2") else gzip.open if path.name.lower().endswith(".gz") else open
    )
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot parse JSON in {path}: {exc}; check the file is complete and not corrupted") from exc


def _iter_json(path: Path) -> Iterator[tuple[str, Callable[[str], Record]]]:
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(
            f"{path} is not an MPtrj ({{mp_id: {{frame_id: frame}}}}) or Alexandria ({{id: [{{steps: [...]}}]}}) "
            "JSON mapping; check the file"
        )
    first = next(iter(data.values()))
    if isinstance(first, list):
        yield from _iter_alexandria(data)
    elif isinstance(first, dict):
        yield from _iter_mptrj(data)
    else:
        raise DataError(
            f"{path}: unrecognised JSON layout (top-level values are {type(first).__name__}); "
            "expected MPtrj or Alexandria trajectories"
        )


def _iter_mptrj(data: dict) -> Iterator[tuple[str, Callable[[str], Record]]]:
    for mp_id, frames in data.items():
        if not isinstance(frames, dict):
            yield str(mp_id), lambda uid, f=frames: _bad(f"expected a mapping of frames, got {type(f).__name__}")
            continue
        for frame_id, frame in frames.items():
            yield f"{mp_id}:{frame_id}", lambda uid, frame=frame, g=str(mp_id): _mptrj_frame(frame, uid, g)


def _mptrj_frame(frame: object, uid: str, group: str) -> Record:
    if not isinstance(frame, dict):
        _bad(f"frame is a {type(frame).__name__}, not a mapping")
    if "structure" not in frame:
        _bad("missing 'structure'")
    energy = frame.get("uncorrected_total_energy")  # eV, no MP2020 correction
    record = _from_pymatgen(frame["structure"], energy, frame.get("force"), frame.get("stress"), uid)
    record.group = group  # every frame of one mp_id's relaxations: one split group
    return record


def _iter_alexandria(data: dict) -> Iterator[tuple[str, Callable[[str], Record]]]:
    for key, trajectories in data.items():
        for t, trajectory in enumerate(trajectories):
            steps = trajectory.get("steps") if isinstance(trajectory, dict) else None
            if not isinstance(steps, list):
                yield f"{key}:{t}", lambda uid: _bad("trajectory has no 'steps' list")
                continue
            for s, step in enumerate(steps):
                yield f"{key}:{t}:{s}", lambda uid, step=step, g=str(key): _alexandria_step(step, uid, g)


def _alexandria_step(step: object, uid: str, group: str) -> Record:
    if not isinstance(step, dict):
        _bad(f"step is a {type(step).__name__}, not a mapping")
    if "structure" not in step:
        _bad("missing 'structure'")
    record = _from_pymatgen(step["structure"], step.get("energy"), step.get("forces"), step.get("stress"), uid)
    record.group = group  # every step of every trajectory of one entry: one split group
    return record


def _from_pymatgen(structure: object, energy: object, forces: object, stress_kbar: object, uid: str) -> Record:
    """Record from a pymatgen ``Structure.as_dict()`` plus labels (stress in kBar, VASP sign)."""
    if not isinstance(structure, dict):
        _bad("'structure' is not a pymatgen Structure dict")
    try:
        matrix = np.asarray(structure["lattice"]["matrix"], dtype=np.float64)
        sites = structure["sites"]
    except (KeyError, TypeError) as exc:
        _bad(f"structure lacks lattice.matrix or sites ({exc})")
    if matrix.shape != (3, 3):
        _bad(f"lattice.matrix has shape {matrix.shape}, expected (3, 3)")
    if not isinstance(sites, list) or not sites:
        _bad("structure has no sites")
    from ase.data import atomic_numbers

    numbers, positions = [], []
    for k, site in enumerate(sites):
        species = site.get("species") if isinstance(site, dict) else None
        if not species:
            _bad(f"site {k} has no species")
        if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-6:
            _bad(f"site {k} is partially occupied; only ordered structures can be labelled")
        element = str(species[0].get("element", ""))
        if element not in atomic_numbers:
            _bad(f"site {k} has unknown element {element!r}")
        numbers.append(atomic_numbers[element])
        if "xyz" in site:
            positions.append(np.asarray(site["xyz"], dtype=np.float64))
        elif "abc" in site:  # fractional coordinates; cell rows are lattice vectors
            positions.append(np.asarray(site["abc"], dtype=np.float64) @ matrix)
        else:
            _bad(f"site {k} has neither 'xyz' nor 'abc'")
    pbc = structure["lattice"].get("pbc", (True, True, True))
    return Record(
        numbers=np.asarray(numbers),
        positions=np.stack(positions),
        cell=matrix,
        pbc=np.asarray(pbc, dtype=bool),
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        stress=None if stress_kbar is None else vasp_kbar_to_ase_stress(stress_kbar),
        uid=uid,
    )


def _bad(reason: str) -> NoReturn:
    raise _BadRecordError(reason)
