"""The network (U-Net), its configuration and model files (safetensors + JSON metadata)."""

from hrtem3d.model.io import (
    FORMAT,
    FORMAT_VERSION,
    default_model_path,
    load_default_model,
    load_model,
    read_metadata,
    save_model,
)
from hrtem3d.model.unet import (
    UNet,
    UNetConfig,
    count_flops,
    count_parameters,
    pick_device,
    plain_unet_reference,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "UNet",
    "UNetConfig",
    "count_flops",
    "count_parameters",
    "default_model_path",
    "load_default_model",
    "load_model",
    "pick_device",
    "plain_unet_reference",
    "read_metadata",
    "save_model",
]
