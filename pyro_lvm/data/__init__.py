"""Data: one reader per format, the data-directory rule, downloads with checksums."""

from pyro_lvm.data.datasets import DATASETS, DataSplits, dynamic_binarize, load_dataset
from pyro_lvm.data.directory import ENV_VAR, resolve_data_dir
from pyro_lvm.data import images  # noqa: F401  (registers 'arrays' and 'image_folder')
from pyro_lvm.data.download import ChecksumError, DataNotFoundError, RemoteFile, fetch
from pyro_lvm.data.formats import parse_amat_binary, parse_idx
from pyro_lvm.data.text import Vocabulary

__all__ = [
    "DATASETS", "ChecksumError", "DataNotFoundError", "DataSplits", "ENV_VAR", "RemoteFile",
    "dynamic_binarize", "fetch", "load_dataset", "parse_amat_binary", "parse_idx",
    "resolve_data_dir", "Vocabulary",
]
