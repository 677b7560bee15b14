"""Files that survive a stop at any instant, and I/O errors that name their file.

Every file of a run is written so that a SIGKILL, a SIGTERM, a full disk or a power loss at any moment
leaves either the previous version or the new one, never a torn file (docs/design.md, "What survives
what"):

- `atomic_write_json(path, value)` and `atomic_save_model(model, path)`: write beside the target, flush to
  the disk (`fsync`), then rename over it (the rename is the commit point), then sync the folder;
- `WriteError`: an `OSError` whose message names the path and the reason, raised by every writer here
  (an HDF5 or TensorFlow error carrying an errno becomes one too: `as_write_error`);
- `check_writable(path, flag)`: a folder (created if missing) that this process can write to, checked
  before the first training step, so that a read-only `--export` fails in a second, not after the run;
- `run_lock(run_dir)`: one run per run folder, held for the whole run (PID, host, start time).

No TensorFlow here: the command line uses this module before TensorFlow starts.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile

LOCK_FILENAME = "run.lock"


class WriteError(OSError):
    """A file of the run could not be written; the message names the path and the reason.

    Attributes:
        path: str, the file or folder that could not be written.
        reason: str, why (`[Errno 28] No space left on device`).
    """

    def __init__(self, path, reason, code=None):
        super().__init__(code, f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason

    def __str__(self):
        return self.strerror


class RunFolderInUse(OSError):
    """Another process holds the run folder's lock; the message names it (PID, host, start time)."""

    def __init__(self, message):
        super().__init__(errno.EBUSY, message)

    def __str__(self):
        return self.strerror


def as_write_error(path, error):
    """`error`, met while writing `path`, as a `WriteError` naming both (with its errno when it has one).

    HDF5 (through h5py) reports a full disk as a `RuntimeError` whose text holds `errno = 28`; TensorFlow's
    file errors carry no errno at all. Both are named as they are.
    """
    if isinstance(error, WriteError):
        return error
    code = getattr(error, "errno", None)
    if code is None:
        match = re.search(r"errno = (\d+)", str(error))
        code = int(match.group(1)) if match else None
    if isinstance(error, OSError) and error.strerror:
        reason = f"[Errno {code}] {error.strerror}" if code else error.strerror
    else:
        reason = f"[Errno {code}] {os.strerror(code)}" if code else str(error).strip().splitlines()[-1]
    return WriteError(path, reason, code)


@contextlib.contextmanager
def writing(path):
    """Context manager turning any `OSError` (or HDF5's errno-carrying `RuntimeError`) into a `WriteError`."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "errno" not in str(error):
            raise
        raise as_write_error(path, error) from error


def fsync_dir(path):
    """Flush a folder's entries (a rename inside it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def replacing(path, suffix=""):
    """Context manager yielding a temporary path beside `path`; on success it is synced and renamed over it.

    On an error (a full disk, a stop) the temporary file is removed and `path` is as it was; every
    `OSError` leaves as a `WriteError` naming `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix, dir=folder)
        os.close(fd)
        try:
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, path)  # the commit point
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        fsync_dir(folder)


def atomic_write_json(path, value, **dump_kwargs):
    """Write `value` as JSON to `path` atomically: the old content or the new, never half of either.

    Args:
        path: str or path-like.
        value: anything `json.dump` takes.
        **dump_kwargs: passed to `json.dump` (`indent`, `sort_keys`).

    Raises:
        WriteError: the file could not be written (the message names it and the reason).
    """
    path = os.fspath(path)
    with replacing(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(value, f, **dump_kwargs)


def atomic_save_model(model, path):
    """`model.save(path)` atomically (a `.keras` file is a zip: a stop half-way would leave it unreadable)."""
    path = os.fspath(path)
    with replacing(path, suffix=".keras") as tmp:
        with writing(path):
            model.save(tmp)


def check_writable(path, flag):
    """Check that `path` is a folder this process can write to, creating it (and its parents) if missing.

    Args:
        path: str, the folder.
        flag: str, the flag or argument that named it, for the message (`--out`, `--export`).

    Returns:
        str, the absolute path.

    Raises:
        WriteError: it is a file, or it cannot be created or written; the message names the flag.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise WriteError(path, f"{flag} names a file, not a folder", errno.ENOTDIR)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise WriteError(path, f"{flag} is not writable ([Errno {error.errno}] {error.strerror})", error.errno) from None
    return path


def _holder(text):
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else None
    except ValueError:
        return None


def _print_warning(message):
    print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def run_lock(run_dir, warn=None):
    """Hold `run_dir/run.lock` for the duration of the block: one run per run folder.

    The lock is an exclusive `flock` on the file, which the system releases when the process ends however
    it ends (a SIGKILL too), and the file holds the holder's PID, host and start time for the message. A
    file naming a process that has ended (a killed run) is a stale lock: it is taken over, with a warning.
    The file is emptied, not removed, when the block ends (removing it would let two later runs lock two
    different files).

    Args:
        run_dir: str, the run folder (created if missing).
        warn: callable taking a message, for the stale-lock warning. Defaults to printing it on stderr.

    Raises:
        RunFolderInUse: another process holds the lock; the message names it.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILENAME)
    with writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace")) or {}
            raise RunFolderInUse(
                f"the run folder {run_dir} is in use by PID {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"(started {holder.get('started', '?')}); wait for it to end, or give another --out"
            ) from None
        previous = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        host = socket.gethostname()
        if previous and previous.get("pid") != os.getpid():
            # The system released the holder's lock: its process has ended (killed, or the machine stopped).
            message = (f"taking over the stale lock {path} of PID {previous.get('pid')} on {previous.get('host')} "
                       f"(started {previous.get('started')}), which has ended without releasing it")
            (warn or _print_warning)(message)
        record = {"pid": os.getpid(), "host": host,
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
        try:
            yield record
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
