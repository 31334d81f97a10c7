"""A researcher's own network, in a file of their own: a plain `torch.nn.Module` with no lth attribute and no
packing convention, named in `own_cnn_mnist1d.yaml` by its import path. lth passes it the dataset's shapes
(`input_shape`, `num_classes`) because its signature asks for them."""

from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, input_shape, num_classes, width=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(input_shape[0], width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(8),
        )
        self.head = nn.Linear(width * 8, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
