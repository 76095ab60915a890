"""The model bundle: loading and checking it, the LiteRT interpreter and Edge TPU delegate, TFLite metadata, quantisation, pre- and post-processing (plain NumPy where it can be)."""
