"""MNIST (LeCun et al. 1998): 60,000 training and 10,000 test digits, 28×28 grey. LeNet-300-100 and LeNet-5's
dataset in Frankle & Carbin (2019). Read from the four IDX files of its distribution, under root/mnist."""

from lth.datasets.base import DatasetSpec, idx_files, idx_reader, register

register("mnist", DatasetSpec(
    idx_reader("mnist", "mnist"), 10, (1, 28, 28), 60000, 5000,
    files=idx_files("https://ossci-datasets.s3.amazonaws.com/mnist/", "mnist",
                    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432", "9fb629c4189551a2d022fa330f9573f3",
                     "ec29112dd5afa0611ce80d1b7f02629c")),
))
