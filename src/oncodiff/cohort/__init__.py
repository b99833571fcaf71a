"""The cohort folder format: schema, validation, readers and writers."""

from oncodiff.cohort.cohort import Cohort, cohort_fingerprint, load_cohort, same_cohort
from oncodiff.cohort.image import Image, affine_from_spacing
from oncodiff.cohort.io import (
    ImageNotFoundError, ImageReadError, affine_from_sitk, read_image, sitk_image, write_image, write_like,
)
from oncodiff.cohort.schema import ClinicalVariable, CohortSpec
from oncodiff.cohort.validate import validate_cohort

__all__ = [
    "ClinicalVariable", "Cohort", "CohortSpec", "Image", "ImageNotFoundError", "ImageReadError",
    "affine_from_sitk", "affine_from_spacing", "cohort_fingerprint", "load_cohort", "same_cohort", "read_image", "sitk_image", "validate_cohort",
    "write_image", "write_like",
]
