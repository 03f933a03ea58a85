"""Inference: inputs, backends (PyTorch, onnxruntime), the Predictor, results, outputs."""
