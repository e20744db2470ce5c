"""Hidden-state features of a base model: ONE store, one render-and-truncate path.

    text.py     render_input / tokenize / encode_inputs: the tokens a guard reads, in training and serving
    store.py    the feature store: mean / last of every layer and a last-tokens window of ladder
                layers, from one forward per text, keyed by base fingerprint + text hash
    pooled.py   extract_features: any taps and pooling, served from the store where it can be,
                cached beside it otherwise; throughput checks against the raw forward

`dsa.guards.featurize` (guard tasks) is a client of the store.
"""

from dsa.features.pooled import (
    POOLINGS,
    FeatureCache,
    Features,
    compare_throughput,
    extract_features,
    pool,
    raw_forward_throughput,
    store_layers,
)
from dsa.features.store import (
    LADDER_LAYERS,
    WINDOW,
    FeatureViews,
    default_root,
    extract_views,
    load_features,
    store_dir,
    store_index,
)
from dsa.features.text import (
    encode_inputs,
    length_buckets,
    pad_right,
    render_input,
    text_hash,
    tokenize,
)

__all__ = [
    "LADDER_LAYERS", "POOLINGS", "WINDOW", "FeatureCache", "FeatureViews", "Features", "compare_throughput",
    "default_root", "encode_inputs", "extract_features", "extract_views", "length_buckets", "load_features",
    "pad_right", "pool", "raw_forward_throughput", "render_input", "store_dir", "store_index", "store_layers",
    "text_hash", "tokenize",
]
