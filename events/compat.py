"""The compatibility gate of the Avro contract catalogue (``choreo schemas check``).

``check_catalogue`` walks ``schemas/<context>/<Event>/vN.avsc`` and checks that the layout
and naming are sound, that every version reads the data of every earlier version
(backward-transitive, by ``events.avro.compatibility.reader_problems``: the ``avro``
package's checker plus the project's stricter rules), and that released versions (recorded
in a fingerprint lock file) were never edited. ``write_lock`` records the current versions
as released.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fastavro.schema import parse_schema

from events.avro.compatibility import InvalidSchema, parse, reader_problems
from events.catalogue import (
    CatalogueError,
    Problem,
    contract_files,
    read_contract,
    schema_fingerprint,
)

__all__ = [
    "LOCK_FILE_NAME",
    "CatalogueError",
    "Problem",
    "check_catalogue",
    "write_lock",
]

LOCK_FILE_NAME = "fingerprints.lock"
NAMESPACE_PREFIX = "choreo"

_LOCK_LINE = re.compile(r"^([^/\s]+)/([^/\s]+)/v([1-9][0-9]*) ([0-9a-f]{16})$")


@dataclass
class _Version:
    context: str
    event: str
    number: int
    path: Path
    schema: object | None = None  # None when the file is not a valid schema
    fingerprint: str | None = None

    @property
    def key(self) -> str:
        return f"{self.context}/{self.event}/v{self.number}"


@dataclass
class _Scan:
    problems: list[Problem] = field(default_factory=list)
    versions: dict[tuple[str, str], dict[int, _Version]] = field(default_factory=dict)

    def add(self, path: Path | str, message: str) -> None:
        self.problems.append(Problem(str(path), message))

    def all_versions(self) -> Iterable[_Version]:
        for key in sorted(self.versions):
            by_number = self.versions[key]
            for number in sorted(by_number):
                yield by_number[number]


def _scan(root: Path) -> _Scan:
    scan = _Scan()
    for file in contract_files(root, scan.problems):
        version = _Version(file.context, file.event_type, file.version, file.path)
        _load(version, scan)
        scan.versions.setdefault((file.context, file.event_type), {})[version.number] = version
    return scan


def _load(version: _Version, scan: _Scan) -> None:
    """Parse one version file; record problems instead of raising."""
    try:
        schema: object = read_contract(version.path)
    except CatalogueError as exc:
        scan.problems.extend(exc.problems)
        return
    try:
        parse(schema)  # the avro parser: names, duplicates, unions, enum symbols...
        parse_schema(json.loads(json.dumps(schema)))  # fastavro's checks (defaults, ...)
        fp = schema_fingerprint(json.loads(json.dumps(schema))).hex()
    except InvalidSchema as exc:
        scan.add(version.path, f"not a valid Avro schema: {exc}")
        return
    except Exception as exc:  # a bad schema must be reported, whatever fastavro raises
        scan.add(version.path, f"not a valid Avro schema: {type(exc).__name__}: {exc}")
        return
    version.schema = schema
    version.fingerprint = fp
    _check_naming(version, scan)


def _check_naming(version: _Version, scan: _Scan) -> None:
    schema = version.schema
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        scan.add(version.path, "an event schema must be a record")
        return
    name = schema.get("name")
    if name != version.event:
        scan.add(
            version.path,
            f"record name {name!r} must equal the folder name {version.event!r} "
            "(put the namespace in 'namespace')",
        )
    expected_ns = f"{NAMESPACE_PREFIX}.{version.context}"
    namespace = schema.get("namespace")
    if namespace != expected_ns:
        scan.add(version.path, f"record namespace {namespace!r} must be {expected_ns!r}")


def _check_versions(scan: _Scan) -> None:
    event_contexts: dict[str, str] = {}
    seen_fingerprints: dict[str, _Version] = {}
    for (context, event), by_number in sorted(scan.versions.items()):
        folder = by_number[min(by_number)].path.parent
        if event in event_contexts:
            scan.add(folder, f"event name {event} is also used in context {event_contexts[event]}")
        event_contexts.setdefault(event, context)
        missing = [n for n in range(1, max(by_number) + 1) if n not in by_number]
        for number in missing:
            scan.add(folder / f"v{number}.avsc", "missing version: versions must be v1, v2, ...")
        for number in sorted(by_number):
            newer = by_number[number]
            if newer.schema is None:
                continue
            if newer.fingerprint is not None:
                twin = seen_fingerprints.get(newer.fingerprint)
                if twin is not None:
                    scan.add(
                        newer.path,
                        f"same parsing canonical form (fingerprint) as {twin.key}; "
                        "a new version must change what is written",
                    )
                seen_fingerprints.setdefault(newer.fingerprint, newer)
            for old_number in sorted(n for n in by_number if n < number):
                older = by_number[old_number]
                if older.schema is None:
                    continue
                for message in reader_problems(newer.schema, older.schema):
                    scan.add(newer.path, f"cannot read v{old_number} data: {message}")


def _read_lock(lock_file: Path, scan: _Scan) -> dict[str, str]:
    entries: dict[str, str] = {}
    if not lock_file.exists():
        return entries
    for number, line in enumerate(lock_file.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        match = _LOCK_LINE.match(text)
        if match is None:
            scan.add(lock_file, f"line {number}: expected 'context/Event/vN <16 hex digits>'")
            continue
        key, fp = text.split(" ")
        if key in entries and entries[key] != fp:
            scan.add(lock_file, f"line {number}: {key} is locked twice with different fingerprints")
        entries.setdefault(key, fp)
    return entries


def _check_lock(root: Path, lock_file: Path, scan: _Scan) -> dict[str, str]:
    entries = _read_lock(lock_file, scan)
    current = {v.key: v for v in scan.all_versions()}
    for key, locked_fp in sorted(entries.items()):
        version = current.get(key)
        if version is None:
            scan.add(root / f"{key}.avsc", f"released version {key} was deleted (see {lock_file})")
        elif version.fingerprint is None:
            scan.add(version.path, f"released version {key} was edited (it no longer parses)")
        elif version.fingerprint != locked_fp:
            scan.add(
                version.path,
                f"released version {key} was edited: fingerprint {version.fingerprint}, "
                f"locked {locked_fp}; add a new version instead",
            )
    return entries


def _run(root: Path, lock_file: Path | None) -> tuple[_Scan, Path, dict[str, str]]:
    lock = lock_file if lock_file is not None else root / LOCK_FILE_NAME
    scan = _scan(root)
    _check_versions(scan)
    entries = _check_lock(root, lock, scan)
    return scan, lock, entries


def check_catalogue(root: Path, lock_file: Path | None = None) -> list[Problem]:
    """Every problem of the contract catalogue under ``root`` (empty: the gate passes).

    Checks the layout and naming, contiguous versions from v1, that each version reads the data
    of every earlier one, and that versions recorded in the lock file (default
    ``root/fingerprints.lock``) still exist unchanged. Versions not in the lock are unreleased.
    """
    scan, _, _ = _run(root, lock_file)
    return scan.problems


def _sort_key(line: str) -> tuple[str, str, int]:
    context, event, version = line.split(" ")[0].split("/")
    return context, event, int(version[1:])


def write_lock(root: Path, lock_file: Path | None = None) -> list[str]:
    """Record every current version as released; returns the lines added.

    Raises ``CatalogueError`` if ``check_catalogue`` reports any problem (so an edited or
    deleted released version can never be re-locked).
    """
    scan, lock, entries = _run(root, lock_file)
    if scan.problems:
        raise CatalogueError("\n".join(str(p) for p in scan.problems), scan.problems)
    lines = {f"{v.key} {v.fingerprint}" for v in scan.all_versions()}
    added = sorted((line for line in lines if line.split(" ")[0] not in entries), key=_sort_key)
    if added or not lock.exists():
        text = "".join(f"{line}\n" for line in sorted(lines, key=_sort_key))
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=f".{lock.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, lock)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return added
