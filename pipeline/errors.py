"""The pipeline's small exception hierarchy: every error a user can cause is a `PipelineError`."""


class PipelineError(Exception):
    """Base class: a problem with input, configuration or state that the user can fix."""


class InputError(PipelineError):
    """A raw file, row or column is missing or malformed."""


class ConfigError(PipelineError):
    """A configuration file or `--set` override is invalid."""


class DamagedFileError(PipelineError):
    """A file the pipeline wrote (a manifest, a job record, a model's config) is missing or not what it
    should be; running the stage that writes it again mends it."""


class ModelError(PipelineError):
    """A model folder is missing, incomplete or does not match the data it is asked to score."""


class TrainingError(PipelineError):
    """A training run diverged (its loss or weights became NaN or infinite); it published nothing, and its
    settings (a lower learning rate) are the fix."""


class ExportError(PipelineError):
    """The go-exporter process failed or could not be found."""


class StorageError(PipelineError):
    """The data directory's file system is full, read-only or not writable (nothing was half-published)."""


class SinkError(PipelineError):
    """A database refused a load: login, missing database, mismatched table, read-only or full server."""


class DriftError(PipelineError):
    """A night's predictions drifted past the `[report]` thresholds and `report.fail_on_drift` is set."""
