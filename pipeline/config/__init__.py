"""params.yaml -> frozen, validated config objects, by job: `schemas` (one pydantic model per section, `Params` for
the whole file), `errors` (pydantic's errors as one ConfigError in English), `overrides` (`apply_sets`, `replace`),
`load` (`load_params`, `parse_params`), `paths` (where each stage writes). The names below are the interface:
`from pipeline.config import load_params`."""
from pipeline.config.errors import ConfigError
from pipeline.config.load import load_params, parse_params
from pipeline.config.overrides import apply_sets, replace
from pipeline.config.paths import Paths
from pipeline.config.schemas import (BackboneConfig, ClusterConfig, ColorizationConfig, ContextConfig, CRFConfig,
                                     DataConfig, DeepClusterConfig, DistillConfig, EvaluateConfig, FeaturesConfig,
                                     FilterConfig, InpaintingConfig, JigsawConfig, MergeConfig, MotionConfig,
                                     MultitaskConfig, Params, PretrainConfig, PretrainMethod, ProposalsConfig,
                                     ReportConfig, SaliencyConfig, TemporalOrderConfig, TrackingConfig, TrainConfig, VideoConfig,
                                     check_backbone_name)

__all__ = ["ConfigError", "load_params", "parse_params", "apply_sets", "replace", "Paths", "BackboneConfig",
           "ClusterConfig", "ColorizationConfig", "ContextConfig", "CRFConfig", "DataConfig", "DeepClusterConfig",
           "DistillConfig", "EvaluateConfig", "FeaturesConfig", "FilterConfig", "InpaintingConfig", "JigsawConfig",
           "MergeConfig", "MotionConfig", "MultitaskConfig", "Params", "PretrainConfig", "PretrainMethod",
           "ProposalsConfig", "ReportConfig", "SaliencyConfig", "TemporalOrderConfig", "TrackingConfig", "TrainConfig", "VideoConfig",
           "check_backbone_name"]
