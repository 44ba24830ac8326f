"""Ingest options: `IngestConfig`, the quarantine reasons and formats, and where options come from.

Options come from the `pipeline ingest` command line (`add_ingest_arguments`, `ingest_config_from_args`)
or from a raw folder's `_ingest.toml` (`load_folder_config`); a class-names file is read by `read_classes`.
"""

from __future__ import annotations

import argparse
import codecs
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline.errors import ConfigError, InputError
from pipeline.settings import add_flags, build, given_flags, setting, settings

# Reasons a row is quarantined.
EMPTY_TEXT = "empty_text"
MALFORMED = "malformed"
UNDECODABLE = "undecodable"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"
REASONS = (EMPTY_TEXT, MALFORMED, UNDECODABLE, UNKNOWN_LABEL, DUPLICATE_ID, TOO_LONG)

Format = Literal["auto", "csv", "tsv", "jsonl", "text", "labelled", "fasttext", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
FOLDER_CONFIG = "_ingest.toml"  # per raw/<date>/ options; files starting with `_` or `.` are not sources

# The longest line (of a text format, after decoding) or Parquet value a reader hands on: a longer one
# is quarantined as too long, and the rest of it is read past, never held (decoding.Utf8Stream). With
# the read block, it bounds every reader's memory whatever the input's line lengths.
MAX_LINE_BYTES = 8 << 20
LONG_LINE = f"line longer than {MAX_LINE_BYTES >> 20} MiB"  # the quarantine's detail for one
LONG_VALUE = f"value longer than {MAX_LINE_BYTES >> 20} MiB"  # and for a Parquet value


@settings
class IngestConfig:
    """How to read and validate sources. Columns are names, or 1-based positions as strings ("2")."""

    format: Format = setting(
        "auto", "auto: from the file name (.csv .tsv .jsonl .txt .parquet, after .gz/.zst)"
    )
    text_columns: tuple[str, ...] = setting(("text",), "the text column(s); several are joined with a space")
    label_column: str | None = setting(
        "label", "the label column; the default may be absent from a source: its rows are unlabelled"
    )
    id_column: str | None = setting("id", "the id column; the default may be absent: ids are derived")
    header: bool = setting(True, 'CSV/TSV: the first line names the columns (else they are "1", "2", ...)')
    delimiter: str | None = setting(None, "CSV/TSV field separator; none: , for CSV, a tab for TSV")
    quote: str | None = setting(
        None, "CSV quote character; none: \" for CSV, no quoting for TSV; '' turns quoting off"
    )
    encoding: str = setting("utf-8", "the sources' text encoding, e.g. iso-8859-1, cp1252, gb18030")
    backslash_breaks: bool = setting(
        False, "AG News: a backslash stands for a line break and becomes a space (else it is text, kept)"
    )
    label_sep: str | None = setting(
        None, "labelled lines: the separator after the label; none: the first whitespace"
    )
    label_prefix: str = setting("", "removed from labels, and required when set (fastText: __label__)")
    label_coarse_sep: str | None = setting(
        None, "keep the label up to this separator (TREC: DESC:manner -> DESC)"
    )
    label_index: int | None = setting(None, "labels are 0- or 1-based indices into `classes`", ge=0, le=1)
    classes: tuple[str, ...] | None = setting(None, "the class names; labels not among them are quarantined")
    max_text_chars: int = setting(10_000, "longer texts are quarantined", ge=1)
    max_bad_fraction: float = setting(1.0, "more quarantined rows than this fails the ingest", ge=0, le=1)
    block_bytes: int = setting(
        MAX_LINE_BYTES, "bytes read per batch from text formats (CSV: the longest record it can read)", ge=1
    )

    def __post_init__(self) -> None:
        if not self.text_columns:
            msg = "`text_columns` is empty; hint: name at least one text column"
            raise ConfigError(msg)
        if self.label_index is not None and self.classes is None:
            msg = "`label_index` needs `classes` (the class-names file the indices point into)"
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
        return build(IngestConfig, opts, where=where)
    except ConfigError as e:
        msg = str(e) if str(e).startswith(where) else f"{where}: {e}"
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
        backslash_breaks = true    # AG News writes a line break as a backslash
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


_FLAG_GROUPS = {
    "reading": ["format", "header", "delimiter", "quote", "encoding", "backslash_breaks"],
    "columns (a name, or a 1-based position)": ["text_columns", "label_column", "id_column"],
    "labels": ["classes", "label_index", "label_sep", "label_prefix", "label_coarse_sep"],
    "validation": ["max_text_chars", "max_bad_fraction"],
}
_METAVARS = {
    "text_columns": "COL",
    "label_column": "COL",
    "id_column": "COL",
    "classes": "FILE",
    "delimiter": "CHAR",
    "quote": "CHAR",
    "label_sep": "SEP",
    "label_coarse_sep": "SEP",
    "label_prefix": "PREFIX",
}
_NOTES = {
    "label_column": "'' for none",
    "id_column": "'' to derive ids",
    "delimiter": "\\t understood",
    "label_sep": "\\t understood",
    "classes": "a file, one name a line",
}


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingest options of `pipeline ingest` (SOURCE... and --date are added by the caller), one flag for
    each option of `IngestConfig`, explained by its declaration."""
    for title, names in _FLAG_GROUPS.items():
        group = parser.add_argument_group(title)
        add_flags(
            group,
            IngestConfig,
            names,
            flags={"text_columns": "--text-column"},
            notes=_NOTES,
            metavars=_METAVARS,
            types={"classes": Path},
        )


def ingest_config_from_args(args: argparse.Namespace) -> IngestConfig:
    """The `IngestConfig` of parsed `pipeline ingest` arguments (reads the --classes file)."""
    opts = given_flags(args, [n for names in _FLAG_GROUPS.values() for n in names])
    for key in ("label_column", "id_column"):
        if key in opts:
            opts[key] = opts[key] or None
    try:
        for key in ("delimiter", "label_sep"):
            if opts.get(key):
                opts[key] = _unescape(opts[key])
        if "classes" in opts:
            opts["classes"] = read_classes(opts["classes"])
        return build(IngestConfig, opts, where="pipeline ingest")
    except ConfigError as e:
        raise InputError(str(e)) from None
