"""Datasets: the embedded digits, MNIST / Fashion-MNIST / CIFAR-10 from a local root, ImageFolder trees.

Imports no other wfkern module.
"""

from wfkern.data.base import DatasetInfo, TensorImageDataset, dataset_targets, iter_batches, subset_of
from wfkern.data.loader import LoaderOptions, current_loader_options, loader_options
from wfkern.data.preprocess import Preprocess, as_preprocess
from wfkern.data.registry import (DEFAULT_DATASET, canonical_dataset_name, dataset_shape, get_dataset, list_datasets,
                                  register_dataset)
from wfkern.data.splits import stratified_split
from wfkern.data.torchvision_sets import DEBIAN_FASHION_ROOT, read_idx

__all__ = [
    "DatasetInfo", "TensorImageDataset", "dataset_targets", "iter_batches", "subset_of",
    "DEFAULT_DATASET", "get_dataset", "list_datasets", "register_dataset", "dataset_shape", "canonical_dataset_name",
    "LoaderOptions", "loader_options", "current_loader_options", "Preprocess", "as_preprocess",
    "stratified_split", "DEBIAN_FASHION_ROOT", "read_idx",
]
