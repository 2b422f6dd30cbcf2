"""Normalizing flows as Pyro distributions: NICE, RealNVP, MAF, IAF, Glow, i-ResNet, neural spline flows.

Every flow is a stack of Pyro ``TransformModule``\\ s inside a
``pyro.distributions.TransformedDistribution`` at site "x"
(:class:`FlowModel`), trained by ``pyro_dgm.fit(flow.model, None, x)`` with
maximum likelihood; the IAF is a VAE guide built on
``ConditionalTransformedDistribution`` (:class:`IAFVAE`).
"""

from .core import FlowModel, Remembered, ScoredOnce, SequentialFlow
from .dequantization import LogitTransform, UniformDequantization, discrete_bits_per_dim
from .glow import ActNorm, ChannelAffineCoupling, Glow, InvertibleConv1x1
from .iaf import ConditionalIAF, IAFVAE
from .iresnet import IResNet, InvertibleResidual
from .maf import MAF, MaskedAffineAutoregressive, NormalizingBatchNorm
from .multiscale import FactorOut, Squeeze
from .nice import NICE, AdditiveCoupling, DiagonalScaling, alternating_mask
from .realnvp import MaskedAffineCoupling, MultiScaleRealNVP, RealNVP, channel_mask, checkerboard_mask
from .spline import BoxScale, NeuralSplineFlow, RQSplineAutoregressive, RQSplineCoupling

__all__ = [
    "FlowModel", "SequentialFlow", "ScoredOnce", "Remembered",
    "AdditiveCoupling", "DiagonalScaling", "NICE", "alternating_mask",
    "MaskedAffineCoupling", "RealNVP", "MultiScaleRealNVP", "checkerboard_mask", "channel_mask",
    "Squeeze", "FactorOut",
    "ActNorm", "InvertibleConv1x1", "ChannelAffineCoupling", "Glow",
    "MaskedAffineAutoregressive", "NormalizingBatchNorm", "MAF", "ConditionalIAF", "IAFVAE",
    "InvertibleResidual", "IResNet",
    "BoxScale", "RQSplineCoupling", "RQSplineAutoregressive", "NeuralSplineFlow",
    "LogitTransform", "UniformDequantization", "discrete_bits_per_dim",
]
