"""Every artifact read and written, by job: `files` (atomic writing; bytes, JSON, CSV, .npz), `images` (image and
label decoding and encoding, the palette), `shards` (per-image arrays in ragged shards), `layouts` (the stages'
file layouts: the prepared dataset, label map folders), `maps` (label maps with their overlays), `names` (class
names: names.yaml over the defaults). The names below are the interface: `from pipeline import io;
io.read_image(path)`."""
from pipeline.io.files import (InputError, atomic_open, read_json, read_npz, write_bytes, write_csv, write_json,
                               write_npz)
from pipeline.io.images import (IGNORE, IMAGE_EXTS, LABEL_MODES, image_shape, palette, pil_to_rgb, read_image,
                                read_label, write_gray, write_image, write_label)
from pipeline.io.layouts import (DENSE_PROBS, LazyImages, LazyLabels, cluster_k, dense_probs, eval_names,
                                 list_images, original_sizes, read_image_list, read_images, read_label_list,
                                 read_labels, read_manifest)
from pipeline.io.maps import colorize, overlay, write_maps
from pipeline.io.names import NAMES, class_names, default_names, read_names
from pipeline.io.shards import (SHAPES, ShardArrays, ShardWriter, iter_shards, pack_ragged, read_shards, unpack_ragged,
                                write_index, write_shard)

__all__ = ["InputError", "atomic_open", "read_json", "read_npz", "write_bytes", "write_csv", "write_json", "write_npz",
           "IGNORE", "IMAGE_EXTS", "LABEL_MODES", "image_shape", "palette", "pil_to_rgb", "read_image", "read_label", "write_image",
           "write_gray", "write_label", "DENSE_PROBS", "LazyImages", "LazyLabels", "cluster_k", "dense_probs", "eval_names",
           "list_images", "original_sizes", "read_image_list", "read_images", "read_label_list", "read_labels", "read_manifest",
           "colorize", "overlay", "write_maps", "NAMES", "class_names", "default_names", "read_names", "SHAPES",
           "ShardArrays", "ShardWriter", "iter_shards", "pack_ragged", "read_shards", "write_index",
           "write_shard", "unpack_ragged"]
