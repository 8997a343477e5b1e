"""Classic SR test sets: Set5, Set14, BSD100, Urban100, Manga109 (split 'test').

Configs 'x2', 'x3', 'x4'. manual_dir is the set's folder (or a folder containing it, e.g.
`benchmark/` with `Set5/`, `B100/`, ...), in one of these layouts, tried in this order:

  1. jaxsr:       x{s}/hr/NAME.png + x{s}/lr/NAME.png
  2. SelfExSR:    image_SRF_{s}/img_NNN_SRF_{s}_HR.png + ..._LR.png   (name 'img_NNN')
  3. EDSR:        HR/NAME.png + LR_bicubic/X{s}/NAMEx{s}.png
  4. BasicSR:     GTmod12/NAME.png + LRbicx{s}/NAME.png
  5. HR only:     x{s}/hr/, HR/, hr/, GTmod12/, original/ or the images directly in the folder:
                  HR is cropped to a multiple of s and LR = MATLAB imresize(HR, 1/s) (antialiased
                  bicubic, `jaxsr.imresize.imresize_uint8`, which reproduces the released LR
                  images bit for bit).

    Set5(config="x4", manual_dir="/data/Set5", data_dir=...)
"""
from __future__ import annotations

import pathlib

from jaxsr.data.builders.base import (Pair, PairedImageBuilder, SRConfig, find_child, hr_only,
                                      pairs_by_stem, pairs_in_dir)
from jaxsr.imageio import list_images

__all__ = ["Set5", "Set14", "BSD100", "Urban100", "Manga109", "TestSetBuilder"]

_INSTRUCTIONS = "\n\n".join(__doc__.split("\n\n")[1:3]).strip()


class TestSetBuilder(PairedImageBuilder, skip_registration=True):
    """Base of the classic test sets (see the module docstring)."""

    __test__ = False  # not a pytest test class
    ALIASES: tuple[str, ...] = ()
    BUILDER_CONFIGS = [SRConfig(name=f"x{s}", scale=s, description=f"scale {s}")
                       for s in (2, 3, 4)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _set_dir(self, root: pathlib.Path) -> pathlib.Path:
        child = find_child(root, *self.ALIASES)
        return child if child is not None else root

    def _find_pairs(self, root: pathlib.Path, dl_manager) -> dict[str, list[Pair]]:
        s = self.builder_config.scale
        d = self._set_dir(root)
        xs = find_child(d, f"x{s}")
        if xs is not None and find_child(xs, "hr") and find_child(xs, "lr"):
            return {"test": pairs_by_stem(find_child(xs, "lr"), find_child(xs, "hr"))}
        srf = find_child(d, f"image_SRF_{s}")
        if srf is not None:
            return {"test": pairs_in_dir(srf, srf, rf"(.+)_SRF_{s}_LR", rf"(.+)_SRF_{s}_HR")}
        hr = find_child(d, "HR")
        edsr_lr = find_child(find_child(d, "LR_bicubic") or d / "_", f"X{s}")
        if hr is not None and edsr_lr is not None:
            return {"test": pairs_in_dir(edsr_lr, hr, rf"(.+)x{s}", None)}
        gt = find_child(d, "GTmod12")
        basicsr_lr = find_child(d, f"LRbicx{s}")
        if gt is not None and basicsr_lr is not None:
            return {"test": pairs_by_stem(basicsr_lr, gt)}
        for folder in ([find_child(xs, "hr")] if xs is not None else []) + [
                find_child(d, "HR"), find_child(d, "GTmod12"), find_child(d, "original"), d]:
            if folder is not None and list_images(folder):
                return {"test": hr_only(folder)}
        raise FileNotFoundError(f"{type(self).__name__} x{s}: no images found in '{d}'.\n"
                                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")


class Set5(TestSetBuilder, skip_registration=True):
    """Set5 (Bevilacqua et al., BMVC 2012), 5 images."""
    name = "set5"
    ALIASES = ("Set5",)


class Set14(TestSetBuilder, skip_registration=True):
    """Set14 (Zeyde et al., 2010), 14 images (one grayscale, replicated to RGB)."""
    name = "set14"
    ALIASES = ("Set14",)


class BSD100(TestSetBuilder, skip_registration=True):
    """BSD100 (Martin et al., ICCV 2001; the 100 BSD300 test images), 100 images."""
    name = "bsd100"
    ALIASES = ("BSD100", "B100", "BSDS100")


class Urban100(TestSetBuilder, skip_registration=True):
    """Urban100 (Huang et al., CVPR 2015), 100 urban scenes."""
    name = "urban100"
    ALIASES = ("Urban100",)


class Manga109(TestSetBuilder, skip_registration=True):
    """Manga109 (Matsui et al., 2017), 109 manga covers."""
    name = "manga109"
    ALIASES = ("Manga109",)
