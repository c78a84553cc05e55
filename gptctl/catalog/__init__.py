"""The model catalog: schema, unit parsing, loading and merging catalog files.

Light to import: no pydantic, and PyYAML only when a YAML file is actually parsed.
"""

from gptctl.catalog.exportable import EXPORTABLE_ARCHITECTURES, is_exportable
from gptctl.catalog.loader import (
    BUILTIN,
    ENV_VAR,
    Catalog,
    CatalogFile,
    builtin_path,
    load_catalogs,
    resolve_paths,
    validate_files,
)
from gptctl.catalog.schema import (
    CRITERIA,
    DOMAINS,
    FIELDS,
    METRICS,
    MISSING_POLICIES,
    REQUIRED,
    TASKS,
    ModelEntry,
)
from gptctl.catalog.units import format_context, format_params, parse_context, parse_params

__all__ = [
    "BUILTIN",
    "CRITERIA",
    "Catalog",
    "CatalogFile",
    "DOMAINS",
    "ENV_VAR",
    "EXPORTABLE_ARCHITECTURES",
    "FIELDS",
    "METRICS",
    "MISSING_POLICIES",
    "REQUIRED",
    "TASKS",
    "ModelEntry",
    "builtin_path",
    "format_context",
    "format_params",
    "is_exportable",
    "load_catalogs",
    "parse_context",
    "parse_params",
    "resolve_paths",
    "validate_files",
]
