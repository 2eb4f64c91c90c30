"""Kept for ``from preempt.onnx import …``; the code lives in :mod:`preempt.models.onnx`."""
from .models.onnx import OnnxClassifier, export_onnx

__all__ = ["OnnxClassifier", "export_onnx"]
