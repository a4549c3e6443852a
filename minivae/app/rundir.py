"""A training run owns its output directory: one process at a time, and no run replaces another by accident.

``own_run_directory`` is held for the whole run. It takes an exclusive
``fcntl`` lock on ``DIR/.minivae.lock`` (the kernel releases it when the
process ends, however it ends: a file a kill leaves behind locks nothing),
so a second ``minivae train`` on the same directory refuses at once, naming
the first one's PID. A run that ends removes the file. Holding the lock, it
refuses a directory that holds a checkpoint, or any other file the run would
write (``outputs.run_outputs``), unless the run continues that checkpoint
(``--resume``) or replaces them (``--overwrite``); only a run
accepted so removes the temporary files a killed minivae left (never a file
minivae did not name, ``files.remove_stale_temporaries``).
"""
import contextlib
import fcntl
import os
from pathlib import Path

from minivae.app.files import remove_stale_temporaries
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from minivae.errors import MinivaeError

LOCK_NAME = ".minivae.lock"


@contextlib.contextmanager
def own_run_directory(directory, outputs, resume=None, overwrite=False, log=print):
    """Lock ``directory``, check that this run may write its ``outputs`` (file names) there, clean stale temporaries."""
    with _locked(Path(directory)):
        _check_not_another_run(Path(directory), outputs, resume, overwrite, log)
        removed = remove_stale_temporaries(directory)
        if removed:
            log(f"removed {len(removed)} temporary file(s) a killed run left in {directory}: {', '.join(removed)}")
        yield


@contextlib.contextmanager
def _locked(directory):
    """Hold an exclusive lock on ``directory / LOCK_NAME`` (holding our PID), or refuse naming the holder."""
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise MinivaeError(f"cannot create the lock file {path} ({exc.strerror}); "
                           "choose another --out or remove what is there") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            locked = False
        if not locked or not _still_named(path, fd):  # the holder removed the file we opened while it finished
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MinivaeError(f"{directory} is in use by another minivae train (PID {holder}); wait for it to "
                               "finish, or choose another --out")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still locked: a run starting now waits for none, and finds no file
    finally:
        os.close(fd)  # releases the lock


def _still_named(path, fd):
    """Whether ``path`` still names the file open as ``fd`` (a finishing run unlinks its lock file)."""
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _check_not_another_run(directory, outputs, resume, overwrite, log):
    """Refuse to replace any of ``outputs`` in ``directory`` unless this run continues the run there (``resume``
    names its checkpoint) or was told to ``overwrite``."""
    present = [name for name in outputs if os.path.lexists(directory / name)]
    checkpoint = directory / CHECKPOINT_NAME
    if not present or _continues(resume, checkpoint):
        return
    if overwrite:
        log(f"--overwrite: {_listed(present)} in {directory} will be replaced by this run's as it writes them")
        return
    if CHECKPOINT_NAME in present:
        raise MinivaeError(f"{directory} already holds a run ({checkpoint}); continue it with --resume "
                           f"{checkpoint}, or replace it with --overwrite")
    raise MinivaeError(f"{directory} holds {_listed(present)}, which this run would replace; move them away, "
                       "choose another --out, or replace them with --overwrite")


def _continues(resume, checkpoint):
    """Whether ``resume`` names ``checkpoint`` itself: the directory's files are then the run's own."""
    return resume is not None and checkpoint.exists() and Path(resume).exists() and os.path.samefile(resume, checkpoint)


def _listed(names, shown=3):
    """The first ``shown`` names, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
