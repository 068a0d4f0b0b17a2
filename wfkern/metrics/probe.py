"""Linear-probe recovery: does the unlearned model still *encode* the forgotten class where it no longer predicts it?

For a forgotten class ``c`` the model is frozen as it answers with ``c`` forgotten (WF-Net: ``wf(x, forget=c)``;
a baseline: its class-``c`` model). Features are taken at named layers (default: the input of the classification
head); a multinomial logistic regression (the probe) is fitted on training-split features of *all* classes with
their true labels, and its accuracy on the class-``c`` test samples is the probe's Acc_f. A model that hides ``c``
only at the head (e.g. a closed head row) keeps it decodable: high probe accuracy. A model whose features no
longer separate ``c`` gives a low one.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from wfkern.patch.surgery import classifier_head

from ._data import class_indices, index_batches
from .accuracy import accuracy_split

__all__ = ["HEAD", "head_name", "resolve_layer", "probe_features", "probe_accuracy", "class_probe"]

HEAD = "head"
"""The layer spec of the classification head's input (the penultimate features)."""


def head_name(model: nn.Module, num_classes: int) -> str:
    """Dotted name of the classification head: ``classifier_head``'s (``fc``, ``classifier``, ``head``, ``heads``)
    when it has ``num_classes`` outputs, else the last ``nn.Linear`` with ``num_classes`` outputs."""
    found = classifier_head(model)
    if found is not None and found[1] == num_classes:
        return found[0]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not linears:
        raise ValueError(f"wfkern.probe: model must have an nn.Linear head with {num_classes} outputs to probe its "
                         f"input, got none; name a layer instead (probe_layers)")
    return linears[-1]


def resolve_layer(model: nn.Module, spec: str, num_classes: int) -> tuple[str, str]:
    """``(module name, "input" | "output")`` of a layer spec: ``"head"`` (the head's input), ``"NAME"`` (the
    output of module NAME) or ``"NAME:in"`` (its input); names as in the plain model's ``named_modules()``."""
    if spec == HEAD:
        return head_name(model, num_classes), "input"
    name, _, side = spec.partition(":")
    if side not in ("", "in"):
        raise ValueError(f"wfkern.probe: probe_layers must be 'head', NAME or NAME:in, got {spec!r}")
    names = dict(model.named_modules())
    if name not in names or name == "":
        shown = ", ".join(n for n in list(names)[1:9])
        raise ValueError(f"wfkern.probe: probe_layers must name modules of the model ({shown}, ...), got {name!r}")
    return name, "input" if side == "in" else "output"


@torch.no_grad()
def probe_features(fn: Callable[[Tensor], Tensor], root: nn.Module, layers: Sequence[str], num_classes: int,
                   dataset: Dataset, indices: Optional[Tensor], *, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Features of ``dataset[indices]`` at each layer spec while ``fn`` runs, flattened per sample.

    Args:
        fn: the forward of the model as evaluated (e.g. ``lambda x: wf(x, forget=c)``).
        root: the module whose submodules ``layers`` name (``fn`` must run them).
        layers: layer specs (``resolve_layer``).
        num_classes: Nc (finds the head).
        dataset: yields ``(x, y)``.
        indices: sample indices (None: all).
        batch_size: inference batch size.
        device: where inputs go.
    Returns:
        ``{spec: (N, D) float32 CPU tensor}`` in ``indices`` order (copies: later in-place ops cannot change them).
    """
    modules = dict(root.named_modules())
    grabbed: dict[str, list] = {spec: [] for spec in layers}
    handles = []
    for spec in layers:
        name, side = resolve_layer(root, spec, num_classes)

        def hook(_m, args, out, spec=spec, side=side):
            t = args[0] if side == "input" else out
            t = t[0] if isinstance(t, (tuple, list)) else t
            grabbed[spec].append(t.detach().reshape(t.shape[0], -1).to("cpu", torch.float32, copy=True))

        handles.append(modules[name].register_forward_hook(hook))
    try:
        for x, _ in index_batches(dataset, indices, batch_size):
            n0 = {spec: len(v) for spec, v in grabbed.items()}
            fn(x.to(device))
            for spec, v in grabbed.items():
                if len(v) != n0[spec] + 1:
                    raise ValueError(f"wfkern.probe: layer {spec!r} must run exactly once per forward, got "
                                     f"{len(v) - n0[spec]} calls")
    finally:
        for h in handles:
            h.remove()
    return {spec: torch.cat(v) if v else torch.zeros(0, 0) for spec, v in grabbed.items()}


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, c: int, *,
                   max_iter: int = 300, inv_reg: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit the probe on ``(train_x, train_y)`` and measure it on the test features.

    The features are standardised with the training part's mean and standard deviation (constant features get
    1), then scikit-learn's multinomial ``LogisticRegression`` (lbfgs, ``C = inv_reg``, at most ``max_iter``
    iterations, ``random_state = seed``) is fitted.

    Returns:
        ``acc_f``: accuracy on the test samples of class ``c``; ``acc_r``: on the others; ``train_acc``: on the
        training features (fractions; NaN for an empty part).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xtr = train_x.double().numpy()
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    std[std == 0] = 1.0
    clf = LogisticRegression(C=inv_reg, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():  # a fixed budget: stopping at max_iter is the setting, not a fault
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((xtr - mean) / std, train_y.numpy())
    pred_tr = torch.from_numpy(clf.predict((xtr - mean) / std)).long()
    pred = torch.from_numpy(clf.predict((test_x.double().numpy() - mean) / std)).long()
    acc_f, acc_r = accuracy_split(pred, test_y.long(), c)
    return {"acc_f": acc_f, "acc_r": acc_r, "train_acc": float((pred_tr == train_y.long()).double().mean())}


def _draw(n: int, cap: int, gen: torch.Generator) -> Tensor:
    return torch.arange(n) if n <= cap else torch.sort(torch.randperm(n, generator=gen)[:cap]).values


def class_probe(um, c: int, train_data: Dataset, train_labels: Tensor, test_data: Dataset, test_labels: Tensor,
                s, seed: int, device: torch.device) -> dict:
    """The probe metrics of forgotten class ``c`` (``evaluate``'s ``probe``).

    The probe's training samples are at most ``s.probe_max_samples`` training samples (all classes, a seeded
    uniform draw); it is tested on every test sample. Returns ``probe_acc_f`` / ``probe_acc_r`` (the first layer
    of ``s.probe_layers``) and ``probe`` = ``{spec: {"layer", "acc_f", "acc_r", "train_acc"}}`` for every layer;
    ``{}`` when the model has no module to hook.
    """
    root = um.feature_root(c)
    if root is None:
        return {}
    fn = lambda x: um.logits(x, c)  # noqa: E731
    gen = torch.Generator().manual_seed(int(seed))
    tr_idx = _draw(len(train_labels), s.probe_max_samples, gen)
    kw = dict(batch_size=s.batch_size, device=device)
    ftr = probe_features(fn, root, s.probe_layers, um.num_classes, train_data, tr_idx, **kw)
    fte = probe_features(fn, root, s.probe_layers, um.num_classes, test_data, None, **kw)
    per_layer = {}
    for spec in s.probe_layers:
        res = probe_accuracy(ftr[spec], train_labels[tr_idx], fte[spec], test_labels, c, max_iter=s.probe_max_iter,
                             inv_reg=s.probe_inv_reg, seed=seed)
        per_layer[spec] = {"layer": ":".join(resolve_layer(root, spec, um.num_classes)), **res}
    first = per_layer[s.probe_layers[0]]
    return {"probe_acc_f": first["acc_f"], "probe_acc_r": first["acc_r"], "probe": per_layer,
            "n_probe_train": int(tr_idx.numel()), "n_probe_forget_test": int(class_indices(test_labels, c).numel())}
