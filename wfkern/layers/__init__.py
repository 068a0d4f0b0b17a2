"""Weight-Filtering layers: a frozen layer plus per-class gates on its output channels."""
from wfkern.layers.attention import WFMultiheadAttention
from wfkern.layers.base import ForgetContext, WFLayer, find_wf_layers
from wfkern.layers.conv import WFConv2d
from wfkern.layers.fusion import FoldedBatchNorm2d
from wfkern.layers.linear import WFLinear

__all__ = ["FoldedBatchNorm2d", "ForgetContext", "WFConv2d", "WFLayer", "WFLinear", "WFMultiheadAttention", "find_wf_layers"]
