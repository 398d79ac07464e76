"""Publishing: the report appears whole or not at all. A new folder is built under a temporary name
and renamed into place; an existing folder is used only when it is empty or a report folder of
its own (it holds MARKER), and then only the report's files are replaced, one atomic rename each.
Any other folder is refused untouched: the report never removes or replaces what it did not write."""
import errno
import os
import shutil
import tempfile

from .results import ReportError

MARKER = ".dptrain-report"   # in every report folder: the names of the files the report wrote


def out_folder_mode(out):
    """'new' when OUT does not exist; 'merge' when it is a report folder of ours (or empty).
    Anything else is refused: the report never removes or replaces what it did not write."""
    if os.path.islink(out):
        raise ReportError(f"--out {out}: is a symbolic link (give the folder itself)")
    if not os.path.lexists(out):
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise ReportError(f"--out {out}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReportError(f"--out {out}: folder {parent} is not writable")
        return "new"
    if not os.path.isdir(out):
        raise ReportError(f"--out {out}: exists and is not a folder")
    entries = os.listdir(out)
    # Only the marker makes a folder ours: a user's own REPORT.md or pca.png in a folder without it
    # are theirs, whatever their names.
    if entries and MARKER not in entries:
        raise ReportError(f"--out {out}: the folder exists and is not a report folder (it holds {len(entries)} "
                          f"{'entry' if len(entries) == 1 else 'entries'} and no {MARKER}): give a new or empty folder; nothing in {out} was touched")
    return "merge"


def previous_files(out):
    try:
        with open(os.path.join(out, MARKER)) as f:
            return [line.strip() for line in f if line.strip() and "/" not in line and line.strip() != MARKER]
    except FileNotFoundError:
        return []


def merge_into(staging, out, inputs):
    """Move the staged files into an existing report folder, one atomic rename each, after checking
    that none would replace a folder, a link, a device, or an input; then drop the files an earlier
    report wrote that this one did not."""
    names = sorted(os.listdir(staging))
    for name in names:
        target = os.path.join(out, name)
        if os.path.lexists(target) and (os.path.islink(target) or not os.path.isfile(target)):
            raise ReportError(f"--out {out}: {name} there is not a regular file; nothing was changed")
        for path in inputs:
            if os.path.exists(target) and os.path.samefile(target, path):
                raise ReportError(f"--out {out}: {name} there is the input {path}; nothing was changed")
    stale = [n for n in previous_files(out) if n not in names]
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    for name in stale:
        target = os.path.join(out, name)
        if os.path.isfile(target) and not os.path.islink(target) and \
                not any(os.path.exists(p) and os.path.samefile(target, p) for p in inputs):
            os.remove(target)
    os.rmdir(staging)


def publish(out, mode, draw, inputs):
    """Call draw(folder) on a staging folder beside OUT and move what it wrote into OUT (mode from
    out_folder_mode). On any failure the staging folder goes and OUT is as it was."""
    parent = os.path.dirname(os.path.abspath(out))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp.", dir=parent)
    try:
        draw(staging)
        with open(os.path.join(staging, MARKER), "w") as f:
            f.write("".join(name + "\n" for name in sorted(os.listdir(staging)) if name != MARKER))
        if mode == "new":
            os.rename(staging, out)   # fails, touching nothing, if a non-empty OUT appeared meanwhile
        else:
            merge_into(staging, out, inputs)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)   # only the folder this run made
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReportError(f"no space left on {parent} while writing the report {out} (nothing was changed "
                              f"there)") from e
        raise ReportError(f"{e.filename or out}: {e.strerror or e} while writing the report {out} (nothing was "
                          f"changed there)") from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
