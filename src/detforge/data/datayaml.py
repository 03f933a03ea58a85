"""The data YAML: the file that names a dataset's splits and its classes, read and written here.

```yaml
path: .              # optional: the folder the split entries are relative to
train: train         # a folder, a file list, a data source, or {path:, format:, images:}
val: val
names: [raccoon]     # optional: the class order (a list, or an {id: name} mapping)
```
detforge writes it for ``split``, ``pack`` and the YOLO writer; Ultralytics' own files read as is.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from detforge.errors import FormatError
from detforge.fileio import atomic_write_text, read_text


def load_data_yaml(yml: Path) -> tuple[dict, Path]:
    """``(config, base folder)`` of a data YAML (detforge's or Ultralytics'): a mapping whose
    optional ``path`` is the folder its split entries are relative to."""
    try:
        cfg = yaml.safe_load(read_text(yml)) or {}
    except yaml.YAMLError as e:
        raise FormatError(yml, f"not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise FormatError(yml, "expected a mapping with path, train, val, test and names")
    if cfg.get("path") is not None and not isinstance(cfg["path"], str):
        raise FormatError(yml, f"path must be a folder name, got {cfg['path']!r}")
    return cfg, (yml.parent / cfg["path"] if cfg.get("path") else yml.parent)


def write_data_yaml(folder: Path, splits: dict, names) -> Path:
    """``folder/data.yaml`` naming ``splits`` (``{split: entry relative to folder}``) and the
    class ``names`` in order: the one writer of the file :func:`load_data_yaml` reads."""
    cfg = {"path": ".", **splits, "names": list(names)}
    path = Path(folder) / "data.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path
