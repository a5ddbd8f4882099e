"""The zoo's catalogue and weight store (no training, no model building): see :mod:`ltrain.store.catalog`."""

from ltrain.store.catalog import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Catalog,
    VerifyResult,
    ZooEntry,
    bool_option,
    catalog_dir,
    check_name,
    summarize_metrics,
    zoo_home,
)

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Catalog",
    "VerifyResult",
    "ZooEntry",
    "bool_option",
    "catalog_dir",
    "check_name",
    "summarize_metrics",
    "zoo_home",
]
