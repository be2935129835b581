import dataclasses
import os
import typing

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from conftest import ROOT, raw_params, section
from pipeline import config
from pipeline.config import ConfigError, Paths, load_params, parse_params, replace


def test_project_params_load_into_typed_sections():
    p = load_params(ROOT / "params.yaml")
    assert p.cluster.k >= 1 and isinstance(p.filter.keep, float)
    assert p.paths.features == "data/03_features"


def test_unknown_key_is_an_error_naming_the_key_and_the_allowed_ones():
    raw = raw_params()
    raw["cluster"]["kk"] = 3
    with pytest.raises(ConfigError, match=r"cluster\.kk.*allowed keys: k, method"):
        parse_params(raw)


def test_unknown_section_is_an_error():
    raw = raw_params()
    raw["clustr"] = {}
    with pytest.raises(ConfigError, match="'clustr' is not a known section"):
        parse_params(raw)


def test_wrong_type_is_an_error_naming_the_key():
    raw = raw_params()
    raw["train"]["epochs"] = "eight"
    with pytest.raises(ConfigError, match=r"'train\.epochs' is 'eight' \(str\); must be an integer >= 1"):
        parse_params(raw)


def test_cluster_k_is_a_number_or_auto_with_a_range_that_fits_its_rule():
    raw = raw_params()
    raw["cluster"]["k"] = "eight"
    with pytest.raises(ConfigError, match=r"'cluster\.k' is 'eight'; allowed values: an integer >= 1 or auto"):
        parse_params(raw)
    raw["cluster"].update(k="auto", k_min=5, k_max=3)
    with pytest.raises(ConfigError, match=r"'cluster\.k_max' is 3.*must be >= cluster\.k_min = 5"):
        parse_params(raw)
    raw["cluster"].update(k_min=1, k_max=6, k_rule="silhouette")
    with pytest.raises(ConfigError, match=r"'cluster\.k_min' is 1.*must be >= 2 with cluster\.k_rule silhouette"):
        parse_params(raw)
    raw["cluster"]["k_rule"] = "eigengap"
    assert parse_params(raw).cluster.k_bound == 6
    raw["merge"].update(method="leopart", parts=6)
    with pytest.raises(ConfigError, match=r"'merge\.parts' is 6.*must be > cluster\.k_max \(cluster\.k auto\) = 6"):
        parse_params(raw)


def test_bool_is_not_accepted_as_int():
    raw = raw_params()
    raw["train"]["epochs"] = True
    with pytest.raises(ConfigError, match=r"'train\.epochs' is True \(bool\); must be an integer >= 1"):
        parse_params(raw)


def test_out_of_range_values_are_errors():
    for sec, key, value, pattern in [("filter", "keep", 1.5, r"filter\.keep.*\(0, 1\]"),
                                         ("cluster", "k", 0, r"cluster\.k"),
                                         ("proposals", "refine", "crf", r"allowed values: grabcut, guided, none")]:
        raw = raw_params()
        raw[sec][key] = value
        with pytest.raises(ConfigError, match=pattern):
            parse_params(raw)


@pytest.mark.parametrize("value,pattern", [(-1, r"'workers' is -1; must be >= 0"),
                                           (1.5, r"'workers' is 1\.5 \(float\); must be an integer >= 0"),
                                           ("all", r"'workers' is 'all' \(str\); must be an integer >= 0")])
def test_workers_is_a_top_level_count_of_processes(value, pattern):
    raw = raw_params()
    assert parse_params(raw).workers == raw["workers"] == 0  # the default: every core
    raw["workers"] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)


@pytest.mark.parametrize("value,pattern", [(0, r"'processes' is 0; allowed values: auto or an integer >= 1"),
                                           (True, r"'processes' is True; allowed values: auto or an integer >= 1"),
                                           ("two", r"'processes' is 'two'; allowed values: auto or an integer >= 1")])
def test_processes_is_a_top_level_count_of_torchrun_processes_or_auto(value, pattern):
    raw = raw_params()
    assert parse_params(raw).processes == raw["processes"] == "auto"  # the default: one per GPU, 1 without
    raw["processes"] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)
    raw["processes"] = 3
    assert parse_params(raw).processes == 3


def test_int_is_accepted_where_a_float_is_expected():
    raw = raw_params()
    raw["filter"]["keep"] = 1
    assert parse_params(raw).filter.keep == 1.0


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def models(model=config.Params, key=""):
    """(dotted key, model class) of Params and of every section nested in it."""
    yield key, model
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            yield from models(f.annotation, f"{key}.{name}".lstrip("."))


def test_no_model_holds_a_default_and_params_yaml_holds_exactly_their_keys():
    raw = raw_params()
    assert len(list(models())) == 25  # Params, 16 sections, 8 pretrain objectives
    for key, model in models():
        defaults = [name for name, f in model.model_fields.items() if not f.is_required()]
        assert not defaults, f"{model.__name__} has defaults for {defaults}: params.yaml is their one source"
        values = raw
        for part in filter(None, key.split(".")):
            values = values[part]
        assert list(values) == list(model.model_fields), key  # the same keys, in the same order
    p = load_params(ROOT / "params.yaml")
    assert p.model_dump() == raw and p.pretrain.method == raw["pretrain"]["method"]  # every value as written


@pytest.mark.parametrize("value,ok", [(1, True), (0.5, True), (True, False), ("0.5", False), (None, False)])
def test_a_float_field_takes_an_int_but_no_bool_string_or_null(value, ok):
    raw = raw_params()
    raw["filter"]["keep"] = value
    if ok:
        assert parse_params(raw).filter.keep == value and isinstance(parse_params(raw).filter.keep, float)
    else:
        with pytest.raises(ConfigError, match=rf"'filter\.keep' is {value!r} \(\w+\); must be a number in \(0, 1\]"):
            parse_params(raw)


@pytest.mark.parametrize("value", [True, 4.0, "4"])
def test_an_int_field_takes_no_bool_float_or_string(value):
    raw = raw_params()
    raw["cluster"]["k_max"] = value
    with pytest.raises(ConfigError, match=rf"'cluster\.k_max' is {value!r} \(\w+\); must be an integer >= 1"):
        parse_params(raw)
    raw = raw_params()
    raw["cluster"]["k"] = value  # a number or auto: no bool, float or numeric string either
    with pytest.raises(ConfigError, match=rf"'cluster\.k' is {value!r}; allowed values: an integer >= 1 or auto"):
        parse_params(raw)


@pytest.mark.parametrize("path,value,pattern", [
    # wrong type
    ("pretrain.jigsaw.tile", "32", r"'pretrain\.jigsaw\.tile' is '32' \(str\); must be an integer >= 8"),
    ("data.download", "yes", r"'data\.download' is 'yes' \(str\); must be true or false"),
    ("proposals.sources", "ncut", r"'proposals\.sources' is 'ncut' \(str\); must be a list"),
    # out of range: the bound, or the interval with both bounds
    ("pretrain.jigsaw.tile", 4, r"'pretrain\.jigsaw\.tile' is 4; must be >= 8"),
    ("pretrain.local_scale_max", 0.05, r"'pretrain\.local_scale_max' is 0\.05; must be in \(0\.05, 1\]"),
    ("data.synth_max_objects", 7, r"'data\.synth_max_objects' is 7; must be in \[1, 6\]"),
    ("pretrain.multitask.tasks.jigsaw", -1.0, r"'pretrain\.multitask\.tasks\.jigsaw' is -1\.0; must be >= 0"),
    ("report.journey_images", ["a", ""], r"'report\.journey_images\[1\]' is ''; must be a string of length >= 1"),
    # a bad choice
    ("pretrain.inpainting.mask", "square",
     r"'pretrain\.inpainting\.mask' is 'square'; allowed values: central, random_block, random_region"),
    ("pretrain.multitask.tasks", {"rotation": 1.0},
     r"'pretrain\.multitask\.tasks' is 'rotation'; allowed values: deepcluster, context, jigsaw, colorization"),
    ("pretrain.temporal_order.span", 2, r"'pretrain\.temporal_order\.span' is 2; must be 0 or >= 4"),
    # checks spanning fields
    ("pretrain.jigsaw.grid_crop", 95, r"'pretrain\.jigsaw\.grid_crop' is 95; must be >= 3 \* tile = 96"),
    ("motion.dis_patch_stride", 6, r"'motion\.dis_patch_stride' is 6; must be < dis_patch_size = 6"),
    ("backbone.weights", "", r"'backbone\.weights' is ''; must name a file when backbone\.source is file"),
    ("pretrain.multitask.tasks", {"jigsaw": 0.0},
     r"'pretrain\.multitask\.tasks' is \{'jigsaw': 0\.0\}; needs one weight > 0"),
])
def test_a_bad_value_names_the_dotted_key_the_value_and_what_is_allowed(path, value, pattern):
    raw = raw_params()
    *parents, key = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[key] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)


def test_unknown_and_missing_keys_name_the_dotted_key_and_the_allowed_keys():
    raw = raw_params()
    raw["pretrain"]["jigsaw"]["tiles"] = 3
    del raw["pretrain"]["tracking"]["margin"]
    del raw["motion"]
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    lines = str(e.value).splitlines()  # one ConfigError, a line per problem
    assert "params: 'pretrain.jigsaw.tiles' is not a known key; allowed keys: permutations, tile, grid_crop, " \
           "hidden_dim, gray_prob" in lines
    assert "params: 'pretrain.tracking.margin' is missing; must be a number in (0, 2]" in lines
    assert "params: 'motion' is missing; must be a mapping" in lines and len(lines) == 3


def test_voc2012_and_coco_fix_the_split_and_the_class_count():
    with pytest.raises(ConfigError, match=r"'data\.split' is 'test'; allowed values for voc2012: train, val, trainval, "
                                          "trainaug"):
        section("data", name="voc2012", root="x", num_classes=21, split="test")
    with pytest.raises(ConfigError, match=r"'data\.num_classes' is 21; must be 81 for coco \(80 classes \+ "
                                          r"background\)"):
        section("data", name="coco", root="x", num_classes=21)
    assert section("data", name="coco", root="x", num_classes=81, split="train").split == "train"


def test_replace_and_direct_construction_validate_like_loading():
    cfg = section("pretrain")
    assert replace(cfg, jigsaw=replace(cfg.jigsaw, tile=16, grid_crop=48)).jigsaw.tile == 16 and cfg.jigsaw.tile == 32
    with pytest.raises(ConfigError, match=r"'pretrain\.jigsaw\.grid_crop' is 120; must be >= 3 \* tile = 144"):
        replace(cfg.jigsaw, tile=48)
    with pytest.raises(ConfigError, match=r"'cluster\.kk' is not a known key; allowed keys: k, method, n_init"):
        replace(section("cluster"), kk=2)
    with pytest.raises(ConfigError, match=r"'cluster\.method' is 'dbscan'; allowed values: kmeans, spectral"):
        config.ClusterConfig(k=2, method="dbscan", n_init=1, gallery_per_cluster=1)
    with pytest.raises(ConfigError, match=r"'cluster\.gallery_per_cluster' is missing; must be an integer >= 1"):
        config.ClusterConfig(k=2, method="kmeans", n_init=1)
    with pytest.raises(ConfigError, match=r"'data\.image_size' is 100; must be a multiple of the backbone's patch "
                                          "size 8"):
        replace(load_params(ROOT / "params.yaml"), data=section("data", image_size=100))
    with pytest.raises(ValidationError, match="frozen"):
        cfg.epochs = 3


def test_apply_sets_changes_dotted_keys_with_yaml_values_and_leaves_the_input_alone():
    raw = raw_params()
    out = config.apply_sets(raw, ["train.epochs=40", "seed=3", "train.decoder=fused", "backbone.overrides={}",
                                  "pretrain.multitask.tasks={context: 1.0}"])
    p = parse_params(out)
    assert (p.train.epochs, p.seed, p.train.decoder, p.backbone.overrides) == (40, 3, "fused", {})
    assert out["pretrain"]["multitask"]["tasks"] == {"context": 1.0}
    assert raw == raw_params()  # unchanged
    for bad, pattern in (("train.epoch=4", r"'train\.epoch' in 'train\.epoch=4' is no params key"),
                         ("trian.epochs=4", r"'trian' in 'trian\.epochs=4' is no params section"),
                         ("train.epochs", r"no assignment; write section\.key=value")):
        with pytest.raises(ConfigError, match=pattern):
            config.apply_sets(raw, [bad])


def test_paths_are_the_folders_of_the_stages_outs_in_dvc_yaml():
    """Each Paths field is its stage's folder: every out, metric and plot dvc.yaml gives the stage lies in it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = {name: [o if isinstance(o, str) else next(iter(o)) for k in ("outs", "metrics", "plots")
                   for o in st.get(k, [])] for name, st in stages.items()}
    assert {name: os.path.commonpath(o) for name, o in outs.items()} == dataclasses.asdict(Paths())
    assert load_params(ROOT / "params.yaml").paths == Paths()


def test_the_pretrain_methods_are_listed_once():
    """pretrain.method's choices are the one list: the multitask weights take the pretext tasks among them, and
    pretext.METHODS is all but DINO, in the same order."""
    from pipeline.backbone import pretext

    methods = typing.get_args(config.PretrainMethod)
    assert methods == ("dino", "deepcluster", "context", "jigsaw", "colorization", "inpainting", "multitask",
                       "temporal_order", "tracking")
    assert pretext.METHODS == methods[1:]
    tasks = typing.get_args(config.MultitaskConfig.model_fields["tasks"].annotation)[0]
    assert typing.get_args(tasks) == tuple(m for m in methods if m not in ("dino", "multitask"))
