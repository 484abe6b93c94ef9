"""Where samples come from: one module per kind of source, each registering its readers.

``scaletrain.data`` imports every module here, so that importing it fills ``SOURCES`` and
``DATASETS``. Sources import only ``raw`` and each other: nothing here is fit on data.
"""
