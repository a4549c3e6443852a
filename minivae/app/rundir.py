"""A training run owns its output directory: one process at a time, and no run replaces another by accident.

``own_run_directory`` is held for the whole run. It takes an exclusive
``fcntl`` lock on ``DIR/.minivae.lock`` (the kernel releases it when the
process ends, however it ends: a file a kill leaves behind locks nothing),
so a second ``minivae train`` on the same directory refuses at once, naming
the first one's PID. A run that ends removes the file. Holding the lock, it
refuses a directory that already holds a checkpoint unless the run continues
that checkpoint (``--resume``) or replaces it (``--overwrite``); only a run
accepted so removes the temporary files a killed minivae left (never a file
minivae did not name, ``files.remove_stale_temporaries``).
"""
import contextlib
import fcntl
import os
from pathlib import Path

from minivae.app.files import remove_stale_temporaries
from minivae.errors import MinivaeError

LOCK_NAME = ".minivae.lock"


@contextlib.contextmanager
def own_run_directory(directory, checkpoint_name, resume=None, overwrite=False, log=print):
    """Lock ``directory``, check that this run may write its checkpoint there, then clean stale temporaries."""
    with _locked(Path(directory)):
        _check_not_another_run(Path(directory) / checkpoint_name, resume, overwrite, log)
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


def _check_not_another_run(checkpoint, resume, overwrite, log):
    """Refuse to replace ``checkpoint`` unless this run resumes it or was told to --overwrite it."""
    if not checkpoint.exists():
        return
    if overwrite:
        log(f"--overwrite: {checkpoint} and this directory's metrics.jsonl and figures will be replaced "
            "by this run's as it writes them")
        return
    if resume is not None and Path(resume).exists() and os.path.samefile(resume, checkpoint):
        return
    raise MinivaeError(f"{checkpoint.parent} already holds a run ({checkpoint}); continue it with --resume "
                       f"{checkpoint}, or replace it with --overwrite")
