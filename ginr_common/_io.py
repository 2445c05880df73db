"""Atomic writes (a leaf): a file is written beside its destination, flushed to disk, then renamed
over it, so a reader (or a run killed mid-write) sees the old file or the new one, never half of one.
And dataclasses read back from dicts, unknown fields named."""
import dataclasses
import json
import os
from pathlib import Path


def atomic_write(path, write):
    """``write(f)`` into a temporary file in ``path``'s folder (opened "wb"), fsync, then rename it over
    ``path``. Creates the folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path, text):
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_json(obj, path):
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=1))


def from_fields(cls, d, what):
    """``cls(**d)`` for the dataclass ``cls`` once ``d`` names only its fields; otherwise a
    ValueError names the unknown fields and the known ones (``what``: what ``d`` is, for the message)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**d)
