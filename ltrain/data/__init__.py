"""LightningDataModules for image classification (and pairs), all with the same split/subset/standardise knobs."""

from ltrain.data.base import ImageClassificationData, ImageTransform, TensorImageDataset
from ltrain.data.embedded import MnistEmbedded
from ltrain.data.files import BadImageError
from ltrain.data.folder import ImageFileDataset, ImageFolderData, ImageListData, StreamingImageData
from ltrain.data.idx import FashionMnistIdx
from ltrain.data.preprocess import ImagePreprocess
from ltrain.data.torchvision_sets import TorchvisionData
from ltrain.data.write import ensure_image_folder, write_image_folder

__all__ = [
    "BadImageError",
    "FashionMnistIdx",
    "ImageClassificationData",
    "ImageFileDataset",
    "ImageFolderData",
    "ImageListData",
    "ImagePreprocess",
    "ImageTransform",
    "MnistEmbedded",
    "StreamingImageData",
    "TensorImageDataset",
    "TorchvisionData",
    "ensure_image_folder",
    "write_image_folder",
]
