"""Fashion-MNIST (Xiao et al. 2017): MNIST's shapes and sizes with clothing in place of digits, a harder drop-in
replacement. The same IDX files as MNIST's, under root/fashion_mnist; md5s as Zalando Research publishes them."""

from lth.datasets.base import DatasetSpec, idx_files, idx_reader, register

register("fashion_mnist", DatasetSpec(
    idx_reader("fashion_mnist", "fashion_mnist"), 10, (1, 28, 28), 60000, 5000,
    files=idx_files("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "fashion_mnist",
                    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe", "bef4ecab320f06d8554ea6380940ec79",
                     "bb300cfdad3c16e7a12a480ee83cd310")),
))
