"""Small real sample images shipped with jaxsr (see LICENSES.md here for sources and licenses).

- 'city100_nikon':  8 aligned LR/HR pairs, 256x256, `{lr,hr}/NNN.png` (City100 Nikon D5500, MIT)
- 'city100_iphone': 4 aligned LR/HR pairs, 256x256, `{lr,hr}/NNN.png` (City100 iPhone X, MIT)
- 'clean_hr':       8 clean images, 192x192, `NNN.png` (BSD100, academic use)

City100 pairs are same-size (scale 1): the LR is registered onto the HR grid.
Example: `PairedFolderSource(jaxsr.samples.path('city100_nikon'))`.
"""
from __future__ import annotations

import pathlib

_ROOT = pathlib.Path(__file__).resolve().parent
_NAMES = ("city100_nikon", "city100_iphone", "clean_hr")


def names() -> tuple[str, ...]:
    """Names of the shipped sample sets."""
    return _NAMES


def path(name: str) -> pathlib.Path:
    """Folder of the sample set `name` (one of `names()`)."""
    if name not in _NAMES:
        raise ValueError(f"unknown sample set {name!r}; valid names: {', '.join(_NAMES)}")
    folder = _ROOT / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"sample folder {folder} is missing from this installation; reinstall jaxsr or "
            "regenerate it with `python experiments/make_samples.py --data_dir <shared data>`")
    return folder
