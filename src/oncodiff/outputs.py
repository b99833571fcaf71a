"""Where oncodiff may write, and how an output is made whole (docs/outputs.md).

Every verb that writes a folder (synth, train, predict, evaluate) or a file (report) checks its
``--out`` here first:

- never inside a cohort folder, nor inside a run folder that is not its own;
- never into a non-empty folder that is not its own output of the same kind; ``--overwrite``
  replaces only such an output, recognised by the marker file :data:`MARKER` it wrote, which counts only in
  the folder it names (its path, or its device and inode, which a rename keeps and a copy does not), and
  never ``.``, ``~``, ``/`` or a parent of the working directory;
- never replaces a cohort that another oncodiff process is reading: readers (train, predict, evaluate,
  preprocess, view) leave a record in ``.NAME.in-use/`` beside the cohort (:func:`cohort_in_use`), never in it;
- a folder is written into a hidden sibling ``.NAME.partial-PID`` and renamed into place
  (:func:`staged_folder`), so it is either whole or absent. A training run cannot be staged: its
  marker says ``training``, then ``calibrating``, then ``complete``, and readers check it
  (:func:`check_run_finished`). :class:`RunLock` keeps a second writer out of a run folder.

This module owns the marker (:data:`MARKER`) and lock (:data:`LOCK`) file names of every output folder. It
imports only ``errors``, ``runs`` (the run folder's names) and ``cohort.schema`` (``cohort.yaml``, to refuse a
cohort folder), so every package above those may use it.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from oncodiff.cohort.schema import COHORT_YAML
from oncodiff.errors import OncodiffError
from oncodiff.layouts import REPORT_HTML
from oncodiff.runs import MODEL_DIR, RunFolder

MARKER = ".oncodiff-output.json"
LOCK = "train.lock"
KINDS = ("cohort", "run", "predictions", "evaluation")
COMPLETE = "complete"
NAME_MAX = 255
PATH_MAX = 4096
REPORT_SIGNATURE = '<meta name="generator" content="oncodiff report">'


class OutputError(OncodiffError):
    """An --out that oncodiff refuses to write, with the fix."""


# ---- the marker ---------------------------------------------------------------------------------

def read_marker(folder: Path) -> dict | None:
    """The marker oncodiff wrote in ``folder``; None when there is none (or it is not ours)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("kind") in KINDS else None


def write_marker(folder: Path, kind: str, state: str = COMPLETE, finish: str = "", home: Path | None = None) -> None:
    """Write (atomically) the marker saying ``folder`` is oncodiff's ``kind`` output, in ``state``. It names the
    folder: ``home`` (the path a staged folder will be renamed to; default ``folder``) and ``folder``'s device and
    inode, so that a copy of the marker elsewhere does not count (:func:`names_folder`)."""
    identity = os.stat(folder)
    body = {"kind": kind, "state": state, "folder": str(Path(home or folder).resolve()),
            "device": identity.st_dev, "inode": identity.st_ino}
    if finish:
        body["finish"] = finish
    partial = Path(folder) / (MARKER + ".partial")
    partial.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    partial.replace(Path(folder) / MARKER)


def names_folder(marker: dict, folder: Path) -> bool:
    """Whether ``marker`` was written for ``folder``: it names its resolved path, or its device and inode (kept by a
    rename, so a moved output still counts). A marker copied into another folder names neither."""
    try:
        identity = os.stat(folder)
        resolved = str(Path(folder).resolve())
    except OSError:
        return False
    return marker.get("folder") == resolved or (
        marker.get("device") == identity.st_dev and marker.get("inode") == identity.st_ino)


def output_kind(folder: Path) -> str | None:
    """What oncodiff output ``folder`` is: its marker's kind; "cohort" for any cohort folder; "run" for a run
    folder written before markers existed (config.json + splits.json); else None."""
    marker = read_marker(folder)
    if marker is not None:
        return marker["kind"]
    if (folder / COHORT_YAML).is_file():
        return "cohort"
    if RunFolder(folder).config_json.is_file() and RunFolder(folder).splits_json.is_file():
        return "run"
    return None


def is_own_output(folder: Path, kind: str) -> bool:
    """Whether ``folder`` is oncodiff's ``kind`` output: its marker says so and names this folder (a run folder
    written before markers existed, or copied, counts by its config.json + splits.json)."""
    marker = read_marker(folder)
    if marker is not None and names_folder(marker, folder):
        return marker["kind"] == kind
    return kind == "run" and RunFolder(folder).config_json.is_file() and RunFolder(folder).splits_json.is_file()


def _foreign_marker(folder: Path) -> str:
    """Why a marker in ``folder`` does not count, for an error message ("" when there is none or it counts)."""
    marker = read_marker(folder)
    if marker is None or names_folder(marker, folder):
        return ""
    written = f"written for {marker['folder']}" if marker.get("folder") else "written by an older oncodiff"
    return (f"; its marker {MARKER} was {written}, not for this folder (copied?), so oncodiff does not take this "
            "folder for its own: delete it yourself if it may go")


# ---- the checks ---------------------------------------------------------------------------------

def check_output(out: str | Path, kind: str, overwrite: bool = False, inputs: dict[str, str | Path] | None = None,
                 allow_existing: bool = False, within: Path | None = None) -> Path:
    """Check ``out`` as the folder for a ``kind`` output and return it resolved; nothing is written.

    ``inputs``: the folders the verb reads by role ({"cohort": ..., "run": ...}); ``out`` may be none of them
    nor inside one.
    ``allow_existing``: an existing output of the same kind is accepted without ``overwrite`` (train
    --resume decides about it itself). ``within``: the output that owns this one (a run's baseline runs
    live inside it), which ``out`` may be inside.
    """
    path = _resolved(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is an existing file; give the path of a folder (new, or written by "
                          f"oncodiff {_VERB[kind]})")
    check_not_inside(path, inputs, within=within)
    if path.is_dir() and any(path.iterdir()):
        if not is_own_output(path, kind):
            found = output_kind(path)
            what = f"a {found} folder oncodiff did not mark as its {kind} output" if found else \
                "files oncodiff did not write"
            raise OutputError(f"--out {path} is not empty and holds {what}; choose a new or empty folder"
                              f"{_foreign_marker(path)}")
        if not (overwrite or allow_existing):
            raise OutputError(f"--out {path} holds an earlier {kind} output; pass --overwrite to replace it, or "
                              "choose a new folder")
    if overwrite or (path.exists() and kind != "run"):  # a staged output replaces the folder by renaming
        _check_replaceable(path)
    if kind == "cohort" and path.is_dir():
        _check_not_read(path)
    _check_creatable(path)
    return path


def check_output_file(out: str | Path, own_folder: Path, inputs: dict[str, str | Path] | None = None) -> Path:
    """Check ``out`` as the path of an HTML report: a new file, or a report oncodiff wrote; never inside a
    cohort or run folder (``own_folder``, the evaluation it renders, may hold it)."""
    path = _resolved(out)
    if path.is_dir():
        path = path / REPORT_HTML
    if path.exists():
        if not path.is_file() or REPORT_SIGNATURE not in _head(path):
            raise OutputError(f"--out {path} exists and is not a report oncodiff wrote; choose a new file name")
    if path.parent != own_folder:
        check_not_inside(path.parent, inputs, include_self=True)
    _check_creatable(path.parent)
    return path


_VERB = {"cohort": "synth", "run": "train", "predictions": "predict", "evaluation": "evaluate", "report": "report"}


def _resolved(out: str | Path) -> Path:
    text = os.fspath(out)
    if not text.strip():
        raise OutputError("--out is empty; give a folder path")
    if len(os.fsencode(text)) > PATH_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in Path(text).parts):
        raise OutputError(f"--out {text[:60]}...: the path is too long (a name over {NAME_MAX} bytes or a path "
                          f"over {PATH_MAX}); choose a shorter one")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as error:
        raise OutputError(f"--out {text}: cannot be resolved ({error}); choose another path") from None


def check_not_inside(path: Path, inputs: dict[str, str | Path] | None = None, include_self: bool = False,
                     within: Path | None = None, option: str = "--out") -> None:
    """Refuse ``path`` inside a folder the command reads (``inputs``, by role), a cohort, or another oncodiff
    output (except ``within``, the output that owns it, such as the viewer's cache inside a predictions or
    run folder); ``option`` names it in the error."""
    owner = None if within is None else Path(within).resolve()
    for role, folder in (inputs or {}).items():
        folder = Path(folder).resolve()
        if folder != owner and (path == folder or folder in path.parents):
            role = (output_kind(folder) if folder.is_dir() else None) or role
            raise OutputError(f"{option} {path} is inside the {role} folder {folder}, which this command reads; "
                              "oncodiff never writes into its inputs: choose a folder outside it")
    owners = set() if within is None else {Path(within).resolve(), *Path(within).resolve().parents}
    for parent in ([path] if include_self else []) + list(path.parents):
        found = output_kind(parent) if parent.is_dir() and parent not in owners else None
        if found is not None:
            raise OutputError(f"{option} {path} is inside the {found} folder {parent}; oncodiff never writes into "
                              f"another output or a cohort: choose a folder outside it")


def _check_replaceable(path: Path) -> None:
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if path == Path(path.anchor) or path == home or path == cwd or path in cwd.parents:
        raise OutputError(f"--out {path} is the root, the home folder, the working directory or a parent of it; "
                          "oncodiff never replaces these: give the output a folder of its own, e.g. --out NAME")


def _check_creatable(path: Path) -> None:
    """Refuse ``path`` now, before any work, if nothing can be created where it would go (tried with a hidden
    folder that is removed at once: permission bits do not tell, e.g. for root under /proc)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"--out {path} cannot be created: {existing} is a file; choose another path")
    try:
        tempfile.TemporaryDirectory(prefix=".oncodiff-probe-", dir=existing).cleanup()
    except OSError as error:
        raise OutputError(f"--out {path} cannot be created: {existing} does not accept new files "
                          f"({error.strerror or error}); choose a folder you can write to") from None


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return ""


# ---- writing ------------------------------------------------------------------------------------

@contextmanager
def staged_folder(out: Path, kind: str) -> Iterator[Path]:
    """Yield a hidden sibling of ``out`` to write into; on success mark it complete and rename it to ``out``
    (an earlier output there, already checked by :func:`check_output`, is replaced); on failure remove it."""
    out = Path(out)
    clear_stale_partials(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    _mkdir(partial)
    try:
        write_marker(partial, kind, state="partial", finish=f"delete {partial}: a stopped `oncodiff {_VERB[kind]}`",
                     home=out)
        yield partial
        write_marker(partial, kind, home=out)
        if kind == "cohort" and out.exists():
            with _replacing_cohort(out):  # no reader may start meanwhile; one that started since the check refuses
                replace_folder(partial, out)
        else:
            replace_folder(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def clear_stale_partials(out: Path) -> None:
    """Remove hidden ``.NAME.partial-PID`` / ``.NAME.old-PID`` siblings of ``out`` left by a killed process."""
    parent = Path(out).parent
    if not parent.is_dir():
        return
    for sibling in parent.glob(f".{Path(out).name}.*-*"):
        stem, _, pid = sibling.name.rpartition("-")
        if stem.endswith((".partial", ".old")) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)


def write_file_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a hidden sibling of ``path`` and rename it into place."""
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise OutputError(f"{path} cannot be created: {error.strerror or error}; choose another --out") from None


def make_folder(path: Path) -> Path:
    """``mkdir -p`` with an :class:`OutputError` (not a traceback) when the folder cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path} cannot be created: {error.strerror or error}; choose another --out") from None
    return path


# ---- cohorts in use ----------------------------------------------------------------------------------

IN_USE = ".{name}.in-use"  # beside the cohort: oncodiff never writes into a cohort
_reading: dict[Path, int] = {}  # this process's cohorts in use, by resolved path: nested readers share one record
_reading_lock = threading.Lock()


def in_use_folder(cohort: Path) -> Path:
    """The folder beside ``cohort`` that holds one record per process reading it (or replacing it)."""
    cohort = Path(cohort).resolve()
    return cohort.parent / IN_USE.format(name=cohort.name)


def _record_body(command: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                       "command": command}) + "\n"


def _live_records(folder: Path, prefix: str) -> list[dict]:
    """The records ``prefix-*.json`` in ``folder`` of other live processes; stale ones (their process on this
    host is gone: killed, crashed) are removed, as a stale train lock is taken over."""
    found = []
    for path in sorted(folder.glob(f"{prefix}-*.json")) if folder.is_dir() else []:
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written, or gone
        if not isinstance(owner, dict) or (owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()):
            continue
        if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", 0) or 0), owner.get("start")):
            path.unlink(missing_ok=True)
            continue
        found.append(owner | {"record": str(path)})
    return found


def _describe_owner(owner: dict) -> str:
    return f"`oncodiff {owner.get('command')}` (pid {owner.get('pid')} on {owner.get('host')})"


def _add_record(folder: Path, prefix: str, command: str) -> Path | None:
    """Write this process's record; None where the cohort's parent folder cannot be written (then no process of
    this user can replace the cohort either)."""
    path = folder / f"{prefix}-{socket.gethostname()}-{os.getpid()}.json"
    for _ in range(3):
        try:
            folder.mkdir(exist_ok=True)
            partial = folder / f".{path.name}.partial"
            partial.write_text(_record_body(command), encoding="utf-8")
            partial.replace(path)
            return path
        except FileNotFoundError:
            continue  # another process removed the (empty) folder meanwhile: make it again
        except OSError:
            return None
    return None


def _drop_record(path: Path | None) -> None:
    if path is None:
        return
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the last one out removes the folder
    except OSError:
        pass


@contextmanager
def cohort_in_use(cohort: str | Path, command: str) -> Iterator[None]:
    """Hold a shared "in use" record on ``cohort`` while reading it, so that ``synth --overwrite`` refuses to
    replace it; refuses (OutputError) a cohort being replaced right now. The record lives beside the cohort, in
    :func:`in_use_folder`, and goes when the block ends; one left by a killed process is stale and ignored."""
    try:
        resolved = Path(cohort).expanduser().resolve()
    except (OSError, RuntimeError):
        resolved = None
    if resolved is None or not resolved.is_dir():
        yield  # not a folder: the reader reports that itself
        return
    with _reading_lock:
        nested = _reading.get(resolved, 0) > 0
        _reading[resolved] = _reading.get(resolved, 0) + 1
    record = None
    try:
        if not nested:
            folder = in_use_folder(resolved)
            record = _add_record(folder, "read", command)
            writers = _live_records(folder, "write")
            if writers:
                raise OutputError(f"cohort {resolved} is being replaced by {_describe_owner(writers[0])}; wait until it "
                                  "finishes, then run this again")
        yield
    finally:
        with _reading_lock:
            _reading[resolved] -= 1
            last = _reading[resolved] == 0
            if last:
                del _reading[resolved]
        if last:
            _drop_record(record)


def reads_cohort(command: str, argument: str = "cohort") -> Callable:
    """Decorator: the function holds :func:`cohort_in_use` on its ``argument`` (a cohort folder) while it runs."""
    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def reading(*args, **kwargs):
            cohort = signature.bind_partial(*args, **kwargs).arguments.get(argument)
            if cohort is None:
                return function(*args, **kwargs)
            with cohort_in_use(cohort, command):
                return function(*args, **kwargs)
        return reading
    return decorate


def _check_not_read(cohort: Path) -> None:
    readers = _live_records(in_use_folder(cohort), "read")
    if readers:
        more = f" and {len(readers) - 1} more" if len(readers) > 1 else ""
        raise OutputError(f"--out {cohort} is a cohort in use by {_describe_owner(readers[0])}{more}; oncodiff does not "
                          "replace a cohort another process is reading: wait until it finishes, or stop it. If that "
                          f"process no longer runs, delete {readers[0]['record']}")


@contextmanager
def _replacing_cohort(cohort: Path) -> Iterator[None]:
    """A "write" record beside ``cohort`` while it is replaced: readers that start now refuse; readers that started
    since :func:`check_output` make this refuse (the old cohort stays as it was)."""
    record = _add_record(in_use_folder(cohort), "write", "synth")
    try:
        _check_not_read(cohort)
        yield
    finally:
        _drop_record(record)


# ---- run folders: state and lock ----------------------------------------------------------------

def check_run_finished(folder: Path, reading: str = "read") -> None:
    """Refuse a run folder whose training has not finished, or that is being trained now; a run stopped
    while calibrating is accepted (its export is whole; ``oncodiff calibrate`` finishes it)."""
    folder = Path(folder)
    if read_marker(folder) is None and folder.name == MODEL_DIR and read_marker(folder.parent) is not None:
        folder = folder.parent  # the export folder of a run: the run's state applies
    owner = RunLock(folder).holder()
    if owner is not None:
        raise OutputError(f"{folder} is being written by `oncodiff {owner.get('command', 'train')}` (pid "
                          f"{owner.get('pid')}); wait until it finishes, then {reading} it")
    marker = read_marker(folder)
    if marker is None or marker.get("kind") != "run" or marker.get("state") in (COMPLETE, "calibrating"):
        return
    raise OutputError(f"{folder} is an unfinished training run (stopped while {marker.get('state')}); "
                      f"{marker.get('finish') or 'resume it with `oncodiff train --resume`'}")


class RunLock:
    """An exclusive lock on a run folder: ``RUN/train.lock`` holds the owner's pid, host and command.

    A lock whose process is gone (killed, crashed) is stale and is taken over.
    """

    def __init__(self, folder: Path, command: str = "train"):
        self.path = Path(folder) / LOCK
        self.command = command
        self.held = False

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _ours(self, owner: dict) -> bool:
        return owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()

    def holder(self) -> dict | None:
        """The other live process holding the lock, or None (no lock, a stale one, or this process's own)."""
        owner = self._owner()
        if owner is None or self._ours(owner):
            return None
        if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", 0)), owner.get("start")):
            return None
        return owner

    def acquire(self) -> RunLock:
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
                           "command": self.command}) + "\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._ours(self._owner() or {}):
                    return self  # this process holds it already (train calibrating its own run)
                owner = self.holder()
                if owner is not None:
                    raise OutputError(
                        f"{self.path.parent} is in use by `oncodiff {owner.get('command')}` (pid {owner.get('pid')} "
                        f"on {owner.get('host')}); wait for it to finish or stop it. If that process no longer "
                        f"runs, delete {self.path}") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as error:
                raise OutputError(f"cannot lock {self.path.parent}: {error.strerror or error}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            self.held = True
            return self
        raise OutputError(f"cannot lock {self.path.parent}: another process took {self.path}; try again")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, start: str | None = None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None and _start_time(pid) not in (None, start):
        return False  # the pid was reused by another process
    return True
