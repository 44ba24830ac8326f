"""Ingest options: `IngestConfig`, the quarantine reasons and formats, and where options come from.

Options come from the `pipeline ingest` command line (`add_ingest_arguments`, `ingest_config_from_args`)
or from a raw folder's `_ingest.toml` (`load_folder_config`); a class-names file is read by `read_classes`.
"""

from __future__ import annotations

import argparse
import codecs
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError, InputError

# Reasons a row is quarantined.
EMPTY_TEXT = "empty_text"
MALFORMED = "malformed"
UNDECODABLE = "undecodable"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"
REASONS = (EMPTY_TEXT, MALFORMED, UNDECODABLE, UNKNOWN_LABEL, DUPLICATE_ID, TOO_LONG)

Format = Literal["auto", "csv", "tsv", "jsonl", "text", "labelled", "fasttext", "parquet"]
FORMATS: tuple[str, ...] = ("auto", "csv", "tsv", "jsonl", "text", "labelled", "fasttext", "parquet")
FOLDER_CONFIG = "_ingest.toml"  # per raw/<date>/ options; files starting with `_` or `.` are not sources


@dataclass(frozen=True)
class IngestConfig:
    """How to read and validate sources. Columns are names, or 1-based positions as strings ("2")."""

    format: Format = "auto"  # auto: from the file name (.csv .tsv .jsonl .txt .parquet, after .gz/.zst)
    text_columns: tuple[str, ...] = ("text",)  # several are joined with a space
    label_column: str | None = "label"  # the default may be absent from a source: rows are unlabelled
    id_column: str | None = "id"  # the default may be absent: ids are derived from sha256 and line
    header: bool = True  # CSV/TSV: first line names the columns; without it, columns are "1", "2", ...
    delimiter: str | None = None  # CSV "," and TSV tab unless given
    quote: str | None = None  # CSV '"', TSV none unless given; "" turns quoting off
    encoding: str = "utf-8"
    label_sep: str | None = None  # labelled lines: label, this separator, text; None = first whitespace
    label_prefix: str = ""  # removed from labels, required when set (fastText: "__label__")
    label_coarse_sep: str | None = None  # keep the label up to this separator (TREC "DESC:manner" -> DESC)
    label_index: Literal[0, 1] | None = None  # labels are 0- or 1-based indices into `classes`
    classes: tuple[str, ...] | None = None  # when set, other labels are quarantined
    max_text_chars: int = 10_000
    max_bad_fraction: float = 1.0
    block_bytes: int = 8 << 20  # bytes read per batch from text formats

    def __post_init__(self) -> None:
        _check_types(self)
        if self.format not in FORMATS:
            msg = f"`format` must be one of {', '.join(FORMATS)}, got {self.format!r}"
            raise ConfigError(msg)
        if not self.text_columns:
            msg = "`text_columns` is empty; hint: name at least one text column"
            raise ConfigError(msg)
        if self.label_index is not None and self.classes is None:
            msg = "`label_index` needs `classes` (the class-names file the indices point into)"
            raise ConfigError(msg)
        if self.label_index not in (None, 0, 1):
            msg = f"`label_index` must be 0 or 1, got {self.label_index!r}"
            raise ConfigError(msg)
        if not 0.0 <= self.max_bad_fraction <= 1.0 or self.max_text_chars < 1:
            msg = "`max_bad_fraction` must be in [0, 1] and `max_text_chars` >= 1"
            raise ConfigError(msg)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            msg = f"`encoding` {self.encoding!r} is unknown; hint: e.g. utf-8, iso-8859-1, cp1252, gb18030"
            raise ConfigError(msg) from None
        for name, ch in (("delimiter", self.delimiter), ("quote", self.quote or None)):
            if ch is not None and (len(ch) != 1 or not ch.isascii() or ch in "\r\n"):
                msg = f"`{name}` must be one ASCII character (not a line end), got {ch!r}"
                raise ConfigError(msg)
        if self.quote and self.quote == self.delimiter:
            msg = f"`quote` and `delimiter` are both {self.quote!r}; hint: --quote '' turns quoting off"
            raise ConfigError(msg)
        for name, sep in (("label_sep", self.label_sep), ("label_coarse_sep", self.label_coarse_sep)):
            if sep == "":
                msg = f"`{name}` is empty; hint: leave it out for the default"
                raise ConfigError(msg)


def _check_types(cfg: IngestConfig) -> None:
    """Options from a TOML file arrive with any type: each must have the one its field says."""
    for name, kinds in _TYPES.items():
        value = getattr(cfg, name)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if ok and isinstance(value, tuple):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            names = {tuple: "a list of strings", _NONE: "left out"}
            want = " or ".join(names.get(k, k.__name__) for k in kinds)
            msg = f"`{name}` must be {want}, got {value!r}"
            raise ConfigError(msg)


_NONE = type(None)
_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "text_columns": (tuple,),
    "label_column": (str, _NONE),
    "id_column": (str, _NONE),
    "header": (bool,),
    "delimiter": (str, _NONE),
    "quote": (str, _NONE),
    "encoding": (str,),
    "label_sep": (str, _NONE),
    "label_prefix": (str,),
    "label_coarse_sep": (str, _NONE),
    "label_index": (int, _NONE),
    "classes": (tuple, _NONE),
    "max_text_chars": (int,),
    "max_bad_fraction": (float, int),
    "block_bytes": (int,),
}


def read_classes(path: Path) -> tuple[str, ...]:
    """A class-names file: one name a line, blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except FileNotFoundError:
        msg = f"{path}: classes file not found; hint: one class name a line"
        raise InputError(msg) from None
    except (OSError, UnicodeDecodeError) as e:
        msg = f"{path}: cannot read the classes file ({e}); hint: a UTF-8 text file, one name a line"
        raise InputError(msg) from None
    classes = tuple(x.strip() for x in text.splitlines() if x.strip())
    if not classes:
        msg = f"{path}: the classes file is empty; hint: one class name a line"
        raise InputError(msg)
    return classes


def ingest_config(options: dict[str, Any], *, base: Path, where: str) -> IngestConfig:
    """An `IngestConfig` from a table of options (TOML keys = field names; `classes` may be a file)."""
    known = {f.name for f in fields(IngestConfig)} - {"block_bytes"}
    unknown = sorted(set(options) - known)
    if unknown:
        msg = f"{where}: unknown ingest option(s) {unknown}; known: {sorted(known)}"
        raise ConfigError(msg)
    opts = dict(options)
    if isinstance(opts.get("text_columns"), str | int):
        opts["text_columns"] = [opts["text_columns"]]
    if "text_columns" in opts:
        opts["text_columns"] = _names(opts["text_columns"])
    for key in ("label_column", "id_column"):
        if isinstance(opts.get(key), str | int):
            opts[key] = str(opts[key]) or None
    if isinstance(opts.get("classes"), str):
        opts["classes"] = read_classes(_inside(base, opts["classes"], where))
    elif opts.get("classes") is not None:
        opts["classes"] = _names(opts["classes"])
    try:
        return IngestConfig(**opts)
    except (TypeError, ConfigError) as e:
        msg = f"{where}: {e}"
        raise ConfigError(msg) from None


def _names(value: Any) -> Any:
    """A TOML list of names or 1-based positions as a tuple of strings; anything else is left to the
    type check, which names the option."""
    if isinstance(value, list) and all(isinstance(c, str | int) and not isinstance(c, bool) for c in value):
        return tuple(str(c) for c in value)
    return value


def _inside(base: Path, name: str, where: str) -> Path:
    """`base / name`, refused unless it stays inside `base` (no absolute path, no `..`, no link out)."""
    path = base / name
    if (
        Path(name).is_absolute()
        or ".." in Path(name).parts
        or not path.resolve().is_relative_to(base.resolve())
    ):
        msg = f"{where}: `classes` {name!r} is outside {base}; hint: put the classes file in that folder"
        raise ConfigError(msg)
    return path


def load_folder_config(folder: Path) -> IngestConfig:
    """The options of a raw folder: `<folder>/_ingest.toml` if present, else the defaults.

    A nightly drop of AG News style files, for example:

        format = "csv"
        header = false
        label_column = "1"
        text_columns = ["2", "3"]
        label_index = 1
        classes = "_classes.txt"   # relative to the folder; `_` keeps it from being ingested
    """
    path = folder / FOLDER_CONFIG
    if not path.is_file():
        return IngestConfig()
    try:
        options = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        msg = f"{path}: not valid TOML ({e})"
        raise ConfigError(msg) from None
    return ingest_config(options, base=folder, where=str(path))


def _unescape(s: str) -> str:
    """`\\t` -> a tab, as a shell user types it."""
    try:
        return s.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in s else s
    except UnicodeDecodeError:
        msg = f"{s!r} is not a valid escape; hint: e.g. '\\t' for a tab"
        raise ConfigError(msg) from None


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingest options of `pipeline ingest` (SOURCE... and --date are added by the caller)."""
    d = IngestConfig()
    g = parser.add_argument_group("reading")
    g.add_argument("--format", choices=FORMATS, default="auto", help="default: from the file name")
    g.add_argument("--no-header", dest="header", action="store_false", help="CSV/TSV: no header row")
    g.add_argument("--delimiter", help="CSV/TSV field separator (default , or tab; \\t understood)")
    g.add_argument("--quote", help="CSV quote character (default \" for CSV, none for TSV; '' for none)")
    g.add_argument("--encoding", default=d.encoding, help="e.g. iso-8859-1 (default utf-8)")
    g = parser.add_argument_group("columns (a name, or a 1-based position)")
    g.add_argument(
        "--text-column",
        dest="text_columns",
        action="append",
        metavar="COL",
        help="repeat to join several with a space (default: text)",
    )
    g.add_argument(
        "--label-column", default=d.label_column, metavar="COL", help="'' for none (default: label)"
    )
    g.add_argument("--id-column", default=d.id_column, metavar="COL", help="'' to derive ids (default: id)")
    g = parser.add_argument_group("labels")
    g.add_argument("--classes", type=Path, help="class names, one a line; other labels are quarantined")
    g.add_argument(
        "--label-index", type=int, choices=[0, 1], help="labels are 0/1-based indices into --classes"
    )
    g.add_argument(
        "--label-sep", help="labelled lines: separator after the label (default: first whitespace)"
    )
    g.add_argument(
        "--label-prefix", default="", help="removed from labels, e.g. __label__ (fasttext sets it)"
    )
    g.add_argument("--label-coarse-sep", metavar="SEP", help="keep the label up to SEP (TREC: ':')")
    g = parser.add_argument_group("validation")
    g.add_argument(
        "--max-text-chars", type=int, default=d.max_text_chars, help="longer texts are quarantined"
    )
    g.add_argument(
        "--max-bad-fraction", type=float, default=d.max_bad_fraction, help="fail (publish nothing) above this"
    )


def ingest_config_from_args(args: argparse.Namespace) -> IngestConfig:
    """The `IngestConfig` of parsed `pipeline ingest` arguments (reads the --classes file)."""
    try:
        return IngestConfig(
            format=args.format,
            text_columns=tuple(args.text_columns or ("text",)),
            label_column=args.label_column or None,
            id_column=args.id_column or None,
            header=args.header,
            delimiter=_unescape(args.delimiter) if args.delimiter else None,
            quote=args.quote,
            encoding=args.encoding,
            label_sep=_unescape(args.label_sep) if args.label_sep else None,
            label_prefix=args.label_prefix,
            label_coarse_sep=args.label_coarse_sep,
            label_index=args.label_index,
            classes=read_classes(args.classes) if args.classes is not None else None,
            max_text_chars=args.max_text_chars,
            max_bad_fraction=args.max_bad_fraction,
        )
    except ConfigError as e:
        raise InputError(str(e)) from None
