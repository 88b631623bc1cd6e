"""Chars74K EnglishHnd: finding, fetching, checking, splitting and loading the handwritten characters."""

from hwr.data.arrays import Dataset, cache_file, load_dataset, preprocess
from hwr.data.chars74k import (
    CLASSES,
    NUM_CLASSES,
    DataError,
    DatasetInfo,
    Sample,
    default_cache_dir,
    find_root,
    load_manifest,
    scan,
    verify,
)
from hwr.data.fetch import OFFICIAL_URL, download, ensure_dataset, has_images, safe_extract
from hwr.data.splits import PAPER_SIZES, SCHEMES, Splits, make_splits, target_sizes
from hwr.data.synthetic import write_synthetic

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "OFFICIAL_URL",
    "PAPER_SIZES",
    "SCHEMES",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "Sample",
    "Splits",
    "cache_file",
    "default_cache_dir",
    "download",
    "ensure_dataset",
    "find_root",
    "has_images",
    "load_dataset",
    "load_manifest",
    "make_splits",
    "preprocess",
    "safe_extract",
    "scan",
    "target_sizes",
    "verify",
    "write_synthetic",
]
