"""wfkern.data.dataset_targets, the one label reader: stored targets wherever they are, samples only as a last resort."""

import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from wfkern.data import DatasetInfo, TensorImageDataset, dataset_targets, subset_of

LABELS = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1])


class Counting(Dataset):
    """Yields (x, y) and counts every sample it loads; optionally exposes its labels under an attribute."""

    def __init__(self, labels, attr=None, target_transform=None):
        self._labels = labels
        self.loads = 0
        self.target_transform = target_transform
        if attr is not None:
            setattr(self, attr, labels.tolist())

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        self.loads += 1
        y = self._labels[i]
        return torch.zeros(1), (self.target_transform(y) if self.target_transform else y)


def test_a_targets_attribute_is_read_without_loading_samples():
    ds = Counting(LABELS, attr="targets")
    assert torch.equal(dataset_targets(ds), LABELS) and ds.loads == 0


def test_a_labels_attribute_is_read_too():  # torchvision's SVHN
    ds = Counting(LABELS, attr="labels")
    assert torch.equal(dataset_targets(ds), LABELS) and ds.loads == 0


def test_a_dataset_without_stored_targets_is_read_sample_by_sample():
    ds = Counting(LABELS)
    assert torch.equal(dataset_targets(ds), LABELS) and ds.loads == len(LABELS)


def test_a_target_transform_is_honoured_by_reading_the_samples():
    ds = Counting(LABELS, attr="targets", target_transform=lambda y: (y + 1) % 3)
    assert torch.equal(dataset_targets(ds), (LABELS + 1) % 3) and ds.loads == len(LABELS)


def test_targets_of_another_length_are_not_trusted():
    ds = Counting(LABELS)
    ds.targets = [0, 1]  # not one per sample
    assert torch.equal(dataset_targets(ds), LABELS)


def test_subset_of_subset_maps_the_indices_without_loading_samples():
    ds = Counting(LABELS, attr="targets")
    inner = Subset(ds, [7, 6, 5, 4, 3, 2])
    outer = Subset(inner, torch.tensor([0, 2, 5]))  # tensor indices as well as lists
    assert torch.equal(dataset_targets(outer), LABELS[[7, 5, 2]]) and ds.loads == 0


def test_subset_of_a_dataset_without_targets_loads_only_its_own_samples():
    ds = Counting(LABELS)
    sub = Subset(ds, [1, 3])
    assert torch.equal(dataset_targets(sub), LABELS[[1, 3]]) and ds.loads == 2


def test_a_subset_that_relabels_is_read_sample_by_sample():
    class Relabel(Subset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x, torch.tensor(9)

        def __getitems__(self, indices):
            return [self[i] for i in indices]

    ds = Counting(LABELS, attr="targets")
    assert dataset_targets(Relabel(ds, [0, 1, 2])).tolist() == [9, 9, 9]


def test_a_subset_with_its_own_targets_uses_them():  # wfkern's ImageFolder splits
    sub = Subset(Counting(LABELS), [0, 1])
    sub.targets = torch.tensor([5, 6])
    assert dataset_targets(sub).tolist() == [5, 6]


def test_concat_dataset_and_tensor_dataset():
    a = TensorDataset(torch.zeros(3, 1), LABELS[:3])
    b = Counting(LABELS[3:], attr="targets")
    assert torch.equal(dataset_targets(ConcatDataset([a, b])), LABELS) and b.loads == 0
    assert torch.equal(dataset_targets(ConcatDataset([a, Counting(LABELS[3:])])), LABELS)  # one part read by samples


def test_folder_samples_are_read_without_loading_images():  # a torchvision DatasetFolder
    ds = Counting(LABELS)
    ds.samples = [(f"img{i}.png", int(y)) for i, y in enumerate(LABELS)]
    assert torch.equal(dataset_targets(ds), LABELS) and ds.loads == 0


def test_multi_hot_targets_come_back_as_stored():
    info = DatasetInfo("toy", 3, 1, 4, multi_label=True)
    hot = torch.tensor([[1, 0, 1], [0, 1, 0]])
    ds = TensorImageDataset(torch.zeros(2, 1, 4, 4), hot, info, [0.0], [1.0])
    assert torch.equal(dataset_targets(ds), hot)
    with pytest.raises(ValueError, match=r"^wfkern\.dataset_targets: dataset must have single-label \(N,\) targets, "
                                         r"got shape \(2, 3\)$"):
        dataset_targets(ds, single_label=True)


def test_single_label_is_int64_and_flattens_a_column():
    ds = TensorDataset(torch.zeros(4, 1), LABELS[:4].view(4, 1).to(torch.int32))
    assert dataset_targets(ds).shape == (4, 1)
    out = dataset_targets(ds, single_label=True)
    assert out.dtype == torch.int64 and out.tolist() == LABELS[:4].tolist()


def test_subset_of_copies_wfkern_datasets_and_wraps_others():
    info = DatasetInfo("toy", 3, 1, 4)
    ds = TensorImageDataset(torch.zeros(8, 1, 4, 4), LABELS, info, [0.0], [1.0])
    sub = subset_of(ds, torch.tensor([1, 2]))
    assert isinstance(sub, TensorImageDataset) and sub.targets.tolist() == [0, 1]
    other = subset_of(Counting(LABELS), torch.tensor([1, 2]))
    assert isinstance(other, Subset) and dataset_targets(other).tolist() == [0, 1]
