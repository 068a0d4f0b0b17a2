"""The labels of a call belong to that call: threads, nesting, errors, DataParallel-style replicas, compile."""
from __future__ import annotations

import random
import threading

import pytest
import torch
from torch import nn

import wfkern

NUM_CLASSES = 6


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def _patched(fold: bool, seed: int = 0) -> wfkern.WFModel:
    torch.manual_seed(seed)
    net = _TinyNet()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    wf = wfkern.patch(net.eval(), NUM_CLASSES, fold_batchnorm=fold)
    with torch.no_grad():
        for p in wf.gate_parameters():
            p.normal_(0, 3)
    return wf


def _random_forget(rng: random.Random, batch: int):
    kind = rng.choice(["none", "int", "tensor", "set"])
    if kind == "none":
        return None
    if kind == "int":
        return rng.randrange(-1, NUM_CLASSES)
    if kind == "tensor":
        return torch.tensor([rng.randrange(-1, NUM_CLASSES) for _ in range(batch)])
    return torch.tensor([[rng.randrange(-1, NUM_CLASSES) for _ in range(2)] for _ in range(batch)])


def _call(wf, x, forget, grad):
    if grad:
        out = wf(x, forget=forget)
        if not out.requires_grad:  # nothing forgotten: the gates take no part
            return out, None
        return out.detach(), torch.autograd.grad(out.sum(), wf.gate_parameters(), allow_unused=True)[0]
    with torch.no_grad():
        return wf(x, forget=forget), None


@pytest.mark.parametrize("fold", [True, False])
def test_threads_on_one_model_get_their_own_labels(fold):
    """4 threads x 1,000 calls, mixed forget kinds, batch sizes, grad and no-grad: each equals the lone call."""
    wf = _patched(fold)
    rng = random.Random(0)
    inputs = [torch.randn(rng.randint(1, 4), 3, 6, 6) for _ in range(16)]
    jobs = []
    for i in range(4000):
        x = inputs[i % len(inputs)]
        jobs.append((x, _random_forget(rng, x.shape[0]), rng.random() < 0.25))
    expected = [_call(wf, *job) for job in jobs]
    got = [None] * len(jobs)
    errors = []
    start = threading.Barrier(4)

    def worker(offset):
        start.wait()
        try:
            for i in range(offset, len(jobs), 4):
                got[i] = _call(wf, *jobs[i])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    wrong = [i for i, (g, e) in enumerate(zip(got, expected))
             if not torch.equal(g[0], e[0]) or (e[1] is not None and not torch.equal(g[1], e[1]))]
    assert wrong == [], f"{len(wrong)} of {len(jobs)} calls got another call's result, e.g. {jobs[wrong[0]][1]}"


class _CallsTwice(nn.Module):
    """A WFModel inside another module, called twice per forward: masked, then not."""

    def __init__(self, wf):
        super().__init__()
        self.wf = wf

    def forward(self, x, forget):
        return self.wf(x, forget=forget), self.wf(x)


class _Nested(nn.Module):
    """A module whose inner call of the same WFModel forgets nothing while the outer call forgets."""

    def __init__(self, wf):
        super().__init__()
        self.wf = wf
        self.inner_out = None

    def forward(self, x):
        self.inner_out = self.wf(x)
        return x


def test_nested_calls_see_their_own_labels():
    wf = _patched(fold=True)
    x = torch.randn(3, 3, 6, 6)
    forget = torch.tensor([1, -1, 4])
    with torch.no_grad():
        plain, masked = wf(x), wf(x, forget=forget)
        first, second = _CallsTwice(wf)(x, forget)
        assert torch.equal(first, masked) and torch.equal(second, plain)
        # a forward hook on the first conv calls the model again without labels, mid-forward
        seen = {}

        def call_again(module, inputs, output):
            if "inner" not in seen:
                seen["inner"] = None  # the inner call runs this hook too
                seen["inner"] = wf(x)

        hook = wf.wf_layers()["conv1"].register_forward_hook(call_again)
        try:
            assert torch.equal(wf(x, forget=forget), masked)
        finally:
            hook.remove()
        assert torch.equal(seen["inner"], plain)


def test_an_error_mid_forward_leaves_no_labels_behind():
    wf = _patched(fold=True)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        plain = wf(x)

        def boom(module, inputs, output):
            raise RuntimeError("boom")

        hook = wf.wf_layers()["conv2"].register_forward_hook(boom)
        with pytest.raises(RuntimeError, match="boom"):
            wf(x, forget=torch.tensor([2, 3]))
        hook.remove()
        assert torch.equal(wf(x), plain)
        assert torch.equal(wf(x, forget=torch.tensor([-1, -1])), plain)


def _replica(network: nn.Module) -> nn.Module:
    """A DataParallel-style replica on the CPU: __dict__ copied shallowly, children replaced, tensors shared."""
    copies = {m: m._replicate_for_data_parallel() for m in network.modules()}
    for original, copy in copies.items():
        copy._parameters = dict(original._parameters)  # replicate() would set per-device copies here
        for key, child in original._modules.items():
            copy._modules[key] = None if child is None else copies[child]
    return copies[network]


def test_dataparallel_style_replicas_keep_labels_and_folds_apart():
    wf = _patched(fold=True)
    replicas = [_replica(wf) for _ in range(2)]
    x = torch.randn(2, 3, 6, 6)
    cases = [torch.tensor([1, 2]), None, torch.tensor([[5, 0], [-1, 3]]), 4]
    with torch.no_grad():
        expected = [wf(x, forget=f) for f in cases]
    results = {}

    def run(k):
        with torch.no_grad():
            for rep in range(200):
                i = (rep + k) % len(cases)
                out = replicas[k](x, forget=cases[i])
                if not torch.equal(out, expected[i]):
                    results.setdefault(k, []).append(i)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {}


def test_compiled_model_does_not_recompile_per_call():
    wf = _patched(fold=True)
    x = torch.randn(3, 3, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(wf, fullgraph=True)
    from torch._dynamo.utils import counters

    counters.clear()
    with torch.no_grad():
        for forget in ([1, -1, 4], [0, 0, 0], [5, 2, -1], [3, 3, 1]):
            labels = torch.tensor(forget)
            torch.testing.assert_close(compiled(x, forget=labels), wf(x, forget=labels), atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
