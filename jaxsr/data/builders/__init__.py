"""tensorflow-datasets builders for SR / restoration data (no TensorFlow needed).

Every builder writes array_record files with records
{'lr': (h, w, 3) uint8, 'hr': (h*s, w*s, 3) uint8, 'name': bytes} (zlib-compressed tensors,
file-name order) and is read with `builder.as_data_source(split)`:

    from jaxsr.data import builders
    b = builders.City100(config="nikon", manual_dir="/data/City100", data_dir="/data/tfds")
    b.download_and_prepare()
    test = b.as_data_source("test")

Builders: PairedFolder (your own lr/ + hr/ folders), City100, RealSR, DRealSR, DIV2K, Set5,
Set14, BSD100, Urban100, Manga109, Rain100L, Rain100H. See each module for layouts and configs.
"""
from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig
from jaxsr.data.builders.benchmarks import BSD100, Manga109, Set5, Set14, Urban100
from jaxsr.data.builders.city100 import City100
from jaxsr.data.builders.div2k import DIV2K
from jaxsr.data.builders.drealsr import DRealSR
from jaxsr.data.builders.paired_folder import PairedFolder, PairedFolderConfig
from jaxsr.data.builders.rain100 import Rain100H, Rain100L
from jaxsr.data.builders.realsr import RealSR

__all__ = [
    "Pair", "PairedImageBuilder", "SRConfig", "PairedFolder", "PairedFolderConfig", "City100",
    "RealSR", "DRealSR", "DIV2K", "Set5", "Set14", "BSD100", "Urban100", "Manga109",
    "Rain100L", "Rain100H", "BUILDERS",
]

#: name -> builder class, for configs and command lines.
BUILDERS = {cls.name: cls for cls in (PairedFolder, City100, RealSR, DRealSR, DIV2K, Set5, Set14,
                                      BSD100, Urban100, Manga109, Rain100L, Rain100H)}
