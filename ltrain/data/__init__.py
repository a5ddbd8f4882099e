"""LightningDataModules for image classification (and pairs), all with the same split/subset/standardise knobs."""

from ltrain.data.base import ImageClassificationData, ImageTransform, TensorImageDataset
from ltrain.data.embedded import MnistEmbedded
from ltrain.data.folder import ImageFolderData
from ltrain.data.idx import FashionMnistIdx
from ltrain.data.torchvision_sets import TorchvisionData

__all__ = [
    "FashionMnistIdx",
    "ImageClassificationData",
    "ImageFolderData",
    "ImageTransform",
    "MnistEmbedded",
    "TensorImageDataset",
    "TorchvisionData",
]
