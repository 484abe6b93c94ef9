"""What is fit on the train split and applied to every split: labels, split, encoders, scaling.

Transforms import ``raw``, the sources (an encoder reads predict files as its source did) and
each other; never the pipeline, the loaders or the shards above them.
"""
