"""The built-in datasets, one small file each: what its files are (for `lth data download`), its shapes and sizes,
and its reader.

To add one, write `lth/datasets/NAME.py` that calls `register("NAME", DatasetSpec(...))` (`lth.datasets.base`);
every file of this folder is imported here, the config accepts exactly the registered names (and
`imagefolder`, `lth.data`), and `lth data download` offers those with files to fetch. A plugin module
(`plugins:`) registers its own datasets the same way.
"""

import importlib
import pkgutil

from lth.datasets.base import DATASETS, Arrays, DatasetSpec, Stream, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "Arrays", "DatasetSpec", "Stream", "register"]
