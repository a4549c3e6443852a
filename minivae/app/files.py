"""Writing output files so that no crash, full disk or planted link loses or misplaces one.

Every file minivae writes (checkpoint, metrics.jsonl, figures) goes through
``write_atomically``: a new temporary file in the same directory, created
exclusively (``mkstemp`` opens with ``O_CREAT | O_EXCL``, so it never follows a
link planted under its name), written, fsynced, then renamed over the target.
A rename replaces a directory entry: a symlink planted at the target is
replaced, never written through. Readers see the old file or the new one,
never a truncated one.

A temporary file is named ``.NAME.minivae-PID-XXXXXXXX.tmp`` (PID: the
writer's process), a name only minivae gives. A SIGKILL between creating it
and the rename leaves it behind; ``remove_stale_temporaries`` deletes such
leftovers, and nothing else, once the next run has taken the directory.
"""
import os
import re
import tempfile
from pathlib import Path

from minivae.errors import MinivaeError

TEMPORARY_SUFFIX = ".tmp"
# .NAME.minivae-PID-XXXXXXXX.tmp, XXXXXXXX being mkstemp's random letters, digits and underscores.
TEMPORARY_NAME = re.compile(r"\..+\.minivae-(?P<pid>[0-9]+)-[a-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX))


def write_atomically(path, write):
    """Call ``write(binary_file)`` on a fresh temporary file beside ``path``, fsync it, rename it over ``path``.

    The directory is fsynced after the rename so the new name survives a power
    loss. On any error (or Ctrl-C) the temporary file is removed and an
    existing ``path`` is untouched.
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.minivae-{os.getpid()}-",
                                     suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; the file gets what open() would give it
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory):
    """Make a rename in ``directory`` durable (POSIX; other systems skip it)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory):
    """Delete the temporary files ``write_atomically`` left in ``directory`` when its process was killed; their names.

    Only files named as minivae names them, whose writer (the PID in the name)
    no longer runs: a user's ``.draft.tmp`` is not minivae's, and a live
    ``minivae sample`` writing beside a run keeps its file. Call it only once
    the run owns the directory (``rundir.own_run_directory``).
    """
    try:
        with os.scandir(directory) as entries:
            stale = [Path(entry.path) for entry in entries if _is_stale_temporary(entry)]
    except OSError as exc:
        raise MinivaeError(f"cannot list the files in {directory} ({exc.strerror}); minivae train needs to read, "
                           "write and enter its --out: fix the directory's permissions or choose another") from None
    for entry in stale:
        entry.unlink(missing_ok=True)
    return [entry.name for entry in stale]


def _is_stale_temporary(entry):
    """Whether ``entry`` (an ``os.DirEntry``) is a regular file ``write_atomically`` named, of an ended process."""
    match = TEMPORARY_NAME.fullmatch(entry.name)
    return match is not None and entry.is_file(follow_symlinks=False) and not _running(int(match["pid"]))


def _running(pid):
    """Whether a process ``pid`` exists (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a number no PID reaches: leave the file alone
    return True
