"""Datasets: the embedded digits, MNIST / Fashion-MNIST / CIFAR-10 from a local root, ImageFolder trees.

Imports no other wfkern module.
"""

from wfkern.data.base import DatasetInfo, TensorImageDataset, dataset_targets, iter_batches
from wfkern.data.registry import DEFAULT_DATASET, get_dataset, list_datasets, register_dataset
from wfkern.data.splits import stratified_split
from wfkern.data.torchvision_sets import DEBIAN_FASHION_ROOT, read_idx

__all__ = [
    "DatasetInfo", "TensorImageDataset", "dataset_targets", "iter_batches",
    "DEFAULT_DATASET", "get_dataset", "list_datasets", "register_dataset",
    "stratified_split", "DEBIAN_FASHION_ROOT", "read_idx",
]
