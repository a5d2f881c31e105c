"""Network registry: every architecture a model bundle or config can name.

A network is built from its registered name and keyword arguments, never by
subclassing, so ``model.json`` and YAML configs describe a model completely::

    net = build_network("unet", {"channels": [8, 16, 32, 64], "strides": [2, 2, 2]})

All networks take ``in_channels`` and ``out_channels`` and map a
``(B, in_channels, X, Y, Z)`` tensor to logits of ``(B, out_channels, X, Y, Z)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .registry import Registry

NETWORKS: Registry[Callable[..., Any]] = Registry("network")


def _as_tuple(value: Any) -> Any:
    """Turn nested lists (as read from JSON/YAML) into tuples for MONAI."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


@NETWORKS.register("unet")
def build_unet(
    in_channels: int = 1,
    out_channels: int = 2,
    channels: tuple[int, ...] = (8, 16, 32, 64),
    strides: tuple[Any, ...] = (2, 2, 2),
    num_res_units: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
) -> Any:
    """MONAI residual UNet; the student family (small ``channels``) and a teacher (wide)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=_as_tuple(channels),
        strides=_as_tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


@NETWORKS.register("dynunet")
def build_dynunet(
    in_channels: int = 1,
    out_channels: int = 2,
    kernel_size: tuple[Any, ...] = ((3, 3, 1), 3, 3, 3, 3),
    strides: tuple[Any, ...] = (1, (2, 2, 1), 2, 2, 2),
    filters: tuple[int, ...] | None = (32, 64, 128, 256, 320),
    norm_name: str = "instance",
    deep_supervision: bool = False,
) -> Any:
    """MONAI DynUNet (nnU-Net-like), a teacher family for anisotropic prostate MRI."""
    from monai.networks.nets import DynUNet

    kernel_size = _as_tuple(kernel_size)
    strides = _as_tuple(strides)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=_as_tuple(filters),
        norm_name=norm_name,
        deep_supervision=deep_supervision,
    )


@NETWORKS.register("segresnet")
def build_segresnet(
    in_channels: int = 1,
    out_channels: int = 2,
    init_filters: int = 16,
    blocks_down: tuple[int, ...] = (1, 2, 2, 4),
    blocks_up: tuple[int, ...] = (1, 1, 1),
    dropout_prob: float | None = None,
) -> Any:
    """MONAI SegResNet, a teacher family."""
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        init_filters=init_filters,
        blocks_down=_as_tuple(blocks_down),
        blocks_up=_as_tuple(blocks_up),
        dropout_prob=dropout_prob,
    )


def build_network(name: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build the registered network ``name`` with ``kwargs``.

    Raises:
        KeyError: ``name`` is not registered (the message lists known names).
        TypeError: ``kwargs`` holds an argument the network does not take.
    """
    factory = NETWORKS.get(name)
    kwargs = dict(kwargs or {})
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"network {name!r}: {exc}") from None


def count_parameters(network: Any) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
