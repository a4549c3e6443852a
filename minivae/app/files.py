"""Writing output files so that no crash, full disk or planted link loses or misplaces one.

Every file minivae writes (checkpoint, metrics.jsonl, figures) goes through
``write_atomically``: a new temporary file in the same directory, created
exclusively (``mkstemp`` opens with ``O_CREAT | O_EXCL``, so it never follows a
link planted under its name), written, fsynced, then renamed over the target.
A rename replaces a directory entry: a symlink planted at the target is
replaced, never written through. Readers see the old file or the new one,
never a truncated one.

A SIGKILL between creating the temporary file and the rename leaves it
behind; ``remove_stale_temporaries`` deletes such leftovers when the next run
takes the directory.
"""
import os
import tempfile
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path, write):
    """Call ``write(binary_file)`` on a fresh temporary file beside ``path``, fsync it, rename it over ``path``.

    The directory is fsynced after the rename so the new name survives a power
    loss. On any error (or Ctrl-C) the temporary file is removed and an
    existing ``path`` is untouched.
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
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
    """Delete the temporary files (``.NAME.XXXX.tmp``) a killed writer left in ``directory``; their names.

    Call it only while holding the directory (``rundir.lock_run_directory``):
    another live writer's temporary file looks the same.
    """
    stale = [entry for entry in Path(directory).iterdir()
             if entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX) and entry.name.count(".") >= 3
             and not entry.is_dir()]
    for entry in stale:
        entry.unlink(missing_ok=True)
    return [entry.name for entry in stale]
