"""Stage 2: images from structures: multislice exit waves (abTEM), optics, detector, noise."""

from hrtem3d.simulate.multislice import MultisliceConfig, exit_wave
from hrtem3d.simulate.optics import (
                                     Detector,
                                     Optics,
                                     OpticsEnvelope,
                                     detect,
                                     image_intensity,
                                     transfer_function,
                                     wavelength_A,
)

__all__ = ["Detector", "MultisliceConfig", "Optics", "OpticsEnvelope", "detect", "exit_wave",
           "image_intensity", "transfer_function", "wavelength_A"]
