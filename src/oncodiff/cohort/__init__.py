"""The cohort folder format: schema, validation, readers and writers."""

from oncodiff.cohort.cohort import Cohort, load_cohort
from oncodiff.cohort.image import Image, affine_from_spacing
from oncodiff.cohort.io import read_image, write_image
from oncodiff.cohort.schema import CohortSpec, ClinicalVariable
from oncodiff.cohort.validate import validate_cohort

__all__ = [
    "Cohort", "CohortSpec", "ClinicalVariable", "Image", "affine_from_spacing", "load_cohort", "read_image",
    "validate_cohort", "write_image",
]
