"""Open any data source: auto-detected formats and the data YAML that names splits.

```yaml
path: datasets/raccoon      # optional base folder
train: train                # any source read() takes; or {path: ..., format: voc, images: ...}
val: val
test: test                  # optional
names: [raccoon]            # optional: fixes the class order
```
"""

from __future__ import annotations

from pathlib import Path

from detforge.data import formats
from detforge.data.dataset import Dataset, concat
from detforge.data.datayaml import load_data_yaml
from detforge.data.formats import yolo
from detforge.errors import FormatError

SPLITS = ("train", "val", "test")


def is_data_yaml(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml")


def read(src, format: str = "auto", **opts) -> Dataset:
    """Read ``src`` into a :class:`Dataset`. ``format='auto'`` detects it; a data YAML gives all
    its splits together. Options go to the format's reader (``images``, ``names``, ...)."""
    src = Path(src)
    if format == "auto" and is_data_yaml(src):
        splits = read_splits(src, **opts)
        parts = list(splits.values())
        ds = concat(parts, parts[0].classes)
        seen: set = set()  # a split may repeat another (YOLO's "val: images")
        ds.samples = [s for s in ds.samples if not (s.image in seen or seen.add(s.image))]
        return ds
    name = formats.detect(src) if format == "auto" else format
    ds = formats.get(name).read(src, **opts)
    ds.format = name
    if opts.get("outside_paths") not in ("skip", "report"):  # `data check` lists them itself
        if not len(ds):
            raise_empty(src, ds)
        warn_issues(ds)
    return ds


def warn_issues(ds: Dataset) -> None:
    """What the reader worked around (missing images, orphan annotations, ...): one warning
    per kind with its count and first example, so nothing is dropped without a word."""
    import warnings

    by_kind: dict[str, list] = {}
    kept = {str(s.path) for s in ds.samples}
    for i in ds.issues:
        if i.kind == "unreadable_image":
            if i.path not in kept:  # the reader left it out (else verify.usable names it)
                why = i.message.removeprefix(f"{i.path}: ")
                warnings.warn(f"skipping {i.path}: {why}", stacklevel=3)
        elif i.severity in ("error", "warning"):
            by_kind.setdefault(i.kind, []).append(i)
    for kind, items in by_kind.items():
        first = items[0]
        where = "" if first.message.startswith(first.path) else f"{first.path}: "
        more = f" (and {len(items) - 1} more; `detforge data check` lists all)" * (len(items) > 1)
        warnings.warn(f"{kind}: {where}{first.message}{more}", stacklevel=3)


def raise_empty(src, ds: Dataset) -> None:
    """A dataset without a single image is an error, saying why when the reader knows."""
    errors = [i for i in ds.issues if i.severity == "error"]
    if errors:
        kinds = sorted({i.kind for i in errors})
        raise FormatError(
            src,
            f"no usable images: {len(errors)} problems ({', '.join(kinds)}), first: "
            f"{errors[0].path}: {errors[0].message}",
            "pass --images DIR if the images live elsewhere; `detforge data check` lists all",
        )
    raise FormatError(src, f"no images found (read as {ds.format})", "check the path")


def read_splits(path, **opts) -> dict[str, Dataset]:
    """``{split: Dataset}`` for a data YAML; all splits share one class list."""

    path = Path(path)
    cfg, base = load_data_yaml(path)
    names = yolo.parse_names(cfg["names"], path) if cfg.get("names") else opts.pop("names", None)
    present = [k for k in SPLITS if cfg.get(k)]
    if not present:
        raise FormatError(path, "names no split", "add train: (and val:, test:) entries")
    out = {}
    for k in present:
        entry = cfg[k]
        fmt, kw = "auto", dict(opts)
        if not isinstance(entry, (str, list, dict)):
            raise FormatError(path, f"{k}: must be a path, a list or a mapping, got {entry!r}")
        if isinstance(entry, dict):
            fmt = entry.get("format", "auto")
            kw.update({a: entry[a] for a in ("images", "split", "label_map") if a in entry})
            if kw.get("images"):
                kw["images"] = base / kw["images"]
            entry = entry.get("path")
        if isinstance(entry, list) or str(entry).endswith(".txt"):  # YOLO image lists
            outside = {a: opts[a] for a in ("outside_paths",) if a in opts}
            ds = yolo.read(path, split=k, names=names, **outside)
        else:
            ds = read(yolo.resolve_entry(base, entry), fmt, names=names, **kw)
        out[k] = ds
    classes = names or sorted({c for d in out.values() for c in d.classes})
    return {k: d.with_classes(classes) for k, d in out.items()}
