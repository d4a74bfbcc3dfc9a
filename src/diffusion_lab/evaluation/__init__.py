"""Sample-quality evaluation: digit-classifier metrics, PSNR/SSIM, and Inception FID/IS when available."""

from .digit_classifier import DigitClassifier
from .image_evaluation import evaluate_images, summary_line, write_result
from .metrics import class_accuracy
from .pixel_range import PIXEL_RANGES, to_signed_unit_range

__all__ = ["DigitClassifier", "PIXEL_RANGES", "class_accuracy", "evaluate_images", "summary_line", "to_signed_unit_range", "write_result"]
