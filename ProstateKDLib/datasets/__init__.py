"""Training data: one index of labelled cases for every command that reads cases.

Layouts: a multi-site folder ``<root>/<SITE>/CaseNN.nii.gz`` with its label
``CaseNN_segmentation.nii.gz`` (:mod:`.multisite`); a CSV with columns
``image,label[,site]`` (:mod:`.csv_list`); a Medical Segmentation Decathlon folder
with ``dataset.json`` (:mod:`.msd`) or an nnU-Net v2 raw dataset (:mod:`.nnunet`); cases saved from Slicer into a
``dataset_index.csv`` (:mod:`.saved`). :func:`index_cases` picks the reader
(:mod:`.index`); :mod:`.records` says what a case, an image file and a label file
are; :mod:`.images` lists unlabelled image folders; :mod:`.volumes` reads, checks and preprocesses a case.
"""

from __future__ import annotations

from .csv_list import read_case_csv
from .images import index_images
from .index import index_cases, limit_cases, split_cases
from .msd import MSD_DESCRIPTOR, index_msd, msd_default_channel, msd_label_names, msd_modalities, read_msd_descriptor
from .multisite import index_multisite
from .nnunet import NNUNET_SITE, index_nnunet, is_nnunet_v2, nnunet_channel, nnunet_label_names
from .records import (
    IMAGE_SUFFIXES, LABEL_TAG, LABEL_VALUES, CaseRecord, find_label, image_suffix, is_label_name, label_name,
    read_csv_rows, resolve,
)
from .saved import SAVED_COLUMNS, SAVED_INDEX, index_multisite_root, read_saved_cases
from .volumes import check_case, check_geometry, gland_mask, load_case, read_case, read_image, read_label

__all__ = [
    "IMAGE_SUFFIXES", "LABEL_TAG", "LABEL_VALUES", "MSD_DESCRIPTOR", "NNUNET_SITE", "SAVED_COLUMNS", "SAVED_INDEX", "CaseRecord",
    "check_case", "check_geometry", "find_label", "gland_mask", "image_suffix", "index_cases", "index_images", "index_msd",
    "index_multisite", "index_multisite_root", "index_nnunet", "is_label_name", "is_nnunet_v2", "label_name", "limit_cases", "load_case",
    "msd_default_channel", "msd_label_names", "msd_modalities", "nnunet_channel", "nnunet_label_names", "read_case", "read_case_csv", "read_csv_rows",
    "read_image", "read_label", "read_msd_descriptor", "read_saved_cases", "resolve", "split_cases",
]
