"""The built-in distortion tasks, registered in the registry of tasks.py when this module is
imported (the package `__init__` does that once; tasks.py never imports this module).

Stage of each family (see tasks.py): blur, colour, weather and spatially variant blur act on
the HR image before the scale step; noise and JPEG act on the LR image after it; the
Real-ESRGAN-style chain does blur before and noise + JPEG after. Noise sigmas are on the 0-255
scale. Angles in radians (pi/2 = vertical, see blur.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxsr.degradations import blur as _blur
from jaxsr.degradations import color as _color
from jaxsr.degradations import noise as _noise
from jaxsr.degradations import spatial as _spatial
from jaxsr.degradations import weather as _weather
from jaxsr.degradations.params import Bernoulli, Uniform
from jaxsr.degradations.tasks import DistortionTask, register_tasks

PI = math.pi


def _jpeg(key, img, quality):
    """libjpeg-exact JPEG round trip from jpeg.py (imported lazily, on first trace)."""
    from jaxsr.degradations.jpeg import jpeg
    return jpeg(img, quality)


# ---- HR-stage distortions: (key, img, params) -> img ----------------------------------------

def _gaussian_blur(key, img, p):
    return _blur.blur(img, _blur.gaussian_kernel(p["sigma"]))


def _aniso_blur(key, img, p):
    return _blur.blur(img, _blur.anisotropic_gaussian_kernel(p["sigma_x"], p["sigma_y"],
                                                             p["theta"]))


def _motion_blur(key, img, p):
    return _blur.blur(img, _blur.motion_kernel(p["length"], p["angle"]))


def _defocus_blur(key, img, p):
    return _blur.blur(img, _blur.disk_kernel(p["radius"]))


def _color_shift(key, img, p):
    gains = jnp.stack([p["gain_r"], p["gain_g"], p["gain_b"]])
    return _color.color_shift(img, gains, p["gamma"], p["saturation"], p["exposure"])


def _rain(key, img, p):
    return _weather.rain(key, img, p["density"], p["length"], p["angle"], p["brightness"])


def _haze(key, img, p):
    depth = _weather.random_depth(key, img.shape[:2])
    return _weather.haze(img, p["beta"], p["airlight"], depth)


def _spatial_blur_mix(key, img, p):
    kernels = jnp.stack([
        _blur.gaussian_kernel(0.0),                      # the sharp image (delta kernel)
        _blur.gaussian_kernel(p["sigma"]),
        _blur.motion_kernel(p["length"], p["angle"]),
        _blur.disk_kernel(p["radius"]),
    ])
    versions = _blur.blur_stack(img, kernels)
    masks = _spatial.blend_masks(key, img.shape[:2], versions.shape[0],
                                 sharpness=p["sharpness"])
    return _spatial.spatial_blend(versions, masks)


def _chain_blur(key, img, p):
    # Isotropic with probability p['isotropic'] (sigma_y := sigma_x), else anisotropic.
    sigma_y = jnp.where(p["isotropic"] > 0.5, p["sigma_x"], p["sigma_y"])
    return _blur.blur(img, _blur.anisotropic_gaussian_kernel(p["sigma_x"], sigma_y, p["theta"]))


# ---- LR-stage distortions -------------------------------------------------------------------

def _gaussian_noise(key, img, p):
    return _noise.gaussian_noise(key, img, p["sigma"], p["gray"])


def _poisson_noise(key, img, p):
    return _noise.poisson_noise(key, img, p["peak"], p["strength"], p["gray"])


def _jpeg_task(key, img, p):
    return _jpeg(key, img, p["quality"])


def _chain_noise_jpeg(key, img, p):
    k_gauss, k_poisson, k_jpeg = jax.random.split(key, 3)
    gauss = _noise.gaussian_noise(k_gauss, img, p["noise_sigma"], p["gray"])
    shot = _noise.poisson_noise(k_poisson, img, 255.0, p["poisson_strength"], p["gray"])
    noisy = jnp.where(p["use_gaussian"] > 0.5, gauss, shot)
    return _jpeg(k_jpeg, noisy, p["quality"])


BUILTIN_TASKS = (
    DistortionTask("bicubic", "downsampling", {},
                   description="MATLAB bicubic downsampling only"),
    DistortionTask("gaussian_blur", "blur", {"sigma": Uniform(0.2, 3.0)}, before=_gaussian_blur,
                   description="isotropic Gaussian blur (21x21), then down"),
    DistortionTask("aniso_gaussian_blur", "blur",
                   {"sigma_x": Uniform(0.2, 4.0), "sigma_y": Uniform(0.2, 4.0),
                    "theta": Uniform(0.0, PI)}, before=_aniso_blur,
                   description="anisotropic Gaussian blur, rotated, then down"),
    DistortionTask("motion_blur", "blur",
                   {"length": Uniform(3.0, 15.0), "angle": Uniform(0.0, PI)}, before=_motion_blur,
                   description="linear motion blur (length in px), then down"),
    DistortionTask("defocus_blur", "blur", {"radius": Uniform(1.0, 4.0)}, before=_defocus_blur,
                   description="defocus disk blur (radius in px), then down"),
    DistortionTask("gaussian_noise", "noise",
                   {"sigma": Uniform(1.0, 25.0), "gray": Bernoulli(0.4)}, after=_gaussian_noise,
                   description="down, then Gaussian noise sigma/255 (gray with p 0.4)"),
    DistortionTask("poisson_noise", "noise",
                   {"strength": Uniform(0.05, 3.0), "peak": Uniform(255.0, 255.0),
                    "gray": Bernoulli(0.4)}, after=_poisson_noise,
                   description="down, then shot noise (Real-ESRGAN scale 0.05-3, peak 255)"),
    DistortionTask("jpeg", "compression", {"quality": Uniform(30.0, 95.0)}, after=_jpeg_task,
                   description="down, then JPEG (quality rounded to an int)"),
    DistortionTask("color_shift", "color",
                   {"gain_r": Uniform(0.8, 1.2), "gain_g": Uniform(0.8, 1.2),
                    "gain_b": Uniform(0.8, 1.2), "gamma": Uniform(0.8, 1.25),
                    "saturation": Uniform(0.7, 1.3), "exposure": Uniform(0.8, 1.2)},
                   before=_color_shift,
                   description="white balance, exposure, gamma, saturation, then down"),
    DistortionTask("realesrgan_first_order", "mixed",
                   {"sigma_x": Uniform(0.2, 3.0), "sigma_y": Uniform(0.2, 3.0),
                    "theta": Uniform(0.0, PI), "isotropic": Bernoulli(0.5),
                    "use_gaussian": Bernoulli(0.5), "noise_sigma": Uniform(1.0, 30.0),
                    "poisson_strength": Uniform(0.05, 3.0), "gray": Bernoulli(0.4),
                    "quality": Uniform(30.0, 95.0)},
                   before=_chain_blur, after=_chain_noise_jpeg,
                   description="blur -> down -> Gaussian or Poisson noise -> JPEG"),
    DistortionTask("spatial_blur_mix", "mixed",
                   {"sigma": Uniform(0.2, 3.0), "length": Uniform(3.0, 15.0),
                    "angle": Uniform(0.0, PI), "radius": Uniform(1.0, 4.0),
                    "sharpness": Uniform(2.0, 4.0)}, before=_spatial_blur_mix,
                   description="sharp/Gaussian/motion/defocus blended by smooth masks, then down"),
    DistortionTask("rain", "weather",
                   {"density": Uniform(0.002, 0.01), "length": Uniform(5.0, 15.0),
                    "angle": Uniform(PI / 2 - 0.4, PI / 2 + 0.4),
                    "brightness": Uniform(0.3, 0.8)}, before=_rain,
                   description="additive rain streaks, then down"),
    DistortionTask("haze", "weather",
                   {"beta": Uniform(0.3, 2.0), "airlight": Uniform(0.7, 1.0)}, before=_haze,
                   description="atmospheric scattering with a synthetic depth map, then down"),
)

DEFAULT_AUXILIARY = tuple(t.name for t in BUILTIN_TASKS)


def default_auxiliary_tasks() -> list[str]:
    """Names of the built-in auxiliary distortions DRTL trains on by default (catalog order)."""
    return list(DEFAULT_AUXILIARY)


# Imported once, by the package __init__. All or none (register_tasks checks every task first),
# and overwrite=True so that if an import fails anywhere (here or in a later line) and is
# retried, this module re-runs and raises that same error again, not "already registered".
# Nothing can register before this runs, so overwrite=True replaces no user task.
register_tasks(BUILTIN_TASKS, overwrite=True)
