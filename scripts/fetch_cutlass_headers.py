"""Fetch a CUTLASS header tree from a wheel or sdist that bundles one, for ``GEMM_CUTLASS_DIR``.

PyPI's ``nvidia-cutlass`` can lag behind CUTLASS releases; other packages ship
newer headers inside their wheels (``flashinfer-python`` bundles a whole
CUTLASS checkout). This script downloads one such archive with
``pip download --no-deps`` (or takes a local file), finds the CUTLASS tree in
it by its ``include/cutlass/version.h`` and extracts exactly its
``include/`` and ``tools/util/include/`` directories into DEST:

    DEST/include/{cute,cutlass}/...
    DEST/tools/util/include/cutlass/util/...
    DEST/SOURCE.json        where the headers came from (package, archive, sha256, version)

It prints the CUTLASS version found and the ``GEMM_CUTLASS_DIR=...`` line to
build with. DEST is replaced atomically: the tree is extracted beside it and
renamed into place, so an interrupted run leaves DEST as it was.

    python scripts/fetch_cutlass_headers.py .carry/cutlass-new
    python scripts/fetch_cutlass_headers.py DEST --package flashinfer-python --version 0.7.2.post1
    python scripts/fetch_cutlass_headers.py DEST --archive downloads/some_package-1.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

DEFAULT_PACKAGE = "flashinfer-python"
VERSION_HEADER = "include/cutlass/version.h"
#: The trees the JIT compiles with (``toolchain.find_cutlass`` expects both), relative to the CUTLASS root.
TREES = ("include/", "tools/util/include/")
UTIL_MARKER = "tools/util/include/cutlass/util/"
PIP_TIMEOUT_S = 1800
SOURCE_FILE = "SOURCE.json"


class FetchError(Exception):
    """Anything that keeps the headers from being fetched; the message says what and where."""


# --------------------------------------------------------------------------- archives


class Archive:
    """Read-only view of a wheel/zip or a tar (sdist) archive: member names and file contents."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FetchError(f"archive {str(self.path)!r} does not exist")
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._tar = None
            self._files = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
            self._links: set[str] = {i.filename for i in self._zip.infolist()
                                     if (i.external_attr >> 16) & 0o170000 == 0o120000}
        elif tarfile.is_tarfile(self.path):
            self._zip = None
            self._tar = tarfile.open(self.path)
            members = self._tar.getmembers()
            self._files = {m.name: m for m in members if m.isfile()}
            self._links = {m.name for m in members if m.issym() or m.islnk()}
        else:
            raise FetchError(f"{self.path} is neither a wheel/zip nor a tar archive")

    def names(self) -> list[str]:
        """Regular files and links (links are never extracted; see ``extract_cutlass``)."""
        return sorted(set(self._files) | self._links)

    def is_link(self, name: str) -> bool:
        return name in self._links

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._files[name])
        handle = self._tar.extractfile(self._files[name])
        if handle is None:
            raise FetchError(f"cannot read {name} from {self.path}")
        return handle.read()

    def close(self) -> None:
        (self._zip or self._tar).close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- finding the tree


@dataclasses.dataclass(frozen=True)
class CutlassTree:
    """A CUTLASS tree inside an archive: its root prefix (``""`` or ending in ``/``) and version."""

    root: str
    version: tuple[int, int, int]

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.version))


def parse_version_header(text: str, where: str) -> tuple[int, int, int]:
    """(major, minor, patch) from the text of ``cutlass/version.h``; FetchError naming ``where`` if absent."""
    parts = []
    for field in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(rf"#define\s+CUTLASS_{field}\s+(\d+)", text)
        if match is None:
            raise FetchError(f"{where} does not define CUTLASS_{field}")
        parts.append(int(match.group(1)))
    return tuple(parts)


def find_cutlass_tree(archive: Archive) -> CutlassTree:
    """The CUTLASS tree in ``archive`` that has both ``include/`` and ``tools/util/include/``.

    Several complete trees: the newest version wins (then the shortest path).
    Raises FetchError when the archive holds no CUTLASS headers, or headers
    without the util tree.
    """
    names = archive.names()
    roots = [name[:-len(VERSION_HEADER)] for name in names
             if name.endswith(VERSION_HEADER) and (name == VERSION_HEADER or name.endswith("/" + VERSION_HEADER))]
    if not roots:
        raise FetchError(f"{archive.path.name} holds no CUTLASS headers (no file ending in {VERSION_HEADER}); "
                         f"name a package that bundles CUTLASS with --package/--version or --archive")
    complete = [root for root in roots if any(name.startswith(root + UTIL_MARKER) for name in names)]
    if not complete:
        raise FetchError(f"{archive.path.name} holds CUTLASS headers at {roots} but no {UTIL_MARKER} beside them "
                         f"(the JIT needs tools/util/include too)")
    trees = []
    for root in complete:
        header = root + VERSION_HEADER
        if archive.is_link(header):
            raise FetchError(f"{archive.path.name}: {header} is a link; cannot read the CUTLASS version")
        trees.append(CutlassTree(root, parse_version_header(archive.read(header).decode(errors="replace"),
                                                            f"{archive.path.name}:{header}")))
    return max(trees, key=lambda t: (t.version, -len(t.root)))


def _safe_relative(name: str, root: str) -> PurePosixPath:
    relative = PurePosixPath(name[len(root):])
    if relative.is_absolute() or ".." in relative.parts:
        raise FetchError(f"refusing archive member {name!r}: it would be written outside the destination")
    return relative


# --------------------------------------------------------------------------- extracting


def extract_cutlass(archive: Archive, tree: CutlassTree, dest: Path, provenance: dict) -> int:
    """Write ``tree``'s include trees to ``dest`` (replaced atomically); returns the number of files.

    ``dest`` must not exist or must be a tree this script wrote (it holds ``SOURCE.json``);
    anything else is refused rather than deleted.
    """
    dest = Path(dest).resolve()
    if dest.exists() and not (dest / SOURCE_FILE).is_file():
        if not dest.is_dir() or any(dest.iterdir()):
            raise FetchError(f"destination {dest} exists and was not written by this script (no {SOURCE_FILE}); "
                             f"remove it or choose another")
    members = [name for name in archive.names() if any(name.startswith(tree.root + t) for t in TREES)]
    links = [name for name in members if archive.is_link(name)]
    if links:
        raise FetchError(f"{archive.path.name}: the CUTLASS trees hold links, which are not extracted: {links[:5]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name in members:
            target = staging / _safe_relative(name, tree.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
        (staging / SOURCE_FILE).write_text(json.dumps(
            {**provenance, "cutlass_version": tree.version_string, "root_in_archive": tree.root,
             "files": len(members)}, indent=1, sort_keys=True) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / "tree")
            os.replace(staging, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(members)


# --------------------------------------------------------------------------- downloading


def download(package: str, version: str | None, into: Path) -> Path:
    """``pip download --no-deps`` of ``package`` (``==version`` if given) into ``into``; the archive's path."""
    spec = f"{package}=={version}" if version else package
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(into), spec]
    print(f"downloading {spec} ...", flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{' '.join(command)} did not finish: {exc}") from exc
    if result.returncode != 0:
        raise FetchError(f"pip download of {spec} failed (exit {result.returncode}):\n"
                         f"{(result.stdout + result.stderr)[-4000:]}")
    archives = [p for p in Path(into).iterdir() if p.is_file()]
    if len(archives) != 1:
        raise FetchError(f"pip download of {spec} left {len(archives)} files, expected one: {archives}")
    return archives[0]


def fetch(dest: Path, package: str = DEFAULT_PACKAGE, version: str | None = None,
          archive_path: Path | None = None) -> CutlassTree:
    """Download (unless ``archive_path`` is given), locate and extract; the tree that was extracted."""
    with tempfile.TemporaryDirectory(prefix="cutlass-fetch-") as scratch:
        if archive_path is None:
            archive_path = download(package, version, Path(scratch))
            provenance = {"package": package, "requested_version": version}
        else:
            provenance = {"package": None, "requested_version": None}
        archive_path = Path(archive_path)
        provenance.update(archive=archive_path.name, archive_sha256=sha256_of(archive_path))
        with Archive(archive_path) as archive:
            tree = find_cutlass_tree(archive)
            count = extract_cutlass(archive, tree, dest, provenance)
    print(f"CUTLASS {tree.version_string} from {archive_path.name} ({tree.root or 'archive root'}): "
          f"{count} header files written to {Path(dest).resolve()}")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="directory to hold include/ and tools/util/include/")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--package", default=DEFAULT_PACKAGE,
                        help=f"distribution to pip-download (default {DEFAULT_PACKAGE}, newest version)")
    source.add_argument("--archive", type=Path, help="a local wheel, zip or sdist instead of downloading")
    parser.add_argument("--version", help="exact version of --package (default: the newest)")
    args = parser.parse_args(argv)
    if args.archive is not None and args.version is not None:
        parser.error("--version applies to --package, not to --archive")
    try:
        fetch(args.dest, args.package, args.version, args.archive)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"GEMM_CUTLASS_DIR={Path(args.dest).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
