"""Parents: the one way to name a parent (Hub id, folder, `demo:`, `run:`) and turn the name into a ModelRef."""

from darwin_core.parents.names import (
    DEMO_PREFIX,
    RUN_PREFIX,
    ParentName,
    Scheme,
    parent_label,
    parse_parent,
    resolve_parent_name,
)

__all__ = ["DEMO_PREFIX", "RUN_PREFIX", "ParentName", "Scheme", "parent_label", "parse_parent", "resolve_parent_name"]
