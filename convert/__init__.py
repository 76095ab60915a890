"""Keras model to TFLite / LiteRT conversion (int8, float16, dynamic), verification and metadata."""
