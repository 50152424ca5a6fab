"""Provenance sidecar of a rendered video: `<out>.json` says what made it.

Fields (keys sorted, so equal runs give byte-equal files): `config`, `seed`, `inputs` (name -> path and
sha256 of the file), `checkpoint` (path and a sha256 over its sorted relative file paths and contents),
`versions` (python, jax, jaxlib, flax, numpy, emodiff_jax) and `git` (commit and dirty flag of the
checkout the package runs from; null outside a git checkout).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from typing import Any, Mapping, Optional

from emodiff_jax.atomic_io import write_bytes

_CHUNK = 1 << 20
_PACKAGES = {"jax": "jax", "jaxlib": "jaxlib", "flax": "flax", "numpy": "numpy", "emodiff_jax": "emodiff-jax"}


def sidecar_path(out_path: str) -> str:
  """Where the sidecar of `out_path` lives: `<out_path>.json`."""
  return out_path + ".json"


def _update_with_file(h: "hashlib._Hash", path: str) -> None:
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)


def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  _update_with_file(h, path)
  return h.hexdigest()


def folder_sha256(folder: str) -> str:
  """Hex sha256 over every file under `folder`: for each, in sorted order of its relative POSIX path,
  the path, its byte size and its bytes (so renames, moves and edits all change the hash)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: checkpoint folder not found")
  files = []
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      files.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
  h = hashlib.sha256()
  for rel, path in sorted(files):
    h.update(f"{rel}\0{os.path.getsize(path)}\0".encode())
    _update_with_file(h, path)
  return h.hexdigest()


def _version(dist: str) -> Optional[str]:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git() -> Optional[dict]:
  """Commit and dirty flag of the checkout holding this package; None when it is not one (or no git)."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    if head.returncode:
      return None
    status = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return dict(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()) if not status.returncode else None)


def _jsonable(value: Any) -> Any:
  """numpy scalars and arrays (common in configs) as plain JSON values."""
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON serialisable")


def write_sidecar(out_path: str, *, config: dict, seed: int, checkpoint_dir: str,
                  inputs: dict[str, str], known_sha256: Optional[Mapping[str, str]] = None) -> str:
  """Writes `<out_path>.json` atomically (`atomic_io.write_bytes`) and returns its path.

  Args:
    out_path: the rendered video.
    config: the run's configuration (a dict, or anything with `to_dict()` such as a ConfigDict).
    seed: the sampling seed.
    checkpoint_dir: the model checkpoint folder.
    inputs: name -> file (e.g. {'portrait': 'me.jpg', 'speech': 'hello.wav'}).
    known_sha256: path -> sha256 the caller already computed for `checkpoint_dir` or an input (a multi-GB
      bundle is then not read again for every output); the others are hashed here.
  """
  known = dict(known_sha256 or {})
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  record = dict(
      config=config, seed=int(seed),
      inputs={name: dict(path=os.path.abspath(p), sha256=known.get(p) or file_sha256(p)) for name, p in inputs.items()},
      checkpoint=dict(path=os.path.abspath(checkpoint_dir),
                      sha256=known.get(checkpoint_dir) or folder_sha256(checkpoint_dir)),
      versions=dict(python=platform.python_version(), **{k: _version(d) for k, d in _PACKAGES.items()}),
      git=_git())
  text = json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n"
  path = sidecar_path(out_path)
  write_bytes(path, text.encode())
  return path


def read_sidecar(path: str) -> dict:
  """The record a `write_sidecar` wrote (pass the sidecar's own path)."""
  with open(path) as f:
    return json.load(f)
