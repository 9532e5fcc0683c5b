"""The Fidle course's augmentation, shared by the benchmarks that compare against it.

The course (GTSRB notebook "data augmentation") trains with Keras' ``ImageDataGenerator``; these
are its settings (the ``fidle`` preset of :data:`gtsrb_kit.augment.PRESET_PARAMS` renders them in-graph).
Keras 3 keeps the class under ``keras.src.legacy.preprocessing.image`` only.
"""

from __future__ import annotations

from typing import Any

COURSE_AUGMENTATION: dict[str, Any] = {
    "featurewise_center": False, "featurewise_std_normalization": False, "width_shift_range": 0.1,
    "height_shift_range": 0.1, "zoom_range": 0.2, "shear_range": 0.1, "rotation_range": 10.0,
}


def course_generator() -> Any:
    """An ``ImageDataGenerator`` with the course's settings."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(**COURSE_AUGMENTATION)
